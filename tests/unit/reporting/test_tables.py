"""results.csv and summary.csv against direct pandas/numpy computations; the CLI's plain-text table."""

from __future__ import annotations

import math
import warnings

import numpy as np
import pandas as pd
import pytest
from scipy import stats as sps

from medtransfer.reporting.tables import (
    CI_BOOTSTRAP,
    CI_TWO_LEVEL,
    RESULT_COLUMNS,
    format_summary_table,
    mean_ci,
    n_levels,
    normalise_trials,
    results_table,
    summary_table,
)


def _read(path) -> pd.DataFrame:
    return pd.read_csv(path, dtype={"n_label": str})


def test_results_csv_has_one_row_per_trial(study, report):
    res = _read(report["results"])
    assert list(res.columns) == RESULT_COLUMNS  # one label: no per-label columns
    assert len(res) == len(study.trials) == 18
    assert res["id"].tolist() == study.trials["id"].tolist()
    row = res.set_index("id").loc[study.failed_id]
    assert row["status"] == "failed" and "CUDA out of memory" in row["error"] and math.isnan(row["auc"])
    assert res.set_index("id").loc[study.pending_id, "status"] == "pending"
    done = study.trials[study.trials["status"] == "done"].set_index("id")
    np.testing.assert_allclose(res.set_index("id").loc[done.index, "auc"], done["auc"])


def test_results_have_per_label_columns_when_several_labels(study_factory):
    multi = study_factory(labels=("effusion", "nodule"))
    res = results_table(normalise_trials(multi.trials))
    assert list(res.columns) == RESULT_COLUMNS + ["auc:effusion", "auc:nodule"]
    first = multi.trials.iloc[0]
    assert res.loc[0, "auc:nodule"] == pytest.approx(first["metrics"]["per_label"]["nodule"]["auc"])
    assert res["auc:effusion"].isna().sum() == 2  # the failed and the pending trial


def test_summary_matches_direct_computation(study, report):
    summary = _read(report["summary"])
    t = study.trials
    ok = t[(t["status"] == "done") & t["auc"].notna()]
    for (arm, n_label), g in ok.groupby(["arm", "n_label"]):
        row = summary[(summary["arm"] == arm) & (summary["n_label"] == n_label)].iloc[0]
        assert row["n_seeds"] == len(g)
        assert row["auc_mean"] == pytest.approx(g["auc"].mean())
        assert row["seconds_mean"] == pytest.approx(g["seconds"].mean())
        if len(g) >= 2:
            lo, hi = sps.t.interval(0.95, len(g) - 1, loc=g["auc"].mean(), scale=sps.sem(g["auc"]))
            assert row["auc_sd"] == pytest.approx(g["auc"].std(ddof=1))
            assert (row["auc_t_lo"], row["auc_t_hi"]) == pytest.approx((max(lo, 0.0), min(hi, 1.0)))  # clipped
            assert row["ci_method"] == CI_TWO_LEVEL  # the shown CI: seeds, then test images
            assert 0 <= row["auc_ci_lo"] < row["auc_ci_hi"] <= 1
        else:  # one seed: that trial's bootstrap CI
            assert (row["auc_ci_lo"], row["auc_ci_hi"]) == pytest.approx(
                (g["auc_ci_lo"].iloc[0], g["auc_ci_hi"].iloc[0])
            )
            assert row["ci_method"] == CI_BOOTSTRAP and math.isnan(row["auc_sd"])
    failed = summary.set_index(["arm", "n_label"]).loc[("scratch/finetune", "20")]
    assert (failed["n_failed"], failed["n_seeds"], failed["n_pending"]) == (1, 1, 0)
    pending = summary.set_index(["arm", "n_label"]).loc[("cxr-ssl/recipe", "all")]
    assert (pending["n_pending"], pending["n_seeds"]) == (1, 1)
    assert len(summary) == 9 and summary["n"].tolist() == [10, 20, 40] * 3


def test_n_levels_order_and_all_label():
    t = normalise_trials(
        pd.DataFrame(
            {"id": list("abcd"), "arm": "x", "n_label": ["all", "100", "50", "all"], "n": [800, 100, 50, np.nan]}
        ).assign(seed=0, status="done")
    )
    assert n_levels(t)["tick"].tolist() == ["50", "100", "all (800)"]


def test_summary_handles_failed_only_arm_and_nan_auc_without_warnings():
    t = pd.DataFrame(
        {
            "id": ["a", "b", "c"],
            "arm": ["broken", "broken", "odd"],
            "n_label": "10",
            "n": 10,
            "seed": [0, 1, 0],
            "status": ["failed", "failed", "done"],
            "auc": [np.nan, np.nan, np.nan],
        }
    )
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        s = summary_table(normalise_trials(t))
        text = format_summary_table(s)
        assert mean_ci(np.array([])) == pytest.approx((math.nan,) * 4, nan_ok=True)
    assert s["n_seeds"].tolist() == [0, 0] and s["auc_mean"].isna().all()
    assert "failed" in text and "no AUC" in text


def test_normalise_names_missing_columns():
    with pytest.raises(ValueError, match=r"lacks columns \['seed', 'status'\]"):
        normalise_trials(pd.DataFrame({"id": ["a"], "arm": ["x"], "n_label": ["10"]}))


def test_format_summary_table(study, report):
    text = format_summary_table(_read(report["summary"]))
    lines = text.splitlines()
    assert lines[0].split() == ["arm", "N=10", "N=20", "N=all", "(40)"]
    s = _read(report["summary"]).set_index(["arm", "n_label"])
    r = s.loc[("cxr-ssl/recipe", "10")]
    assert f"{r['auc_mean']:.3f} [{r['auc_ci_lo']:.3f}, {r['auc_ci_hi']:.3f}]" in text
    assert len(lines) == 2 + 3


def test_format_summary_table_shows_pending():
    t = pd.DataFrame({"id": ["a"], "arm": ["x"], "n_label": ["10"], "seed": [0], "status": ["pending"]})
    assert "pending" in format_summary_table(summary_table(normalise_trials(t)))


def test_format_summary_table_reads_back_csv_without_dtypes(report, tmp_path):
    # The CLI reads summary.csv with plain pd.read_csv: numeric n_labels come back as integers.
    assert format_summary_table(pd.read_csv(report["summary"])).splitlines()[0].split()[1:3] == ["N=10", "N=20"]
    t = pd.DataFrame({"id": ["a", "b"], "arm": "x", "n_label": ["10", "20"], "n": [10, 20], "seed": 0})
    summary = summary_table(normalise_trials(t.assign(status="done", auc=[0.6, 0.7])))
    summary.to_csv(tmp_path / "s.csv", index=False)
    assert format_summary_table(pd.read_csv(tmp_path / "s.csv")).splitlines()[2].split() == ["x", "0.600", "0.700"]
