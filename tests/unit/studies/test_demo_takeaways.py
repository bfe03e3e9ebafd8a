"""The demo's two sentences come from the study's findings.csv: a difference is stated only under Holm's p < 0.05."""

from __future__ import annotations

import pandas as pd

from medtransfer.reporting.findings import FINDINGS_COLUMNS
from medtransfer.studies.demo import demo_takeaways


def _row(family, arm, ref, delta, p_holm, verdict, n=20):
    return {
        "family": family, "n_label": str(n), "n": float(n), "arm": arm, "reference": ref, "metric": "auc",
        "arm_mean": 0.8 + max(delta, 0), "reference_mean": 0.8 - min(delta, 0), "delta": delta, "ci_lo": delta - 0.02,
        "ci_hi": delta + 0.02, "p_value": p_holm / 3, "p_holm": p_holm, "p_bh": p_holm, "family_size": 3,
        "verdict": verdict, "n_seeds": 3, "n_images": 300, "n_excluded": 0, "not_converged": "", "method": "m",
    }  # fmt: skip


def _write(tmp_path, rows):
    pd.DataFrame(rows, columns=FINDINGS_COLUMNS).to_csv(tmp_path / "findings.csv", index=False)
    return tmp_path


def test_same_site_better_than_both_is_said(tmp_path):
    rows = [
        _row("source_vs_scratch", "chest-sup/recipe", "scratch/recipe", 0.10, 0.001, "better"),
        # source_vs_source lists the other site first here: the sentence reads it the other way round
        _row("source_vs_source", "hand-sup/recipe", "chest-sup/recipe", -0.05, 0.01, "worse"),
        _row("strategy_vs_finetune", "chest-sup/recipe", "chest-sup/finetune", 0.01, 0.4, "no detectable difference"),
        _row("source_vs_scratch", "chest-sup/recipe", "scratch/recipe", 0.02, 0.3, "no detectable difference", n=100),
    ]
    first, second = demo_takeaways(_write(tmp_path, rows))
    assert first.startswith("At N=20:") and "chest-sup/recipe is better than hand-sup/recipe" in first
    assert "chest-sup/recipe is better than scratch/recipe" in first and "anatomical site" in first
    assert "Holm-adjusted p = " in first
    assert "chest-sup/recipe vs chest-sup/finetune: no detectable difference" in second


def test_a_difference_that_does_not_survive_holm_is_not_claimed(tmp_path):
    rows = [
        _row("source_vs_scratch", "chest-sup/finetune", "scratch/finetune", 0.04, 0.08, "no detectable difference"),
        _row("source_vs_source", "chest-sup/finetune", "hand-sup/finetune", 0.03, 0.02, "better"),
    ]
    (first,) = demo_takeaways(_write(tmp_path, rows))
    assert "no detectable difference" in first and "not shown against both" in first


def test_no_findings(tmp_path):
    assert "nothing to conclude" in demo_takeaways(tmp_path)[0]
