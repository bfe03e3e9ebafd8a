"""The generated findings: the design's comparison families, Holm within each, verdicts only under adjusted p < 0.05,
degenerate trials excluded and reported, best network chosen on validation, learning-curve fits and the back-test."""

from __future__ import annotations

import zlib

import numpy as np
import pandas as pd
import pytest

from medtransfer.evaluation.stats import holm, rank_auc
from medtransfer.reporting import write_report
from medtransfer.reporting.findings import (
    curve_fits,
    degenerate_reasons,
    findings_table,
    summarize_findings,
    trial_replicates,
    usable,
)
from medtransfer.reporting.tables import normalise_trials, summary_table

N_TEST = 240
SIZES = ((20, 0.35), (50, 0.6), (100, 0.8), (200, 1.0))  # N and how much of an arm's signal it reaches there
SIGNAL = {"scratch": 0.6, "a": 2.2, "b": 1.2}  # a: a strong source; b: a weaker one
STRATEGY = {"finetune": 1.0, "romero": 0.9}
COLLAPSED = "scratch/romero|n=20|seed=1"


def make_grid():
    rng = np.random.default_rng(11)
    y = (rng.random(N_TEST) < 0.4).astype(float)
    ids = [f"im{i}" for i in range(N_TEST)]
    patients = [f"p{i // 2}" for i in range(N_TEST)]  # two images per patient
    rows, preds = [], {}
    arms = [(f"{s}/{k}", "net", s, k) for s in SIGNAL for k in STRATEGY] + [("radiomics", "baseline", None, None)]
    for arm, kind, source, strategy in arms:
        for n, frac in SIZES:
            for seed in (0, 1, 2):
                tid = f"{arm}|n={n}|seed={seed}"
                trng = np.random.default_rng(zlib.crc32(tid.encode()))
                signal = 1.0 if kind == "baseline" else SIGNAL[source] * STRATEGY[strategy] * frac
                score = y * signal + trng.normal(size=N_TEST)
                if tid == COLLAPSED:
                    score = -y * 0.8 + trng.normal(size=N_TEST)  # learned the wrong way round: test AUC CI < 0.5
                auc = rank_auc(y, score)
                val = auc + trng.normal(0, 0.01) if kind == "net" else None
                metrics = {"metric": "auc", "score": auc, "auc": auc, "auc_ci": [auc - 0.05, auc + 0.05], "n": N_TEST,
                           "n_pos": int(y.sum()), "n_neg": int((1 - y).sum()), "split": "test",
                           "best_epoch": 9 if source == "b" else 4, "epochs_run": 10}  # fmt: skip
                if val is not None:
                    metrics["val"] = {"score": val}
                rows.append({"id": tid, "arm": arm, "kind": kind, "source": source, "strategy": strategy, "n": n,
                             "n_label": str(n), "seed": seed, "status": "done", "seconds": 1.0, "auc": auc,
                             "auc_ci_lo": auc - 0.05, "auc_ci_hi": auc + 0.05, "error": None,
                             "metrics": metrics})  # fmt: skip
                preds[tid] = pd.DataFrame({"image_id": ids, "patient_id": patients, "label:p": y, "score:p": score})
    return normalise_trials(pd.DataFrame(rows)), preds


@pytest.fixture(scope="module")
def grid():
    t, preds = make_grid()
    t["degenerate"] = degenerate_reasons(t)
    rep = trial_replicates(usable(t, "auc"), preds.get, "auc", n_boot=1000)
    table = findings_table(t, rep, "auc", ["radiomics"])
    return t, preds, rep, table


def test_the_collapsed_trial_is_degenerate_and_excluded(grid):
    t, _, rep, table = grid
    bad = t[t["degenerate"].notna()]
    assert bad["id"].tolist() == [COLLAPSED] and "lies entirely below" in bad["degenerate"].iloc[0]
    assert COLLAPSED not in rep.values
    s = summary_table(t, "auc", keep_degenerate=False).set_index(["arm", "n_label"]).loc[("scratch/romero", "20")]
    assert s["n_seeds"] == 2 and s["n_degenerate"] == 1
    rows = table[
        (table["n_label"] == "20") & (table["arm"].eq("scratch/romero") | table["reference"].eq("scratch/romero"))
    ]
    assert len(rows) and (rows["n_excluded"] == 1).all() and (rows["n_seeds"] == 2).all()
    text = summarize_findings(t, table, "auc", rep=rep).lines[0]
    assert "1 of 84 finished trials are degenerate" in text and "excluded" in text
    assert "scratch/romero at N = 20 1/3" in text


