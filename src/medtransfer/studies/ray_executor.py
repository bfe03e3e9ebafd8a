"""Run a study's trials as Ray tasks, on a local Ray instance or on an existing cluster (``study.ray_address``).

The driver keeps the role it has with the local executor: it alone writes the ledger (``start`` before a task is
submitted, ``finish``/``fail`` as results arrive through ``ray.wait``), and every trial runs through the same
:func:`medtransfer.studies.trial.run_trial`, so a study can be resumed with either executor.

In flight: as many trials as the cluster holds at once, ⌊CPUs / trial_cpus⌋ (and ⌊GPUs / trial_gpus⌋) summed over
the alive nodes, recounted as results arrive so that nodes joining or leaving count. Submitting more would only
queue them inside Ray while the ledger called them running (and charged them an attempt).

Failures: Ray reports a dead worker per task (crash, ``os._exit``, the OOM killer, a lost node), so the local
policy applies without the local pool's detour of running suspects alone: the trial whose worker died is tried
once more, then failed ("worker process died"); no other trial is charged. A trial that fails inside
``run_trial`` (NaN loss, bad data) is recorded as failed, as it is locally.

Example:
    A study whose trials take two CPUs and half a GPU each, so two trials share every GPU of the cluster::

        study: {executor: ray, ray_address: auto, trial_cpus: 2, trial_gpus: 0.5}

        $ medtransfer study study.yaml --out /shared/runs/s --executor ray --address ray://head:10001
"""

from __future__ import annotations

import contextlib
import logging
import math
import os
from collections.abc import Iterator
from types import ModuleType
from typing import TYPE_CHECKING, Any

from medtransfer.errors import UserError
from medtransfer.studies.config import StudySection
from medtransfer.studies.executors import EXECUTORS, record_result, worker_died
from medtransfer.studies.grid import Trial
from medtransfer.studies.ledger import Ledger
from medtransfer.studies.trial import StudyContext, TrialResult, run_trial

if TYPE_CHECKING:
    from medtransfer.studies.executors import StudyProgress

log = logging.getLogger(__name__)

INSTALL_HINT = "pip install -e '.[ray]' (or make setup EXTRAS=dev,radiomics,ray)"
WAIT_S = 30.0  # ray.wait wakes at least this often, so that capacity added by new nodes gets used
# Errors that mean the process running the task is gone, not that the trial failed (names, for older Rays).
_DEATHS = (
    "WorkerCrashedError",  # the worker process exited or was killed (os._exit, SIGKILL, segfault, sys.exit)
    "OutOfMemoryError",  # Ray's memory monitor killed the worker
    "NodeDiedError",
    "LocalRayletDiedError",
    "ObjectLostError",  # the result was lost with its node (also OwnerDiedError)
    "TaskCancelledError",  # cancelled from outside (``ray job stop``)
)


def import_ray() -> ModuleType:
    """The ``ray`` module, or a one-line :class:`UserError` saying how to install it.

    Example:
        >>> ray = import_ray()   # doctest: +SKIP
    """
    try:
        import ray
    except ImportError:
        raise UserError(f"--executor ray needs Ray, which is not installed: {INSTALL_HINT}") from None
    return ray


def check(study: StudySection) -> None:
    """Fail before any planning when Ray is missing or the per-trial resources cannot be requested.

    Example:
        >>> check(StudySection(executor="ray", trial_gpus=1.5))   # doctest: +SKIP
        UserError: study.trial_gpus=1.5: above 1 a trial takes whole GPUs (1, 2, ...)
    """
    import_ray()
    if not study.trial_cpus > 0:
        raise UserError(f"study.trial_cpus={study.trial_cpus}: a trial needs a positive number of CPUs (e.g. 1)")
    if study.trial_gpus < 0:
        raise UserError(f"study.trial_gpus={study.trial_gpus} must be 0 (CPU only), a fraction or a whole number")
    if study.trial_gpus > 1 and not float(study.trial_gpus).is_integer():
        raise UserError(f"study.trial_gpus={study.trial_gpus}: above 1 a trial takes whole GPUs (1, 2, ...)")


