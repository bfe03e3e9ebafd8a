"""``medtransfer report DIR``: the study's ledger, predictions and ranking → :mod:`medtransfer.reporting`."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import numpy as np
import pandas as pd
import yaml

from medtransfer.errors import UserError
from medtransfer.io import atomic_write
from medtransfer.reporting.compare import arm_pairs
from medtransfer.reporting.report import KeptResults, write_report
from medtransfer.reporting.tables import OPERATING_COLUMNS, normalise_trials
from medtransfer.studies.identity import REPORT_ONLY
from medtransfer.studies.ledger import LEDGER_FILE, STUDY_MARKER, open_existing
from medtransfer.tasks.base import kind_of_metric, task_kind

log = logging.getLogger(__name__)

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
    "degenerate",
]


def trials_frame(study_dir: str | Path, metric: str = "auc") -> pd.DataFrame:
    """One row per trial of the ledger, the score named by its metric and its CI split into two columns
    (``auc``, ``auc_ci_lo``, ``auc_ci_hi``; ``mae*``, ``dice*``)."""
    with open_existing(study_dir) as ledger:
        rows = ledger.rows()
    for r in rows:
        ci = (r["metrics"] or {}).get(f"{metric}_ci") or [None, None]
        r[f"{metric}_ci_lo"], r[f"{metric}_ci_hi"] = (np.nan if v is None else float(v) for v in ci)
        score = r.pop("score")  # the ledger's score column, in the study's metric
        r.pop("metric", None)
        r[metric] = np.nan if score is None else float(score)
    columns = [c.replace("auc", metric) if c.startswith("auc") else c for c in REPORT_COLUMNS]
    return pd.DataFrame(rows, columns=columns)


def prediction_loader(study_dir: Path, trials: pd.DataFrame, metric: str = "auc"):
    """``trial_id -> per-image (or per-case) predictions table, or None``, read from the trials' folders."""

    folders = dict(zip(trials["id"], trials["folder"], strict=True))
    names = kind_of_metric(metric).prediction_files

    def predictions(trial_id: str) -> pd.DataFrame | None:
        folder = Path(study_dir) / folders[trial_id]
        for name in names:
            if (folder / name).is_file():
                return pd.read_csv(folder / name, dtype={"image_id": str, "patient_id": str, "case": str})
        return None

    return predictions


def report_study(study_dir: str | Path, progress: bool = False, notes: str | Path | None = None) -> dict[str, Path]:
    """Write ``results.csv``, ``summary.csv``, ``report.md``, ``report.html`` and figures into ``study_dir``.

    ``notes``: a markdown file for the Discussion section; by default the study's ``study.notes``.
    """
    out = Path(study_dir)
    kept = None
    if is_results_folder(out):
        config, trials, metric = results_only(out)  # a committed results folder: its CSVs and config, no trials
        predictions = None
        kept = KeptResults.read(out)  # what an earlier render computed from predictions the folder no longer has
        log.warning("%s has no ledger: the report is rebuilt from results.csv, without per-image tests", out)
    else:
        with open_existing(out) as ledger:
            config = json.loads(ledger.get_meta("config") or "{}")
            metric = study_metric(ledger, config)
        trials = trials_frame(out, metric)
        predictions = prediction_loader(out, trials, metric)
        config = with_report_settings(config, out / "config.yaml")
    study = config.get("study", {})
    reference = study.get("reference")
    if reference is None:
        scratch = trials.loc[trials["source"] == "scratch", "arm"]
        reference = scratch.iloc[0] if len(scratch) else (trials["arm"].iloc[0] if len(trials) else None)
    ranking_file = out / "ranking.json"
    ranking = json.loads(ranking_file.read_text()) if ranking_file.is_file() else None
    notes_path = Path(notes) if notes is not None else Path(study["notes"]) if study.get("notes") else None
    notes_md = notes_path.read_text() if notes_path is not None and notes_path.is_file() else None
    info_file = out / "run_info.json"
    command = None
    if info_file.is_file():
        argv = json.loads(info_file.read_text()).get("argv") or []
        command = " ".join(["medtransfer", *argv[1:]]) if argv else None
    baseline = study.get("baselines", [None])[0] if study.get("baselines") else None
    target = (study.get("target") or {}).get(metric)
    if study.get("target") and target is None:
        log.warning("study.target names %s, but this study is scored by %s; no target", list(study["target"]), metric)
    if predictions is not None:  # the trials' folders are here: draw the saliency gallery the report shows
        # deferred: it loads torch, matplotlib and the models; a report rebuilt from results.csv needs none
        from medtransfer.studies.gallery import write_gallery

        write_gallery(out, trials, reference, metric, config, bool(study.get("keep_degenerate", False)))
    return write_report(
        trials,
        out,
        predictions=predictions,
        ranking=ranking,
        reference=reference,
        baseline=baseline,
        title=f"medtransfer study: {out.name}",
        command=command,
        notes_md=notes_md,
        metric=metric,
        target=target,
        margin=study.get("margin"),
        unit=study.get("unit"),
        keep_degenerate=bool(study.get("keep_degenerate", False)),
        kept=kept,
    )


