"""``medtransfer study``: the driver and the planning. Plan the grid, fix the splits, check names, sources and data
before anything is written, then rank the sources (:mod:`~medtransfer.studies.ranking`), run every trial with the
study's executor (:mod:`~medtransfer.studies.executors`) and write the report.

The driver alone writes the ledger, holding the study's lock (:mod:`~medtransfer.studies.identity`). Trials run in
the driver (``workers=1``), in K worker processes (:mod:`~medtransfer.studies.local`), or as Ray tasks
(:mod:`~medtransfer.studies.ray_executor`); a worker that dies takes its trial back to pending once, then the trial is
marked failed; the study goes on.
``--resume`` requeues what a killed driver left running and runs only what is not done: finished trials are
never run again, interrupted ones continue from their last epoch checkpoint.
"""

from __future__ import annotations

import json
import logging
import time
from pathlib import Path

from medtransfer.baselines.base import get_baseline
from medtransfer.config import write_run_info
from medtransfer.errors import ConfigError, UserError
from medtransfer.io import atomic_write_text, check_output_folder, entries, remove_new_entries
from medtransfer.studies.config import StudyConfig
from medtransfer.studies.executors import builtin_executors, execute
from medtransfer.studies.grid import Trial, expand, reference_arm
from medtransfer.studies.identity import check_same_study, study_lock
from medtransfer.studies.ledger import LEDGER_FILE, STUDY_MARKER, Ledger
from medtransfer.studies.ranking import RANKING_FILE, rank_for_report
from medtransfer.studies.trial import SPLITS_DIR, StudyContext

log = logging.getLogger(__name__)


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
    builtin_executors().get(cfg.study.executor)  # an unknown name fails here, with close matches
    if not volumetric(cfg):  # a misspelt backbone, or an image size a ViT cannot take: before the folder is made
        from medtransfer.models.backbones import check_backbone

        check_backbone(cfg.model.backbone, cfg.data.image_size)
    if cfg.study.executor == "ray":
        from medtransfer.studies.ray_executor import check

        check(cfg.study)  # Ray installed, resources valid: before the folder and the splits are made
    check_output_folder(out, resume, (out / STUDY_MARKER).is_file() or (out / LEDGER_FILE).exists(), "study")
    before = entries(out)
    out.mkdir(parents=True, exist_ok=True)
    with study_lock(out):
        ledger = None
        try:
            ledger = Ledger(out / LEDGER_FILE, create=not resume)
            check_same_study(ledger, cfg)
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
    for name in cfg.study.baselines:  # a baseline that cannot run this task (or lacks its extra) fails now
        get_baseline(name).check(cfg.task or ds.task)
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
        from medtransfer.data.splits import load_split

        base = load_split(base_file, ds)
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
            create_model(model_cfg, num_outputs=outputs, image_size=cfg.data.image_size)
        except UserError as e:
            raise UserError(f"study source '{name}': {e}") from None


def _preflight_test(cfg: StudyConfig, ds) -> None:
    from medtransfer.data.sources.base import SourceOptions, load_dataset

    t = cfg.study.test
    labels = tuple(cfg.data.labels) if cfg.data.labels else None
    ext = load_dataset(
        t.path,
        t.format,
        SourceOptions(labels=labels, task=cfg.task, allow_outside=cfg.data.allow_outside, channels=cfg.data.channels),
    )
    if list(ext.label_names) != list(ds.label_names):
        raise UserError(f"study.test {t.path} has labels {list(ext.label_names)}, the study {list(ds.label_names)}")
    if ext.channels != ds.channels:
        raise UserError(f"study.test {t.path} has {ext.channels}-channel images, the study {ds.channels}")
    if t.split and ("source_split" not in ext.meta.columns or not (ext.meta["source_split"] == t.split).any()):
        raise UserError(f"study.test.split={t.split!r}: {t.path} has no such split")


def stale_temporaries(out: Path) -> int:
    """Delete the temporary files of atomic writes that a killed driver or worker left half-written (``.<name>.*.tmp``,
    see :func:`medtransfer.io.atomic_write`); call only while holding the study's lock. Returns how many."""
    stale = [p for p in out.rglob(".*.tmp") if p.is_file()]
    for p in stale:
        p.unlink(missing_ok=True)
    if stale:
        log.info("removed %d half-written temporary file(s) of the interrupted run", len(stale))
    return len(stale)