def test_the_families_of_the_design(grid):
    table = grid[3]
    counts = table.groupby("family").size().to_dict()
    assert counts == {
        "best_vs_next": 4,
        "source_vs_scratch": 16,  # {a, b} × {finetune, romero} × 4 N
        "source_vs_source": 8,  # a vs b × 2 strategies × 4 N
        "strategy_vs_finetune": 12,  # romero vs finetune from 3 sources × 4 N
        "best_vs_baseline": 4,
    }
    pairs = table[table["family"] == "source_vs_scratch"]
    assert set(zip(pairs["arm"], pairs["reference"], strict=True)) == {
        ("a/finetune", "scratch/finetune"), ("b/finetune", "scratch/finetune"),
        ("a/romero", "scratch/romero"), ("b/romero", "scratch/romero"),
    }  # fmt: skip
    svf = table[table["family"] == "strategy_vs_finetune"]
    for a, r in zip(svf["arm"], svf["reference"], strict=True):
        assert a.split("/")[0] == r.split("/")[0] and r.endswith("/finetune")


def test_verdicts_follow_holm_within_family(grid):
    table = grid[3]
    for _, g in table.groupby("family"):
        np.testing.assert_allclose(g["p_holm"], holm(g["p_value"].to_numpy()))
        assert (g["family_size"] == len(g)).all()
    sig = table[table["verdict"] != "no detectable difference"]
    assert len(sig) and (sig["p_holm"] < 0.05).all()
    assert ((sig["verdict"] == "better") == (sig["delta"] > 0)).all()
    assert ((sig["ci_lo"] > 0) | (sig["ci_hi"] < 0)).all()  # a verdict's own CI excludes 0
    weak = table[table["p_holm"] >= 0.05]
    assert (weak["verdict"] == "no detectable difference").all()
    strong = table[
        (table["family"] == "source_vs_scratch") & (table["arm"] == "a/finetune") & (table["n_label"] == "200")
    ]
    assert strong["verdict"].iloc[0] == "better"  # a strong source against scratch on 240 images and 3 seeds
    assert (table["n_images"] == N_TEST).all() and "by patient" in table["method"].iloc[0]


def test_best_network_is_chosen_on_validation_and_convergence_is_flagged(grid):
    t, _, rep, table = grid
    f = summarize_findings(t, table, "auc", rep=rep)
    assert all("best network by mean validation AUC" in s for s in f.per_n)
    b_rows = table[(table["arm"].str.startswith("b/")) | (table["reference"].str.startswith("b/"))]
    assert (b_rows["not_converged"].str.contains("b/")).all()  # b's best epoch was its last in every seed
    assert any("may not have converged" in s for s in f.lines)


def test_learning_curves_and_back_test(grid):
    t = grid[0]
    fits, backtest, curves = curve_fits(t, "auc", target=0.9)
    assert set(fits["arm"]) == {a for a in t["arm"] if a != "radiomics"} | {"radiomics"}
    assert set(backtest["arm"]) == set(fits["arm"]) and (backtest["n_held_out"] == 200).all()
    assert np.isfinite(backtest["abs_error"]).all() and backtest["abs_error"].mean() < 0.1
    a = fits.set_index("arm").loc["a/finetune"]
    assert a["pred_2x"] >= a["a"] - 1 and a["n_max"] == 200


def test_the_report_opens_with_the_findings(grid, tmp_path):
    t, preds, _, _ = grid
    paths = write_report(t, tmp_path, predictions=preds.get, baseline="radiomics", target=0.9)
    md = paths["report_md"].read_text(encoding="utf-8")
    assert md.split("\n## ")[1].startswith("Findings")
    found = pd.read_csv(paths["findings"], dtype={"n_label": str})
    assert (found.loc[found["verdict"] != "no detectable difference", "p_holm"] < 0.05).all()
    for sentence in paths["findings_txt"].read_text(encoding="utf-8").splitlines():
        if " is better than " in sentence or " is worse than " in sentence:
            assert "Holm-adjusted p = " in sentence
    assert "## How many labelled images?" in md and "Back-test" in md and "### Degenerate trials" in md
    assert "Test set: the test split, 240 images" in md and "prevalence" in md
