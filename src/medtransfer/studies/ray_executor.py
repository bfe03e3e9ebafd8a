"""The ``ray`` executor: a study's trials as Ray tasks, on a local Ray instance or on an existing cluster.

The driver keeps the role it has with the local executor: it alone writes the ledger (``start`` before a task is
submitted, ``finish``/``fail`` as results arrive through ``ray.wait``), and every trial runs through the same
:func:`medtransfer.studies.trial.run_trial`, so a study can be resumed with either executor.

Settings (``study.executors.ray``, :class:`RaySettings`): ``address`` of an existing cluster (``--address``; null = a
private local instance), and what each trial reserves, ``cpus_per_trial`` (also its torch threads) and
``gpus_per_trial``. None of them is part of the study's identity: they decide where a trial runs, not what it does.

In flight: as many trials as the cluster holds at once, ⌊CPUs / cpus_per_trial⌋ (and ⌊GPUs / gpus_per_trial⌋)
summed over the alive nodes, recounted as results arrive so that nodes joining or leaving count. Submitting more
would only queue them inside Ray while the ledger called them running (and charged them an attempt).

Failures: Ray reports a dead worker per task (crash, ``os._exit``, the OOM killer, a lost node), so the local
policy applies without the local pool's detour of running suspects alone: the trial whose worker died is tried
once more, then failed ("worker process died"); no other trial is charged. A trial that fails inside
``run_trial`` (NaN loss, bad data) is recorded as failed, as it is locally. Each task is named after its trial
(``ray list tasks``, and the worker's process title ``ray::<trial id>``).

Example:
    A study whose trials take two CPUs and half a GPU each, so two trials share every GPU of the cluster::

        study: {executor: ray, executors: {ray: {address: auto, cpus_per_trial: 2, gpus_per_trial: 0.5}}}

        $ medtransfer study study.yaml --out /shared/runs/s --executor ray --address ray://head:10001
"""

from __future__ import annotations

import contextlib
import logging
import math
import os
from collections.abc import Iterator
from dataclasses import dataclass
from types import ModuleType
from typing import TYPE_CHECKING, Any

from medtransfer.config import bad_value
from medtransfer.errors import UserError
from medtransfer.optional import optional_import
from medtransfer.studies.executors import EXECUTORS, Executor, record_result, worker_died

if TYPE_CHECKING:
    from medtransfer.studies.config import StudySection
    from medtransfer.studies.executors import StudyProgress
    from medtransfer.studies.grid import Trial
    from medtransfer.studies.ledger import Ledger
    from medtransfer.studies.trial import StudyContext, TrialResult

log = logging.getLogger(__name__)

KEY = "study.executors.ray"
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


@dataclass(frozen=True)
class RaySettings:
    """``study.executors.ray``: where the cluster is and what a trial reserves on it (checked when built).

    Example:
        >>> RaySettings(cpus_per_trial=2, gpus_per_trial=0.5).gpus_per_trial   # two trials share each GPU
        0.5
    """

    address: str | None = None  # an existing cluster ("auto", "ray://head:10001", "10.0.0.5:6379"); None = local
    cpus_per_trial: float = 1.0  # CPUs a trial reserves (also its torch threads)
    gpus_per_trial: float = 0.0  # GPUs a trial reserves; a fraction (0.5) lets trials share a GPU

    def __post_init__(self) -> None:
        if isinstance(self.address, str) and not self.address.strip():
            raise bad_value(f"{KEY}.address", self.address, "a cluster's address (auto, ray://HOST:10001) or null")
        if not (isinstance(self.cpus_per_trial, int | float) and self.cpus_per_trial > 0):
            raise bad_value(f"{KEY}.cpus_per_trial", self.cpus_per_trial, "a positive number of CPUs (e.g. 1)")
        gpus = self.gpus_per_trial
        if not isinstance(gpus, int | float) or gpus < 0 or (gpus > 1 and not float(gpus).is_integer()):
            rule = "0 (CPU only), a fraction or a whole number (above 1 a trial takes whole GPUs: 1, 2, ...)"
            raise bad_value(f"{KEY}.gpus_per_trial", gpus, rule)


