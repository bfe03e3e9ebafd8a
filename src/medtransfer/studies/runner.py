"""``medtransfer study``: plan the grid, fix the splits, rank the sources, run every trial, write the report.

The driver alone writes the ledger. Trials run in the driver (``workers=1``), in K worker processes, or as Ray
tasks (``study.executor: ray``, :mod:`medtransfer.studies.ray_executor`); a worker that dies takes its trial back
to pending once, then the trial is marked failed; the study goes on.
``--resume`` requeues what a killed driver left running and runs only what is not done: finished trials are
never run again, interrupted ones continue from their last epoch checkpoint.
"""

from __future__ import annotations

import concurrent.futures as cf
import contextlib
import fcntl
import hashlib
import json
import logging
import multiprocessing
import os
import time
from collections.abc import Callable, Iterator
from pathlib import Path

from medtransfer.config import to_dict, write_run_info
from medtransfer.errors import ConfigError, UserError
from medtransfer.io import atomic_write_text, check_output_folder, entries, remove_new_entries
from medtransfer.registry import Registry
from medtransfer.studies.config import StudyConfig
from medtransfer.studies.grid import Trial, expand, reference_arm, source_label
from medtransfer.studies.ledger import LEDGER_FILE, STUDY_MARKER, Ledger
from medtransfer.studies.trial import SPLITS_DIR, StudyContext, TrialResult, run_trial

log = logging.getLogger(__name__)

RANKING_FILE = "ranking.json"
MAX_ATTEMPTS = 2  # a trial whose worker process died is tried once more


def run_study(
    cfg: StudyConfig,
    out_dir: str | Path,
    resume: bool = False,
    workers: int | None = None,
    progress: bool = True,
    retry_failed: bool = False,
    report: bool = True,
) -> dict[str, int]:
    """Run (or resume) the study ``cfg`` in ``out_dir``; returns the ledger's counts by status.

    Example:
        >>> cfg = load_config("examples/demo_study.yaml", cls=StudyConfig)   # doctest: +SKIP
        >>> run_study(cfg, "runs/demo")                                     # doctest: +SKIP
        {'pending': 0, 'running': 0, 'done': 36, 'failed': 0}
    """
    out = Path(out_dir)
    workers = cfg.study.workers if workers is None else workers
    if workers < 1:
        raise UserError(f"--workers must be at least 1, got {workers}")
    EXECUTORS.get(cfg.study.executor)  # an unknown name fails here, with close matches
    if cfg.study.executor == "ray":
        from medtransfer.studies.ray_executor import check

        check(cfg.study)  # Ray installed, resources valid: before the folder and the splits are made
    check_output_folder(out, resume, (out / STUDY_MARKER).is_file() or (out / LEDGER_FILE).exists(), "study")
    before = entries(out)
    out.mkdir(parents=True, exist_ok=True)
    with _lock(out):
        ledger = None
        try:
            ledger = Ledger(out / LEDGER_FILE, create=not resume)
            _check_same_study(ledger, cfg)
            trials, ctx = plan(cfg, out, progress)
            if not (out / "run_info.json").exists():
                write_run_info(out, cfg, seed=cfg.seed)
                atomic_write_text(out / STUDY_MARKER, json.dumps({"kind": "study"}))
            else:
                resumes = json.loads(ledger.get_meta("resumes") or "[]")
                ledger.set_meta("resumes", json.dumps([*resumes, time.strftime("%Y-%m-%d %H:%M:%S")]))
            ledger.add(trials)
        except BaseException:
            if ledger is not None:
                ledger.close()
            if not resume:  # a study that could not start leaves nothing behind
                remove_new_entries(out, before)
            raise
        with ledger:
            if resume:
                stale_temporaries(out)
                back = ledger.recover()
                if back:
                    log.info("resuming %d interrupted trial(s): %s", len(back), ", ".join(back[:3]))
                if retry_failed:
                    log.info("retrying %d failed trial(s)", ledger.retry_failed())
            if cfg.study.rank and cfg.study.sources and not volumetric(cfg) and not (out / RANKING_FILE).exists():
                rank_for_report(ctx, out, progress)
            execute(ledger, {t.id: t for t in trials}, ctx, workers, progress)
            counts = ledger.counts()
    if report:
        from medtransfer.studies.report import report_study

        report_study(out)
    return counts


