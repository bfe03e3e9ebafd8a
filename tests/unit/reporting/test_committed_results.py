"""Every committed results folder under ``docs/results`` (a ``results.csv`` without a ledger: the study's
``study.sqlite`` and trial folders are not committed) re-renders with ``medtransfer report``, and the new
``summary.csv`` and ``results.csv`` equal the committed ones.

Nothing in a summary is random: the seed-level t-intervals follow from ``results.csv``, and the two-level bootstrap
CIs of a folder rendered from per-image predictions (pneumonia, hand_age) are kept from its committed summary (the
predictions are not committed; :class:`~medtransfer.reporting.report.KeptResults`). A difference therefore means the
reporting code changed: re-render the folder (``medtransfer report docs/results/X``) after checking why.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

RESULTS = Path(__file__).resolve().parents[3] / "docs" / "results"
FOLDERS = sorted(p.parent.relative_to(RESULTS).as_posix() for p in RESULTS.rglob("results.csv"))
HEAVY = {"pneumonia"}  # 255 trials: its curve-fit bootstraps take ~40 s on one core


def _read(path: Path) -> pd.DataFrame:
    return pd.read_csv(path, dtype={"n_label": str, "id": str})


def assert_same_table(new: pd.DataFrame, old: pd.DataFrame, keys: list[str], what: str) -> None:
    """Same columns in the same order, same rows (by ``keys``) in the same order, numbers equal to 1e-9 relative."""
    assert list(new.columns) == list(old.columns), f"{what}: columns differ"
    assert new[keys].astype(str).equals(old[keys].astype(str)), f"{what}: rows differ"
    for col in old.columns:
        a, b = old[col], new[col]
        if pd.api.types.is_numeric_dtype(a) and pd.api.types.is_numeric_dtype(b):
            close = np.isclose(b.to_numpy(float), a.to_numpy(float), rtol=1e-9, atol=1e-12, equal_nan=True)
        else:
            close = (a.isna() & b.isna()) | (a.astype(str) == b.astype(str))
        bad = [" ".join(map(str, r)) for r in new.loc[~np.asarray(close), keys].itertuples(index=False)]
        was, now = a[~np.asarray(close)].tolist()[:3], b[~np.asarray(close)].tolist()[:3]
        assert not bad, f"{what}: column {col} differs at {bad[:5]} (was {was}, now {now})"


def test_the_committed_folders_are_found():
    assert {"pneumonia", "hippocampus", "hc18", "hand_age"} <= set(FOLDERS)


@pytest.mark.parametrize("folder", [pytest.param(f, marks=pytest.mark.slow) if f in HEAVY else f for f in FOLDERS])
def test_committed_results_folder_re_renders(folder, tmp_path, cli):
    committed = RESULTS / folder
    copy = tmp_path / "folder"
    nested = {p.name for p in committed.iterdir() if (p / "results.csv").is_file()}  # its own test
    shutil.copytree(committed, copy, ignore=lambda d, names: nested if Path(d) == committed else set())
    assert cli(["report", str(copy)]) == 0
    assert_same_table(_read(copy / "summary.csv"), _read(committed / "summary.csv"), ["arm", "n_label"], "summary.csv")
    assert_same_table(_read(copy / "results.csv"), _read(committed / "results.csv"), ["id"], "results.csv")