def import_ray() -> ModuleType:
    """The ``ray`` module, or a one-line :class:`UserError` saying how to install it (the ``ray`` extra)."""
    return optional_import("ray", extra="ray", purpose="--executor ray")


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
    import torch  # deferred: heavy, and only a worker process needs it

    from medtransfer.studies.trial import run_trial  # deferred: torch; `--help` lists the executors

    torch.set_num_threads(threads)  # Ray reuses workers; a trial gets the CPUs it reserved, whatever ran before
    logging.basicConfig(level=level)
    logging.getLogger().setLevel(level)
    return run_trial(ctx, trial)


def run_ray(ledger: Ledger, todo: list[Trial], ctx: StudyContext, bar: StudyProgress, settings: RaySettings) -> None:
    """Run the ``todo`` trials as Ray tasks, recording each result in the ledger as it arrives.

    Example:
        >>> run_ray(ledger, [trials[i] for i in ledger.pending()], ctx, bar, RaySettings())   # doctest: +SKIP
    """
    cpus, gpus = settings.cpus_per_trial, settings.gpus_per_trial
    with ray_session(settings.address) as (ray, started):
        room = capacity(ray.nodes(), cpus, gpus)
        need = f"{KEY}.cpus_per_trial={cpus:g}, gpus_per_trial={gpus:g}"
        if room == 0 and started:
            raise UserError(
                f"{need}: the local Ray instance has {ray.cluster_resources()} and cannot run one trial; "
                "lower them, or give --address of a cluster that has the resources"
            )
        if room == 0:
            log.warning("%s: no node of the Ray cluster can run a trial yet; waiting for one (an autoscaler?)", need)
        log.info("ray: up to %d trial(s) at once (%s)", max(room, 1), need)
        task = ray.remote(num_cpus=cpus, num_gpus=gpus, max_retries=0)(_run_on_worker)
        ctx_ref = ray.put(ctx)  # shipped to the object store once, not with every task
        where = f"ray {settings.address or 'local'}"
        threads = max(1, int(cpus))
        level = logging.getLogger().getEffectiveLevel()
        queue, running = list(todo), {}
        try:
            while queue or running:
                while queue and len(running) < max(room, 1):
                    trial = queue.pop(0)
                    ledger.start(trial.id, where)
                    running[task.options(name=trial.id).remote(ctx_ref, trial, threads, level)] = trial
                    bar.running(trial)
                done, _ = ray.wait(list(running), num_returns=1, timeout=WAIT_S)
                for ref in done:
                    _collect(ray, ledger, ref, running.pop(ref), queue)
                    bar.update()
                room = _recount(ray, room, cpus, gpus, need)
        finally:
            # The driver stops early (Ctrl-C, an error): its tasks must not go on writing trial folders; the ledger
            # keeps them running, and --resume takes them up again from their last checkpoint.
            for ref in running:
                with contextlib.suppress(Exception):
                    ray.cancel(ref, force=True)


def _recount(ray: ModuleType, before: int, cpus: float, gpus: float, need: str) -> int:
    """The capacity again (nodes join and leave), saying when it changed: a lost node shows in the log, and a
    cluster left with no node that can run a trial does not look like a hung study."""
    room = capacity(ray.nodes(), cpus, gpus)
    if room != before:
        if room == 0:
            log.warning("ray: no alive node can run a trial now (%s); waiting for one to join", need)
        else:
            log.info("ray: the cluster's nodes changed; up to %d trial(s) at once now (was %d)", room, before)
    return room


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


class RayExecutor(Executor):
    """As Ray tasks; the cluster's resources, not ``workers``, bound the trials in flight."""

    name = "ray"
    Settings = RaySettings

    def check(self, study: StudySection) -> None:
        """Ray installed (the settings were checked when the config loaded)."""
        import_ray()

    def run(self, ledger: Ledger, todo: list[Trial], ctx: StudyContext, workers: int, bar: StudyProgress) -> None:
        if workers > 1:
            log.info(
                "--workers %d is for the local executor; on Ray, %s.cpus_per_trial/gpus_per_trial decide", workers, KEY
            )
        run_ray(ledger, todo, ctx, bar, self.settings(ctx.cfg.study))


EXECUTORS.register(RayExecutor.name, RayExecutor())