# --------------------------------------------------------------------------- planning
def volumetric(cfg) -> bool:
    """The study's task kind works on 3-D cases (segmentation), as its ``task:`` says."""
    from medtransfer.tasks.base import task_kind

    return bool(cfg.task) and task_kind(cfg.task).volumetric


def plan(cfg: StudyConfig, out: Path, progress: bool) -> tuple[list[Trial], StudyContext]:
    """Fix the splits (kept from the first run on resume), check sources and test set, expand the grid."""
    from medtransfer.data.cache import cached_images
    from medtransfer.data.splits import load_split, reseed_subsets
    from medtransfer.pretrain.catalogue import lookup
    from medtransfer.training.run import load_data, resolve_split

    if volumetric(cfg):
        return _plan_segmentation(cfg, out)
    ds = load_data(cfg)
    splits = out / SPLITS_DIR
    base_file = splits / "base.csv"
    if base_file.is_file():
        base = load_split(base_file, ds)
    else:
        base = resolve_split(cfg, ds)
        base.save(base_file)
    for seed in cfg.study.seeds:
        f = splits / f"seed{seed}.csv"
        if not f.is_file():
            reseed_subsets(base, ds, seed).save(f)
    counts = base.counts()
    if counts["test"] == 0 and not (cfg.study.test and cfg.study.test.path):
        log.warning("the split has no test images: trials are scored on validation (set data.split_fractions)")
    trials = expand(cfg.study, counts["train"])
    reference_arm(cfg.study, trials)  # a misspelt study.reference fails now, not in the report hours later
    sources = {s: lookup(s, cfg.study.sources_dir) for s in cfg.study.sources}
    _preflight_sources(cfg, sources, ds.channels, len(ds.label_names))
    if cfg.study.test and cfg.study.test.path:
        _preflight_test(cfg, ds)
    ctx = StudyContext(cfg, str(out), sources)
    _preflight_strategies(ctx, trials)
    cached_images(
        ds, cfg.data.image_size, cfg.data.cache_dir, progress=progress, resize=cfg.data.resize
    )  # decoded once, before workers
    log.info(
        "study: %d trials (%d arms × %d sizes × %d seeds), splits %s",
        len(trials),
        len({t.arm for t in trials}),
        len({t.n_label for t in trials}),
        len(cfg.study.seeds),
        counts,
    )
    return trials, ctx


def _preflight_strategies(ctx: StudyContext, trials: list[Trial]) -> None:
    """Build each strategy once with its trials' config (``study.strategy_settings`` applied), so that a bad
    setting fails now and not in every trial."""
    from medtransfer.transfer.strategies import build_strategy

    seen: set[str] = set()
    for trial in trials:
        if trial.kind != "net" or trial.strategy in seen:
            continue
        seen.add(trial.strategy)
        try:
            train_cfg = ctx.train_config(trial)
            build_strategy(train_cfg.transfer, train_cfg.train)
        except ConfigError as e:
            raise ConfigError(f"study strategy '{trial.strategy}': {e}") from None