def is_results_folder(out: Path) -> bool:
    """A folder of committed results (``results.csv``, usually with the study's ``config.yaml``) rather than a study:
    no ledger and no study marker. A study that lost its ledger keeps its marker, and is told to ``--repair``
    instead."""
    return not (out / LEDGER_FILE).exists() and not (out / STUDY_MARKER).exists() and (out / "results.csv").is_file()


def with_report_settings(config: dict, resolved: Path) -> dict:
    """The ledger's config (the study's identity, without the report-only keys) with ``study.target``, ``margin``,
    ``unit``, ``keep_degenerate`` and ``notes`` from the study's resolved ``config.yaml``: edit them there and run
    ``medtransfer report`` again to read the same trials another way."""
    if not resolved.is_file():
        return config
    study = (yaml.safe_load(resolved.read_text()) or {}).get("study") or {}
    merged = {**config, "study": dict(config.get("study") or {})}
    merged["study"].update({k: study[k] for k in REPORT_ONLY if k in study})
    return merged


RESULTS_NEEDS = ("id", "arm", "source", "strategy", "n", "n_label", "seed", "status")


def results_only(out: Path) -> tuple[dict, pd.DataFrame, str]:
    """``(config, trials, metric)`` of a study folder that kept only ``results.csv`` and ``config.yaml`` (as the
    committed ``docs/results/*`` do): trials without metrics or predictions, so findings use seed-level tests. An
    older folder without ``config.yaml`` is read with the defaults, its metric named by its columns."""
    resolved = out / "config.yaml"
    config = (yaml.safe_load(resolved.read_text()) or {}) if resolved.is_file() else {}
    results = pd.read_csv(out / "results.csv", dtype={"n_label": str, "id": str})
    missing = [c for c in RESULTS_NEEDS if c not in results.columns]
    if missing:
        raise UserError(f"{out / 'results.csv'} is not a study's results table: no column {', '.join(missing)}")
    metric = task_kind(config["task"]).metric if config.get("task") else "auc"
    if metric not in results.columns:
        metric = next((m for m in ("auc", "mae", "dice") if m in results.columns), metric)
    trials = results.copy()
    trials["kind"] = np.where(trials["source"].isna(), "baseline", "net")  # a baseline arm has no source
    trials["metrics"] = [metrics_of_row(r, metric) for r in results.to_dict("records")]
    if "degenerate" not in trials.columns:
        trials["degenerate"] = None
    return config, trials, metric


def metrics_of_row(row: dict, metric: str) -> dict:
    """The part of a trial's ``metrics`` that ``results.csv`` shows, read back from its row so that a re-render
    writes the same columns: the kind's secondary metrics (``rmse``, ``r2``), ``hd95`` and the per-label (per-class,
    per-target) columns ``<metric>:<name>`` and ``hd95:<name>``."""
    kind = kind_of_metric(metric)
    out: dict = {}
    per: dict[str, dict] = {}
    for col, value in row.items():
        if value is None or (isinstance(value, float) and np.isnan(value)):
            continue
        name, sep, label = str(col).partition(":")
        if not sep and col in OPERATING_COLUMNS:  # the test operating point (its CIs stay in the trial's metrics)
            out.setdefault("operating_point", {})[col] = float(value)
        elif not sep and (col in kind.secondary_metrics or (kind.unit == "cases" and col == "hd95")):
            out[col] = float(value)
        elif sep and label and (name == metric or (kind.unit == "cases" and name == "hd95")):
            per.setdefault(label, {})[name] = float(value)
    if per:
        out["per_label"] = per
    return out


def study_metric(ledger, config: dict) -> str:
    """The study's metric: its task kind's (``task:`` in the config), else what its finished trials recorded (the
    data decided the kind), else AUC (a study with no finished trial and no task)."""
    if config.get("task"):
        return task_kind(config["task"]).metric or "auc"
    recorded = [r["metric"] for r in ledger.rows() if r.get("metric")]
    return recorded[0] if recorded else "auc"


PAIRS_FILE = "pairs.csv"


def compare_arms(study_dir: str | Path, pairs: list[tuple[str, str]]) -> pd.DataFrame:
    """:func:`~medtransfer.reporting.compare.arm_pairs` on a study's trials; also written to ``pairs.csv``."""
    out = Path(study_dir)
    trials = normalise_trials(trials_frame(out))
    table, _ = arm_pairs(trials, pairs, prediction_loader(out, trials))
    atomic_write(out / PAIRS_FILE, lambda tmp: table.to_csv(tmp, index=False))
    return table
