"""A forced collapse (one arm at a learning rate of 100) is caught: marked degenerate with its reason in the ledger and
the trial's metrics.json, listed in the report, excluded from means, and said so in the findings."""

from __future__ import annotations

import json

import pandas as pd

from medtransfer.studies.ledger import Ledger
from medtransfer.studies.runner import run_study
from medtransfer.tasks.base import task_kind


def test_a_forced_collapse_is_marked_degenerate(tmp_path, study_config):
    cfg = study_config(
        n=["all"],
        strategies=["finetune", "linear_probe"],
        seeds=[0, 1],
        strategy_settings={
            "linear_probe": ["train.lr=100", "train.grad_clip=null", "model.dropout=0.0", "transfer.lr_policy=constant"]
        },
    )
    out = tmp_path / "s"
    assert run_study(cfg, out, progress=False)["done"] == 4
    rows = {r["id"]: r for r in Ledger(out / "study.sqlite").rows()}
    collapsed = [r for r in rows.values() if r["arm"] == "scratch/linear_probe"]
    assert all("no better than a constant predictor" in r["degenerate"] for r in collapsed)
    for r in collapsed:
        on_disk = json.loads((out / r["folder"] / "metrics.json").read_text())
        assert on_disk["degenerate"] == r["degenerate"] and on_disk["constant"]["val"] == 0.5
    summary = pd.read_csv(out / "summary.csv").set_index("arm")
    probe = summary.loc["scratch/linear_probe"]
    assert probe["n_degenerate"] == 2 and probe["n_seeds"] == 0
    md = (out / "report.md").read_text()
    assert "### Degenerate trials" in md and "scratch/linear\\_probe" in md.split("### Degenerate trials")[1]
    first = (out / "findings.txt").read_text().splitlines()[0]
    assert "degenerate" in first and "excluded" in first and "scratch/linear_probe at N = all 2/2" in first


def test_a_trained_model_is_not_degenerate_an_untrained_one_is():
    kind = task_kind("binary")
    trained = {"metric": "auc", "val": {"score": 0.91}, "score_ci": [0.85, 0.95]}
    untrained = {"metric": "auc", "val": {"score": 0.5}, "score_ci": [0.44, 0.56]}
    reversed_ = {"metric": "auc", "val": {"score": 0.55}, "score_ci": [0.30, 0.45]}
    assert kind.collapse_reason(trained) is None
    assert "no better than a constant predictor's 0.500" in kind.collapse_reason(untrained)
    assert "lies entirely below" in kind.collapse_reason(reversed_)
    mae = task_kind("regression")
    mean_only = {"metric": "mae", "val": {"score": 12.0}, "score_ci": [10, 14], "constant": {"val": 11.9, "test": 12}}
    assert "constant predictor" in mae.collapse_reason(mean_only)
    assert mae.collapse_reason({**mean_only, "val": {"score": 6.0}, "score_ci": [5, 7]}) is None
    y = [[1.0], [2.0], [3.0], [10.0]]
    assert mae.constant_score([[2.0], [4.0]], y) == 2.5  # |y - 3| averaged: (2 + 1 + 0 + 7) / 4