def _plan_segmentation(cfg: StudyConfig, out: Path) -> tuple[list[Trial], StudyContext]:
    """The same plan for ``task: segmentation``: cases instead of images, source run folders, no baselines."""
    from types import SimpleNamespace

    from medtransfer.pretrain.catalogue import lookup
    from medtransfer.segmentation.networks import build_seg_network
    from medtransfer.segmentation.train import case_split, load_seg_data, load_seg_source, reseed_cases

    if cfg.study.baselines:
        raise UserError(
            f"study.baselines {cfg.study.baselines} are classification baselines; remove them for task: segmentation"
        )
    if cfg.study.test is not None and cfg.study.test.path:
        raise UserError("study.test is not supported for segmentation yet; evaluate runs with `medtransfer evaluate`")
    ds = load_seg_data(cfg)
    splits = out / SPLITS_DIR
    base_file = splits / "base.csv"
    if base_file.is_file():
        import pandas as pd

        from medtransfer.data.splits import load_split

        base = load_split(base_file, SimpleNamespace(meta=pd.DataFrame({"image_id": [c.id for c in ds.cases]})))
    else:
        base = case_split(ds, cfg)
        base.save(base_file)
    for seed in cfg.study.seeds:
        f = splits / f"seed{seed}.csv"
        if not f.is_file():
            reseed_cases(base, seed).save(f)
    counts = base.counts()
    trials = expand(cfg.study, counts["train"])
    reference_arm(cfg.study, trials)
    sources = {s: lookup(s, cfg.study.sources_dir) for s in cfg.study.sources}
    extra = {"features": tuple(cfg.seg.features)} if cfg.seg.features else {}
    for name, source in sources.items():
        try:
            load_seg_source(
                build_seg_network(cfg.model.backbone, ds.in_channels, ds.n_classes, **extra),
                source,
                list(ds.class_names),
            )
        except UserError as e:
            raise UserError(f"study source '{name}': {e}") from None
    log.info("segmentation study: %d trials, cases %s", len(trials), counts)
    return trials, StudyContext(cfg, str(out), sources)


def _preflight_sources(cfg: StudyConfig, sources: dict[str, str], channels: int, outputs: int) -> None:
    """Build each source's model once, so that a source that cannot load fails the study before any training."""
    import dataclasses

    from medtransfer.models.weights import create_model

    for name, source in sources.items():
        model_cfg = dataclasses.replace(cfg.model, source=source, in_chans=channels)
        try:
            create_model(model_cfg, num_outputs=outputs)
        except UserError as e:
            raise UserError(f"study source '{name}': {e}") from None


def _preflight_test(cfg: StudyConfig, ds) -> None:
    from medtransfer.data.sources.base import SourceOptions, load_dataset

    t = cfg.study.test
    labels = tuple(cfg.data.labels) if cfg.data.labels else None
    ext = load_dataset(
        t.path, t.format, SourceOptions(labels=labels, task=cfg.task, allow_outside=cfg.data.allow_outside)
    )
    if list(ext.label_names) != list(ds.label_names):
        raise UserError(f"study.test {t.path} has labels {list(ext.label_names)}, the study {list(ds.label_names)}")
    if ext.channels != ds.channels:
        raise UserError(f"study.test {t.path} has {ext.channels}-channel images, the study {ds.channels}")
    if t.split and ("source_split" not in ext.meta.columns or not (ext.meta["source_split"] == t.split).any()):
        raise UserError(f"study.test.split={t.split!r}: {t.path} has no such split")


def fingerprint(cfg: StudyConfig) -> dict:
    """The config a resumed study must match: everything except how (and where) its trials run and its notes."""
    data = to_dict(cfg)
    for key in ("workers", "radiomics_workers", "executor", "ray_address", "trial_cpus", "trial_gpus", "notes"):
        data["study"].pop(key, None)
    data["train"].pop("compile", None)  # speed only
    return json.loads(json.dumps(data))


def _check_same_study(ledger: Ledger, cfg: StudyConfig) -> None:
    now = fingerprint(cfg)
    text = json.dumps(now, sort_keys=True)
    stored = ledger.get_meta("config")
    if stored is None:
        ledger.set_meta("config", text)
        ledger.set_meta("config_sha1", hashlib.sha1(text.encode()).hexdigest())
        ledger.set_meta("created", time.strftime("%Y-%m-%d %H:%M:%S"))
        return
    if stored != text:
        diff = _diff(json.loads(stored), now, fingerprint(StudyConfig()))
        if not diff:  # only keys a newer medtransfer added (at their defaults) or removed: the same study
            return
        raise UserError(
            f"{ledger.path.parent} was run with another config ({'; '.join(diff[:4])}); "
            "resume with the same config, or start a new --out"
        )


