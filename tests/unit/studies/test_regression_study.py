"""A regression study end to end: phantom hand ages, a network arm and the radiomics (ridge) arm, scored by MAE
(lower is better) everywhere: ledger, results, summary, paired tests and the report."""

from __future__ import annotations

import pandas as pd
import pytest

from medtransfer.config import replace
from medtransfer.studies.ledger import Ledger
from medtransfer.studies.runner import run_study

pytest.importorskip("radiomics")


def test_a_regression_study_is_scored_by_mae(tmp_path, study_config):
    cfg = replace(
        study_config(n=[16, "all"], strategies=["finetune"], seeds=[0, 1], baselines=["radiomics"], unit="years"),
        **{"data.path": "synthetic:hand,labels=age,n=120,size=32,seed=3", "study.reference": "radiomics"},
    )
    counts = run_study(cfg, tmp_path / "s", progress=False)
    assert counts == {"pending": 0, "running": 0, "done": 8, "failed": 0}
    rows = Ledger(tmp_path / "s" / "study.sqlite").rows()
    assert {r["metric"] for r in rows} == {"mae"} and all(r["score"] > 0 for r in rows)
    assert all(r["metrics"]["model"]["alpha"] for r in rows if r["arm"] == "radiomics")  # ridge, alpha by CV

    results = pd.read_csv(tmp_path / "s" / "results.csv")
    assert {"mae", "mae_ci_lo", "mae_ci_hi", "rmse", "r2"} <= set(results.columns) and "auc" not in results.columns
    summary = pd.read_csv(tmp_path / "s" / "summary.csv")
    assert "mae_mean" in summary.columns and summary["mae_mean"].gt(1).any()  # in years: not an AUC's range
    per_image = pd.read_csv(tmp_path / "s" / "paired_images.csv")
    # two epochs on 16-96 phantoms: a net trial may not beat predicting the mean age; it is then degenerate, named in
    # the ledger and the report, and left out of the tests (each learned trial gets one per-image test)
    learned = [r for r in rows if r["arm"] != "radiomics" and r["degenerate"] is None]
    degenerate = [r for r in rows if r["degenerate"]]
    assert all("constant predictor" in r["degenerate"] for r in degenerate)
    assert {"mae_arm", "mae_ref", "diff", "p_value"} <= set(per_image.columns) and len(per_image) == len(learned)
    assert results["degenerate"].notna().sum() == len(degenerate)
    md = (tmp_path / "s" / "report.md").read_text()
    # study.unit is a report-only key (not in the ledger's identity): the report reads it from the study's config.yaml
    assert "MAE of age in years" in md or "in years" in md
    assert "Mean test MAE (lower is better) by arm and N" not in md  # the heading names the metric ...
    assert "## Mean test MAE by arm and N" in md and "lower is better" in md  # ... and its direction is stated
    assert "paired bootstrap of the MAE difference over images" in md and "DeLong" not in md
    if degenerate:
        assert "### Degenerate trials" in md and degenerate[0]["degenerate"].split(";")[0] in md
    best = summary.groupby("n_label")["mae_mean"].min()
    for n_label, value in best.items():  # the bold cell of each N is its lowest MAE
        assert f"**{value:.3f}**" in md, (n_label, value)