@contextlib.contextmanager
def ray_session(address: str | None) -> Iterator[tuple[ModuleType, bool]]:
    """``(ray, started_here)``: connect to ``address``, else start a local instance; shut down what was started.

    An instance the caller already started (a notebook, a test) is used as it is and left running.

    Example:
        >>> with ray_session(None) as (ray, started):   # doctest: +SKIP
        ...     ray.cluster_resources()["CPU"]
        8.0
    """
    ray = import_ray()
    if ray.is_initialized():
        yield ray, False
        return
    with contextlib.ExitStack() as stack:
        if address:
            try:
                ray.init(address=address)
            except ConnectionError as e:
                raise UserError(
                    f"cannot reach the Ray cluster at {address!r} ({str(e).splitlines()[0]}); start it with "
                    "`ray start --head`, check the address, or leave out --address for a local instance"
                ) from None
        else:
            # A private instance: no auth token in ~/.ray, no usage report, no dashboard; logs stay in /tmp/ray.
            stack.enter_context(_env_defaults(RAY_AUTH_MODE="disabled", RAY_USAGE_STATS_ENABLED="0"))
            ray.init(num_cpus=os.cpu_count(), include_dashboard=False)
        stack.callback(ray.shutdown)
        yield ray, not address


@contextlib.contextmanager
def _env_defaults(**values: str) -> Iterator[None]:
    """Set environment variables the user has not set, for the duration of the block only."""
    added = [k for k in values if k not in os.environ]
    os.environ.update({k: values[k] for k in added})
    try:
        yield
    finally:
        for k in added:
            os.environ.pop(k, None)


def capacity(nodes: list[dict[str, Any]], trial_cpus: float, trial_gpus: float) -> int:
    """How many trials the alive ``nodes`` (``ray.nodes()``) run at once; a trial cannot span nodes.

    Example:
        >>> capacity([{"Alive": True, "Resources": {"CPU": 8.0, "GPU": 1.0}}], 2, 0.5)
        2
    """
    total = 0
    for node in nodes:
        if not node.get("Alive", True):
            continue
        have = node.get("Resources", {})
        # Rounded first: Ray counts resources in 1e-4 units, and 1.0 // 0.1 is 9.0 in floats.
        fits = [math.floor(round(have.get("CPU", 0.0) / trial_cpus, 6))]
        if trial_gpus > 0:
            fits.append(math.floor(round(have.get("GPU", 0.0) / trial_gpus, 6)))
        total += min(fits)
    return total


def worker_death(ray: ModuleType, err: BaseException) -> str | None:
    """The name of the failure if ``err`` means the worker running the task is gone, else None.

    Example:
        >>> worker_death(ray, ray.exceptions.WorkerCrashedError())   # doctest: +SKIP
        'WorkerCrashedError'
    """
    exc = ray.exceptions
    deaths = tuple(getattr(exc, name) for name in _DEATHS if hasattr(exc, name))
    cause = getattr(err, "cause", None) if isinstance(err, exc.RayTaskError) else None
    if isinstance(err, deaths):
        return type(cause).__name__ if cause is not None else type(err).__name__
    if isinstance(cause, (SystemExit, KeyboardInterrupt)):  # older Rays wrap an exiting task this way
        return type(cause).__name__
    return None


def _describe(ray: ModuleType, err: BaseException) -> str:
    """One line for the ledger: a task error's own exception, not Ray's multi-line traceback."""
    cause = getattr(err, "cause", None) if isinstance(err, ray.exceptions.RayTaskError) else None
    shown = cause if cause is not None else err
    text = str(shown).strip().splitlines()
    return f"{type(shown).__name__}: {text[0]}" if text else type(shown).__name__


