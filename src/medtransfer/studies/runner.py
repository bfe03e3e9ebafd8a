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
from medtransfer.errors import UserError
from medtransfer.io import atomic_write_text, check_output_folder, entries, remove_new_entries
from medtransfer.models.catalogue import lookup
from medtransfer.pipelines.base import pipeline_for
from medtransfer.studies.config import StudyConfig
from medtransfer.studies.executors import EXECUTORS, execute
from medtransfer.studies.grid import Trial, expand, reference_arm
from medtransfer.studies.identity import check_same_study, study_lock
from medtransfer.studies.ledger import LEDGER_FILE, STUDY_MARKER, Ledger
from medtransfer.studies.ranking import RANKING_FILE, rank_for_report
from medtransfer.studies.report import report_study
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
    executor = EXECUTORS.get(cfg.study.executor)  # an unknown name fails here, with close matches
    pipeline_for(cfg.task).preflight(cfg)  # e.g. a misspelt backbone: before the folder is made
    executor.check(cfg.study)  # e.g. Ray installed: before the folder and the splits are made
    check_output_folder(out, resume, (out / STUDY_MARKER).is_file() or (out / LEDGER_FILE).exists(), "study")
    before = entries(out)
    out.mkdir(parents=True, exist_ok=True)
    with study_lock(out):
        ledger, trials, ctx = _open(cfg, out, resume, before, progress)
        with ledger:
            if resume:
                _recover(ledger, out, retry_failed)
            ranks = cfg.study.rank and cfg.study.sources and pipeline_for(cfg.task).ranks_sources
            if ranks and not (out / RANKING_FILE).exists():
                rank_for_report(ctx, out, progress)
            execute(ledger, {t.id: t for t in trials}, ctx, workers, progress)
            counts = ledger.counts()
    if report:
        report_study(out)
    return counts


def _open(
    cfg: StudyConfig, out: Path, resume: bool, before, progress: bool
) -> tuple[Ledger, list[Trial], StudyContext]:
    """The study's ledger (new, or the folder's on resume, checked to be the same study), its plan, run info and
    trials; on any failure of a new study what was written is removed again. Call holding the study's lock."""
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
    return ledger, trials, ctx


def _recover(ledger: Ledger, out: Path, retry_failed: bool) -> None:
    """On resume: half-written temporaries removed, interrupted trials back to pending (and failed ones with
    ``--retry-failed``)."""
    stale_temporaries(out)
    back = ledger.recover()
    if back:
        log.info("resuming %d interrupted trial(s): %s", len(back), ", ".join(back[:3]))
    if retry_failed:
        log.info("retrying %d failed trial(s)", ledger.retry_failed())


# --------------------------------------------------------------------------- planning
def plan(cfg: StudyConfig, out: Path, progress: bool) -> tuple[list[Trial], StudyContext]:
    """Fix the splits (kept from the first run on resume), check sources, baselines and test set, expand the grid;
    the data family's pipeline (:func:`~medtransfer.pipelines.base.pipeline_for`) does what differs."""
    pipe = pipeline_for(cfg.task)
    pipe.check_study(cfg)
    ds = pipe.load(cfg)
    splits = out / SPLITS_DIR
    base_file = splits / "base.csv"
    if base_file.is_file():
        base = pipe.read_split(base_file, ds)
    else:
        base = pipe.split(cfg, ds)
        base.save(base_file)
    for seed in cfg.study.seeds:
        f = splits / f"seed{seed}.csv"
        if not f.is_file():
            pipe.reseed(base, ds, seed).save(f)
    counts = base.counts()
    if counts["test"] == 0 and not (cfg.study.test and cfg.study.test.path):
        log.warning("the split has no test %s: trials are scored on validation (set data.split_fractions)", pipe.unit)
    trials = expand(cfg.study, counts["train"])
    reference_arm(cfg.study, trials)  # a misspelt study.reference fails now, not in the report hours later
    sources = {s: lookup(s, cfg.study.sources_dir) for s in cfg.study.sources}
    pipe.preflight_sources(cfg, sources, ds)
    for name in cfg.study.baselines:  # a baseline that cannot run this task (or lacks its extra) fails now
        get_baseline(name).check(cfg.task or ds.task)
    if cfg.study.test and cfg.study.test.path:
        pipe.preflight_test(cfg, ds)
    ctx = StudyContext(cfg, str(out), sources)
    pipe.warm(cfg, ds, progress)  # e.g. images decoded once, before the workers start
    log.info(
        "study: %d trials (%d arms × %d sizes × %d seeds), %s %s",
        len(trials),
        len({t.arm for t in trials}),
        len({t.n_label for t in trials}),
        len(cfg.study.seeds),
        pipe.unit,
        counts,
    )
    return trials, ctx


def stale_temporaries(out: Path) -> int:
    """Delete the temporary files of atomic writes that a killed driver or worker left half-written (``.<name>.*.tmp``,
    see :func:`medtransfer.io.atomic_write`); call only while holding the study's lock. Returns how many."""
    stale = [p for p in out.rglob(".*.tmp") if p.is_file()]
    for p in stale:
        p.unlink(missing_ok=True)
    if stale:
        log.info("removed %d half-written temporary file(s) of the interrupted run", len(stale))
    return len(stale)
