"""``medtransfer study DIR --repair``: rebuild a damaged or lost ledger from the trial folders.

The trial folders hold the truth: a finished trial has ``status.json`` saying done and its ``metrics.json``; a failed
one says failed with the reason; anything else is pending (an interrupted trial continues from its checkpoint on
``--resume``). The plan comes from the study's own ``config.yaml`` and ``splits/base.csv``, so neither the data nor
the sources are needed. The new ledger is built beside the old one and only then put in its place; the damaged file
is kept as ``study.sqlite.damaged-<time>``.
"""

from __future__ import annotations

import json
import logging
import os
import time
from pathlib import Path

import pandas as pd

from medtransfer.config import load_config
from medtransfer.errors import UserError
from medtransfer.studies.config import StudyConfig
from medtransfer.studies.grid import expand
from medtransfer.studies.identity import check_same_study, study_lock
from medtransfer.studies.ledger import LEDGER_FILE, STUDY_MARKER, Ledger
from medtransfer.studies.trial import SPLITS_DIR, _finished, _ledger_metrics

log = logging.getLogger(__name__)


def repair_study(study_dir: str | Path) -> dict:
    """Rebuild ``study_dir``'s ledger from its trial folders; returns the counts and where the old file went."""
    out = Path(study_dir)
    if not (out / STUDY_MARKER).is_file():
        raise UserError(f"--repair: {out} is not a medtransfer study folder (no {STUDY_MARKER} marker in it)")
    config, base = out / "config.yaml", out / SPLITS_DIR / "base.csv"
    for needed in (config, base):
        if not needed.is_file():
            raise UserError(f"--repair: {needed} is missing, so the study's trials cannot be planned again")
    cfg = load_config(config, cls=StudyConfig)
    try:
        n_train = int((pd.read_csv(base, usecols=["split"])["split"] == "train").sum())
    except (ValueError, pd.errors.ParserError, pd.errors.EmptyDataError) as e:
        raise UserError(f"--repair: cannot read {base} ({e})") from None
    trials = expand(cfg.study, n_train)
    with study_lock(out):
        tmp = out / f".{LEDGER_FILE}.repair"
        for stale in _with_journals(tmp):
            stale.unlink(missing_ok=True)
        counts = {"done": 0, "failed": 0, "pending": 0}
        try:
            _rebuild(tmp, cfg, trials, out, counts)
        except BaseException:
            for partial in _with_journals(tmp):  # a repair that fails leaves the folder as it was
                partial.unlink(missing_ok=True)
            raise
        kept = None
        old = out / LEDGER_FILE
        if old.exists():
            kept = out / f"{LEDGER_FILE}.damaged-{time.strftime('%Y%m%d-%H%M%S')}"
            for journal, target in zip(_with_journals(old), _with_journals(kept), strict=True):
                if journal.exists():
                    os.replace(journal, target)
        os.replace(tmp, old)
    log.info("rebuilt %s from %d trial folders: %s", old, len(trials), counts)
    return {**counts, "trials": len(trials), "kept": str(kept) if kept else None}


def _rebuild(tmp: Path, cfg: StudyConfig, trials: list, out: Path, counts: dict[str, int]) -> None:
    """A new ledger at ``tmp``: the study's config and trials, each trial's state read from its folder."""
    with Ledger(tmp, create=True) as ledger:
        check_same_study(ledger, cfg)  # records the config, as a new study does
        ledger.set_meta("repaired", time.strftime("%Y-%m-%d %H:%M:%S"))
        ledger.add(trials)
        for t in trials:
            folder = out / t.folder
            metrics = _finished(folder)
            if metrics is not None:
                ledger.start(t.id, "repair")
                ledger.finish(t.id, _ledger_metrics(metrics), float(metrics.get("seconds") or 0.0))
                counts["done"] += 1
            elif (error := _failed(folder)) is not None:
                ledger.start(t.id, "repair")
                ledger.fail(t.id, error)
                counts["failed"] += 1
            else:
                counts["pending"] += 1


def _with_journals(db: Path) -> list[Path]:
    return [db, db.with_name(db.name + "-wal"), db.with_name(db.name + "-shm")]


def _failed(folder: Path) -> str | None:
    try:
        status = json.loads((folder / "status.json").read_text())
    except (OSError, ValueError):
        return None
    if not isinstance(status, dict) or status.get("status") != "failed":
        return None
    return str(status.get("error") or status.get("message") or "failed (reason not recorded)")
