"""``medtransfer report DIR``: the study's ledger, predictions and ranking → :mod:`medtransfer.reporting`."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd

from medtransfer.studies.ledger import open_existing

REPORT_COLUMNS = [
    "id",
    "arm",
    "kind",
    "source",
    "strategy",
    "n",
    "n_label",
    "seed",
    "status",
    "seconds",
    "auc",
    "auc_ci_lo",
    "auc_ci_hi",
    "error",
    "metrics",
    "folder",
    "peak_rss_mb",
    "peak_gpu_mb",
]


def trials_frame(study_dir: str | Path) -> pd.DataFrame:
    """One row per trial of the ledger, with the AUC's CI split into two columns."""
    with open_existing(study_dir) as ledger:
        rows = ledger.rows()
    for r in rows:
        ci = (r["metrics"] or {}).get("auc_ci") or [None, None]
        r["auc_ci_lo"], r["auc_ci_hi"] = (np.nan if v is None else float(v) for v in ci)
        r["auc"] = np.nan if r["auc"] is None else float(r["auc"])
    return pd.DataFrame(rows, columns=REPORT_COLUMNS)


def report_study(study_dir: str | Path, progress: bool = False) -> dict[str, Path]:
    """Write ``results.csv``, ``summary.csv``, ``report.md``, ``report.html`` and figures into ``study_dir``."""
    from medtransfer.reporting.report import write_report
    from medtransfer.studies.trial import EXTERNAL_PREDICTIONS

    out = Path(study_dir)
    trials = trials_frame(out)
    folders = dict(zip(trials["id"], trials["folder"], strict=True))

    def predictions(trial_id: str) -> pd.DataFrame | None:
        folder = out / folders[trial_id]
        for name in (EXTERNAL_PREDICTIONS, "predictions.csv"):
            if (folder / name).is_file():
                return pd.read_csv(folder / name, dtype={"image_id": str, "patient_id": str})
        return None

    with open_existing(out) as ledger:
        config = json.loads(ledger.get_meta("config") or "{}")
    study = config.get("study", {})
    reference = study.get("reference")
    if reference is None:
        scratch = trials.loc[trials["source"] == "scratch", "arm"]
        reference = scratch.iloc[0] if len(scratch) else (trials["arm"].iloc[0] if len(trials) else None)
    ranking_file = out / "ranking.json"
    ranking = json.loads(ranking_file.read_text()) if ranking_file.is_file() else None
    notes = None
    if study.get("notes"):
        notes_path = Path(study["notes"])
        notes = notes_path.read_text() if notes_path.is_file() else None
    info_file = out / "run_info.json"
    command = None
    if info_file.is_file():
        argv = json.loads(info_file.read_text()).get("argv") or []
        command = " ".join(["medtransfer", *argv[1:]]) if argv else None
    baseline = study.get("baselines", [None])[0] if study.get("baselines") else None
    return write_report(
        trials,
        out,
        predictions=predictions,
        ranking=ranking,
        reference=reference,
        baseline=baseline,
        title=f"medtransfer study: {out.name}",
        command=command,
        notes_md=notes,
    )