def _diff(a: dict, b: dict, defaults: dict | None = None, prefix: str = "") -> list[str]:
    """Keys whose values differ between the stored config ``a`` and ``b``. With ``defaults``, a key only one side
    has counts only if its value there is not the default (a config key added by a newer version, or removed)."""
    out = []
    defaults = defaults or {}
    for key in sorted(set(a) | set(b)):
        va, vb, where = a.get(key), b.get(key), f"{prefix}{key}"
        if isinstance(va, dict) and isinstance(vb, dict):
            out += _diff(va, vb, defaults.get(key) if isinstance(defaults.get(key), dict) else {}, where + ".")
        elif key not in a or key not in b:
            value = vb if key not in a else va
            if key not in defaults or value != defaults[key]:
                out.append(f"{where}: {va!r} → {vb!r}")
        elif va != vb:
            out.append(f"{where}: {va!r} → {vb!r}")
    return out


def stale_temporaries(out: Path) -> int:
    """Delete the temporary files of atomic writes that a killed driver or worker left half-written (``.<name>.*.tmp``,
    see :func:`medtransfer.io.atomic_write`); call only while holding the study's lock. Returns how many."""
    stale = [p for p in out.rglob(".*.tmp") if p.is_file()]
    for p in stale:
        p.unlink(missing_ok=True)
    if stale:
        log.info("removed %d half-written temporary file(s) of the interrupted run", len(stale))
    return len(stale)


@contextlib.contextmanager
def _lock(out: Path) -> Iterator[None]:
    """One driver per study folder: a second one (or a resume while the first still runs) is refused."""
    handle = open(out / ".lock", "w")  # noqa: SIM115 - held for the whole study
    try:
        fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        handle.close()
        raise UserError(f"another medtransfer study is running in {out}; wait for it or stop it first") from None
    try:
        handle.write(str(os.getpid()))
        handle.flush()
        yield
    finally:
        fcntl.flock(handle, fcntl.LOCK_UN)
        handle.close()


# --------------------------------------------------------------------------- ranking
def rank_for_report(ctx: StudyContext, out: Path, progress: bool) -> dict:
    """LogME (and a CV linear probe) of every source on the target's training pool → ``ranking.json``.

    A failure is recorded in the file and logged; it never stops the study.
    """
    from medtransfer.pretrain.rank import Target, score_source
    from medtransfer.studies.trial import prepared

    cfg = ctx.cfg
    t0 = time.perf_counter()
    try:
        prep = prepared(ctx, cfg.study.seeds[0])
        idx = prep.split.train_subset(None)
        target = Target(
            "study",
            prep.images,
            prep.ds.labels,
            idx,
            cfg.task or prep.ds.task,
            prep.ds.channels,
            cfg.model.backbone,
            cfg.seed,
        )
        rows = []
        for name, source in ctx.sources.items():
            r = score_source(name, source, target)
            rows.append(
                {
                    "arm_source": source_label(name),
                    "source": source,
                    "score": r.logme,
                    "probe_auc": r.probe_auc,
                    "seconds": r.seconds,
                }
            )
            log.info("ranking: %s LogME %.4f (%.1f s)", name, r.logme, r.seconds)
        result = {"method": "logme", "n_images": int(len(idx)), "rows": rows}
    except Exception as e:  # noqa: BLE001 - the ranking is a report section, not a reason to stop the study
        log.warning("transferability ranking failed: %s", e)
        result = {"method": "logme", "error": f"{type(e).__name__}: {e}", "rows": []}
    result["seconds"] = time.perf_counter() - t0
    atomic_write_text(out / RANKING_FILE, json.dumps(result, indent=2))
    return result


