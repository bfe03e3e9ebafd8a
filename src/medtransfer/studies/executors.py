"""How a study's trials run: executors (``study.executor``), the one way results reach the ledger
(:func:`record_result`), the policy for a trial whose worker died (:func:`worker_died`) and the study's progress bar.

An executor is an object registered in :data:`EXECUTORS` under its ``name``: its own settings (a frozen dataclass,
``study.executors.<name>`` in the config, built and range-checked when the config loads), a ``check`` run before
anything is planned or written (a package installed, resources that can be requested), the settings that belong in
the study's identity (``fingerprint_keys``: none for an executor that only decides *where* a trial runs, so that a
study resumes with any executor) and ``run``, which takes the pending trials and records every result in the ledger.

The built-in ones live in their own modules, imported on the registry's first lookup: ``local``
(:mod:`medtransfer.studies.local`: in the driver or a process pool) and ``ray``
(:mod:`medtransfer.studies.ray_executor`). A new one is one module that registers an instance::

    @dataclass(frozen=True)
    class SlurmSettings:
        partition: str = "gpu"

    class Slurm(Executor):
        name, Settings = "slurm", SlurmSettings

        def run(self, ledger, todo, ctx, workers, bar): ...

    EXECUTORS.register(Slurm.name, Slurm())

and is chosen with ``study: {executor: slurm, executors: {slurm: {partition: a100}}}`` once that module is imported.
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, ClassVar

from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

from medtransfer.config import RESOLVERS, from_dict, to_dict
from medtransfer.errors import ConfigError, UnknownNameError
from medtransfer.registry import Registry

if TYPE_CHECKING:
    from medtransfer.studies.config import StudySection
    from medtransfer.studies.grid import Trial
    from medtransfer.studies.ledger import Ledger
    from medtransfer.studies.trial import StudyContext, TrialResult

log = logging.getLogger(__name__)

MAX_ATTEMPTS = 2  # a trial whose worker process died is tried once more


@dataclass(frozen=True)
class NoSettings:
    """The settings of an executor that has none (``study.executors.<name>: {}``)."""


class Executor:
    """How a study's trials run. Subclasses set ``name`` and ``Settings`` and implement :meth:`run`.

    Example:
        >>> EXECUTORS.get("local").settings(StudySection())   # doctest: +SKIP
        NoSettings()
    """

    name: ClassVar[str] = ""
    Settings: ClassVar[type] = NoSettings  # a frozen dataclass; its __post_init__ checks the ranges
    fingerprint_keys: ClassVar[tuple[str, ...]] = ()  # settings that change a trial's results (normally none)

    def build_settings(self, raw: Any) -> Any:
        """``raw`` (a mapping from the config, or settings built in code) as checked :attr:`Settings`."""
        if dataclasses.is_dataclass(raw) and not isinstance(raw, type):
            raw = to_dict(raw)
        if raw is not None and not isinstance(raw, Mapping):
            raise ConfigError(f"study.executors.{self.name}: expected a mapping of settings, got {raw!r}")
        return from_dict(self.Settings, dict(raw or {}), prefix=f"study.executors.{self.name}")

    def settings(self, study: StudySection) -> Any:
        """This executor's settings in ``study`` (its defaults where the config gives none)."""
        given = study.executors.get(self.name)
        return given if isinstance(given, self.Settings) else self.build_settings(given)

    def identity(self, study: StudySection) -> dict[str, Any]:
        """The settings named in :attr:`fingerprint_keys`, for the study's identity (empty for the built-ins)."""
        settings = to_dict(self.settings(study))
        return {key: settings[key] for key in self.fingerprint_keys}

    def check(self, study: StudySection) -> None:
        """Fail with a :class:`~medtransfer.errors.UserError` before anything is planned or written (nothing here)."""

    def run(self, ledger: Ledger, todo: list[Trial], ctx: StudyContext, workers: int, bar: StudyProgress) -> None:
        """Run the ``todo`` trials, recording each result with :func:`record_result` as it arrives."""
        raise NotImplementedError

    def __repr__(self) -> str:
        return f"<executor {self.name!r}>"


#: The executors by name (``study.executor``); the built-in modules are imported on the first lookup.
EXECUTORS: Registry[Executor] = Registry(
    "executor", builtins=("medtransfer.studies.local", "medtransfer.studies.ray_executor")
)


def study_executors(study: StudySection) -> dict[str, Any]:
    """``study.executors`` built: every entry checked as its executor's settings, the chosen executor's defaults
    filled in. Called when a study section is built, so an unknown executor or setting fails at load.

    Example:
        >>> study_executors(StudySection(executor="ray", executors={"ray": {"cpus_per_trial": 2}}))  # doctest: +SKIP
        {'ray': RaySettings(address=None, cpus_per_trial=2.0, gpus_per_trial=0.0)}
    """
    chosen = _lookup(study.executor, "study.executor", "--executor NAME")
    built = {}
    for name, raw in (study.executors or {}).items():
        built[name] = _lookup(name, f"study.executors.{name}", "an executor's name as the key").build_settings(raw)
    if chosen.name not in built:
        built[chosen.name] = chosen.build_settings(None)
    return built


RESOLVERS.register("executors", study_executors)  # the config loader builds study.executors with it


def _lookup(name: Any, key: str, fix: str) -> Executor:
    try:
        return EXECUTORS.get(str(name))
    except UnknownNameError as e:
        raise ConfigError(f"{key}: {e}; fix it in the config (or with {fix})") from None


def execute(ledger: Ledger, trials: dict[str, Trial], ctx: StudyContext, workers: int, progress: bool) -> None:
    """Run every pending trial with the study's executor, recording each result in the ledger as it arrives."""
    todo = [trials[i] for i in ledger.pending() if i in trials]
    if not todo:
        return
    executor = EXECUTORS.get(ctx.cfg.study.executor)
    with StudyProgress(ledger, progress) as bar:
        executor.run(ledger, todo, ctx, workers, bar)


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
