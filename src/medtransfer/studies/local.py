"""The ``local`` executor: trials in the driver (``workers=1``) or in a pool of spawned worker processes.

It has no settings of its own (``study.executors.local: {}``): ``study.workers`` / ``--workers`` size the pool.
"""

from __future__ import annotations

import concurrent.futures as cf
import ctypes
import logging
import multiprocessing
import os
import signal
from typing import TYPE_CHECKING

from medtransfer.studies.executors import EXECUTORS, Executor, StudyProgress, record_result, worker_died

if TYPE_CHECKING:
    from medtransfer.studies.grid import Trial
    from medtransfer.studies.ledger import Ledger
    from medtransfer.studies.trial import StudyContext

log = logging.getLogger(__name__)


class LocalExecutor(Executor):
    """In the driver (``workers=1``) or in a pool of ``workers`` spawned processes."""

    name = "local"

    def run(self, ledger: Ledger, todo: list[Trial], ctx: StudyContext, workers: int, bar: StudyProgress) -> None:
        from medtransfer.studies.trial import run_trial  # deferred: torch; `--help` lists the executors

        if workers > 1:
            _run_pool(ledger, todo, ctx, workers, bar)
            return
        for trial in todo:
            ledger.start(trial.id, f"pid {os.getpid()}")
            bar.running(trial)
            record_result(ledger, run_trial(ctx, trial))
            bar.update()


EXECUTORS.register(LocalExecutor.name, LocalExecutor())


def _run_pool(ledger: Ledger, todo: list[Trial], ctx: StudyContext, workers: int, bar: StudyProgress) -> None:
    """K trials at once in spawned worker processes.

    A worker that dies (killed, segfault, the OOM killer) breaks the whole pool and the executor cannot say
    which one died. The trials that were in flight go back to the queue without being charged an attempt and
    are then run *alone* ("suspects"), so that a second death is attributable: only then does the trial that
    died use up an attempt (``MAX_ATTEMPTS``), and innocent trials that shared the pool are never failed.
    """
    from medtransfer.studies.trial import run_trial  # deferred: torch; `--help` lists the executors

    threads = max(1, (os.cpu_count() or 1) // workers)
    queue = list(todo)
    suspects: set[str] = set()
    while queue:
        pool = cf.ProcessPoolExecutor(
            max_workers=workers,
            mp_context=multiprocessing.get_context("spawn"),  # fork after torch/OpenMP init can deadlock
            initializer=_init_worker,
            initargs=(threads, logging.getLogger().level),
        )
        running: dict[cf.Future, Trial] = {}
        lost: list[Trial] = []
        try:
            while (queue or running) and not lost:
                while queue and len(running) < workers:
                    alone = queue[0].id in suspects or any(t.id in suspects for t in running.values())
                    if alone and running:
                        break  # a suspect runs with nothing beside it
                    trial = queue.pop(0)
                    ledger.start(trial.id, f"worker of pid {os.getpid()}")
                    try:
                        running[pool.submit(run_trial, ctx, trial)] = trial
                    except cf.process.BrokenProcessPool:
                        lost.append(trial)  # the pool broke (a worker died) between two submissions
                        break
                    bar.running(trial)
                if lost:
                    break
                done, _ = cf.wait(running, return_when=cf.FIRST_COMPLETED)
                for fut in done:
                    trial = running.pop(fut)
                    try:
                        record_result(ledger, fut.result())
                        suspects.discard(trial.id)
                    except cf.process.BrokenProcessPool:
                        lost.append(trial)
                    bar.update()
            lost += running.values()  # everything still in flight went down with the pool
            running.clear()
        finally:
            pool.shutdown(wait=not lost, cancel_futures=True)
        _requeue_lost(ledger, lost, queue, suspects)
        bar.update()


def _requeue_lost(ledger: Ledger, lost: list[Trial], queue: list[Trial], suspects: set[str]) -> None:
    """After the pool broke: a trial that died alone used up an attempt (:func:`worker_died`); trials that shared
    the pool go back to the front of the queue, refunded, to run alone as suspects."""
    if len(lost) == 1:
        worker_died(ledger, lost[0], queue)
        suspects.add(lost[0].id)
        return
    for trial in reversed(lost):
        log.warning("a worker died while %d trials ran; %s will run alone to find the cause", len(lost), trial.id)
        ledger.requeue(trial.id, "worker pool broke; run again alone", refund=True)
        suspects.add(trial.id)
        queue.insert(0, trial)


def _init_worker(threads: int, level: int) -> None:
    import torch  # deferred: heavy, and only a worker process needs it

    torch.set_num_threads(threads)
    logging.basicConfig(level=level)
    _die_with_parent()


def _die_with_parent() -> None:
    """Linux: a worker gets SIGKILL when the driver dies, so a killed study leaves no orphan still writing."""
    try:
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        pass