def _run_on_worker(ctx: StudyContext, trial: Trial, threads: int, level: int) -> TrialResult:
    """The Ray task: one trial, exactly as the local executor runs it."""
    import torch

    torch.set_num_threads(threads)  # Ray reuses workers; a trial gets the CPUs it reserved, whatever ran before
    logging.basicConfig(level=level)
    logging.getLogger().setLevel(level)
    return run_trial(ctx, trial)


def run_ray(ledger: Ledger, todo: list[Trial], ctx: StudyContext, bar: StudyProgress) -> None:
    """Run the ``todo`` trials as Ray tasks, recording each result in the ledger as it arrives.

    Example:
        >>> run_ray(ledger, [trials[i] for i in ledger.pending()], ctx, bar)   # doctest: +SKIP
    """
    study = ctx.cfg.study
    with ray_session(study.ray_address) as (ray, started):
        room = capacity(ray.nodes(), study.trial_cpus, study.trial_gpus)
        need = f"study.trial_cpus={study.trial_cpus:g}, trial_gpus={study.trial_gpus:g}"
        if room == 0 and started:
            raise UserError(
                f"{need}: the local Ray instance has {ray.cluster_resources()} and cannot run one trial; "
                "lower them, or give --address of a cluster that has the resources"
            )
        if room == 0:
            log.warning("%s: no node of the Ray cluster can run a trial yet; waiting for one (an autoscaler?)", need)
        log.info("ray: up to %d trial(s) at once (%s)", max(room, 1), need)
        task = ray.remote(num_cpus=study.trial_cpus, num_gpus=study.trial_gpus, max_retries=0)(_run_on_worker)
        ctx_ref = ray.put(ctx)  # shipped to the object store once, not with every task
        where = f"ray {study.ray_address or 'local'}"
        threads = max(1, int(study.trial_cpus))
        level = logging.getLogger().getEffectiveLevel()
        queue, running = list(todo), {}
        try:
            while queue or running:
                while queue and len(running) < max(room, 1):
                    trial = queue.pop(0)
                    ledger.start(trial.id, where)
                    running[task.remote(ctx_ref, trial, threads, level)] = trial
                    bar.running(trial)
                done, _ = ray.wait(list(running), num_returns=1, timeout=WAIT_S)
                for ref in done:
                    _collect(ray, ledger, ref, running.pop(ref), queue)
                    bar.update()
                room = capacity(ray.nodes(), study.trial_cpus, study.trial_gpus)
        finally:
            # The driver stops early (Ctrl-C, an error): its tasks must not go on writing trial folders; the ledger
            # keeps them running, and --resume takes them up again from their last checkpoint.
            for ref in running:
                with contextlib.suppress(Exception):
                    ray.cancel(ref, force=True)


def _collect(ray: ModuleType, ledger: Ledger, ref: Any, trial: Trial, queue: list[Trial]) -> None:
    try:
        result = ray.get(ref)
    except ray.exceptions.RayError as e:
        died = worker_death(ray, e)
        if died is not None:
            worker_died(ledger, trial, queue, f"worker process died: {died}")
        else:
            # The task never reached run_trial (medtransfer missing on a node, an argument that cannot be unpickled).
            log.warning("trial %s could not run on Ray: %s", trial.id, _describe(ray, e))
            ledger.fail(trial.id, f"ray: {_describe(ray, e)}")
        return
    record_result(ledger, result)


@EXECUTORS.register("ray")
def _run_ray(ledger: Ledger, todo: list[Trial], ctx: StudyContext, workers: int, bar: StudyProgress) -> None:
    """As Ray tasks; the cluster's resources, not ``workers``, bound the trials in flight."""
    if workers > 1:
        log.info("--workers %d is for the local executor; on Ray, study.trial_cpus/trial_gpus decide", workers)
    run_ray(ledger, todo, ctx, bar)
