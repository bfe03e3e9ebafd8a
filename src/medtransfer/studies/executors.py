"""How a study's trials run: the executor registry (``study.executor``), the one way results reach the ledger
(:func:`record_result`), the policy for a trial whose worker died (:func:`worker_died`) and the study's progress bar.

Executors live in their own modules and register themselves: ``local`` (:mod:`medtransfer.studies.local`: in the
driver or a process pool) and ``ray`` (:mod:`medtransfer.studies.ray_executor`). A new one is one module.
"""

from __future__ import annotations

import importlib
import logging
from collections.abc import Callable

from medtransfer.registry import Registry
from medtransfer.studies.grid import Trial
from medtransfer.studies.ledger import Ledger
from medtransfer.studies.trial import StudyContext, TrialResult

log = logging.getLogger(__name__)

MAX_ATTEMPTS = 2  # a trial whose worker process died is tried once more

#: How trials run (``study.executor``): each takes the pending trials and records every result in the ledger.
Executor = Callable[[Ledger, list[Trial], StudyContext, int, "StudyProgress"], None]
EXECUTORS: Registry[Executor] = Registry("executor")

BUILTIN_MODULES = ("local", "ray_executor")


def builtin_executors() -> Registry[Executor]:
    """The registry with the built-in executors imported (by explicit module name; idempotent)."""
    for module in BUILTIN_MODULES:
        importlib.import_module(f"medtransfer.studies.{module}")
    return EXECUTORS


def execute(ledger: Ledger, trials: dict[str, Trial], ctx: StudyContext, workers: int, progress: bool) -> None:
    """Run every pending trial with the study's executor, recording each result in the ledger as it arrives."""
    todo = [trials[i] for i in ledger.pending() if i in trials]
    if not todo:
        return
    run = builtin_executors().get(ctx.cfg.study.executor)
    with StudyProgress(ledger, progress) as bar:
        run(ledger, todo, ctx, workers, bar)


def record_result(ledger: Ledger, r: TrialResult) -> None:
    """A trial's result (done or failed) into the ledger: the one way every executor records one."""
    if r.ok:
        ledger.finish(r.trial_id, r.metrics, r.seconds, r.peak_rss_mb, r.peak_gpu_mb)
    else:
        log.warning("trial %s failed: %s", r.trial_id, r.error)
        ledger.fail(r.trial_id, r.error or "unknown error", r.seconds)


def worker_died(ledger: Ledger, trial: Trial, queue: list[Trial], cause: str = "worker process died") -> None:
    """The policy of every executor for a trial whose worker died: once more (first in ``queue``), then failed.

    Only a death attributable to ``trial`` may be charged here; it used up an attempt when it started.

    Example:
        >>> worker_died(ledger, trial, queue)   # doctest: +SKIP   (attempts 1 → pending again, first in queue)
    """
    attempts = ledger.get(trial.id)["attempts"]
    if attempts < MAX_ATTEMPTS:
        log.warning("the worker running %s died (%s); trying it again", trial.id, cause)
        ledger.requeue(trial.id, cause)
        queue.insert(0, trial)
    else:
        ledger.fail(trial.id, f"{cause} ({attempts} attempts)")


class StudyProgress:
    """One bar for the whole study: trials done and failed, the trial running, and an ETA."""

    def __init__(self, ledger: Ledger, enabled: bool) -> None:
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

        self.ledger = ledger
        self.enabled = enabled
        self.progress = Progress(
            TextColumn("study"),
            BarColumn(),
            MofNCompleteColumn(),
            TextColumn("{task.fields[info]}"),
            TimeRemainingColumn(),
            disable=not enabled,
            transient=False,
        )

    def __enter__(self) -> StudyProgress:
        c = self.ledger.counts()
        total = sum(c.values())
        self.progress.__enter__()
        self.task = self.progress.add_task("study", total=total, completed=c["done"] + c["failed"], info="")
        self.update()
        return self

    def __exit__(self, *exc: object) -> None:
        self.progress.__exit__(*exc)

    def running(self, trial: Trial) -> None:
        self.current = trial.id
        self.update()

    def update(self) -> None:
        c = self.ledger.counts()
        info = f"done {c['done']} failed {c['failed']} running {c['running']}"
        if c["running"] and getattr(self, "current", None):
            info += f" · {self.current}"
        self.progress.update(self.task, completed=c["done"] + c["failed"], info=info)