# --------------------------------------------------------------------------- execution
#: How trials run (``study.executor``): each takes the pending trials and records every result in the ledger.
Executor = Callable[[Ledger, list[Trial], StudyContext, int, "_StudyProgress"], None]
EXECUTORS: Registry[Executor] = Registry("executor")


def execute(ledger: Ledger, trials: dict[str, Trial], ctx: StudyContext, workers: int, progress: bool) -> None:
    """Run every pending trial with the study's executor, recording each result in the ledger as it arrives."""
    todo = [trials[i] for i in ledger.pending() if i in trials]
    if not todo:
        return
    run = EXECUTORS.get(ctx.cfg.study.executor)
    with _StudyProgress(ledger, progress) as bar:
        run(ledger, todo, ctx, workers, bar)


@EXECUTORS.register("local")
def _run_local(ledger: Ledger, todo: list[Trial], ctx: StudyContext, workers: int, bar: _StudyProgress) -> None:
    """In the driver (``workers=1``) or in a pool of ``workers`` spawned processes."""
    if workers > 1:
        _run_pool(ledger, todo, ctx, workers, bar)
        return
    for trial in todo:
        ledger.start(trial.id, f"pid {os.getpid()}")
        bar.running(trial)
        record_result(ledger, run_trial(ctx, trial))
        bar.update()


@EXECUTORS.register("ray")
def _run_ray(ledger: Ledger, todo: list[Trial], ctx: StudyContext, workers: int, bar: _StudyProgress) -> None:
    """As Ray tasks; the cluster's resources, not ``workers``, bound the trials in flight."""
    from medtransfer.studies.ray_executor import run_ray

    if workers > 1:
        log.info("--workers %d is for the local executor; on Ray, study.trial_cpus/trial_gpus decide", workers)
    run_ray(ledger, todo, ctx, bar)


def record_result(ledger: Ledger, r: TrialResult) -> None:
    """A trial's result (done or failed) into the ledger: the one way every executor records one."""
    if r.ok:
        ledger.finish(r.trial_id, r.metrics, r.seconds, r.peak_rss_mb, r.peak_gpu_mb)
    else:
        log.warning("trial %s failed: %s", r.trial_id, r.error)
        ledger.fail(r.trial_id, r.error or "unknown error", r.seconds)


def _run_pool(ledger: Ledger, todo: list[Trial], ctx: StudyContext, workers: int, bar: _StudyProgress) -> None:
    """K trials at once in spawned worker processes.

    A worker that dies (killed, segfault, the OOM killer) breaks the whole pool and the executor cannot say
    which one died. The trials that were in flight go back to the queue without being charged an attempt and
    are then run *alone* ("suspects"), so that a second death is attributable: only then does the trial that
    died use up an attempt (``MAX_ATTEMPTS``), and innocent trials that shared the pool are never failed.
    """
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
        if len(lost) == 1:
            worker_died(ledger, lost[0], queue)
            suspects.add(lost[0].id)
        else:
            for trial in reversed(lost):
                log.warning(
                    "a worker died while %d trials ran; %s will run alone to find the cause", len(lost), trial.id
                )
                ledger.requeue(trial.id, "worker pool broke; run again alone", refund=True)
                suspects.add(trial.id)
                queue.insert(0, trial)
        bar.update()


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


def _init_worker(threads: int, level: int) -> None:
    import torch

    torch.set_num_threads(threads)
    logging.basicConfig(level=level)
    _die_with_parent()


def _die_with_parent() -> None:
    """Linux: a worker gets SIGKILL when the driver dies, so a killed study leaves no orphan still writing."""
    try:
        import ctypes
        import signal

        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        pass


class _StudyProgress:
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

    def __enter__(self) -> _StudyProgress:
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
