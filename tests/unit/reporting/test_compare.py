"""Paired comparisons (DeLong per seed, paired test across seeds), matching the baseline, ranking vs outcome."""

from __future__ import annotations

import itertools
import math

import numpy as np
import pandas as pd
import pytest
from scipy import stats as sps

from medtransfer.evaluation.stats import delong_test, paired_test
from medtransfer.reporting.compare import (
    MEAN_OVER_N,
    _rank_corr,
    choose_reference,
    delong_comparisons,
    matches_baseline,
    min_two_sided_p,
    paired_seed_tests,
    ranking_by_n,
    ranking_vs_realised,
)
from medtransfer.reporting.tables import normalise_trials, summary_table


def _trial(trials: pd.DataFrame, arm: str, n_label: str, seed: int) -> str:
    t = trials
    return t[(t["arm"] == arm) & (t["n_label"] == n_label) & (t["seed"] == seed)]["id"].iloc[0]


def test_delong_rows_match_delong_test_on_joined_predictions(study):
    t = normalise_trials(study.trials)
    rows, notes = delong_comparisons(t, "scratch/finetune", study.predictions)
    # Seeds per N with both trials done: cxr-ssl 2, 1 (scratch's seed 1 failed), 1 (its own seed 1 pending);
    # radiomics 2, 1, 2.
    assert len(rows) == 9 and notes == []
    for r in rows.itertuples():
        a = study.preds[_trial(t, r.arm, r.n_label, r.seed)].set_index("image_id")
        b = study.preds[_trial(t, "scratch/finetune", r.n_label, r.seed)].set_index("image_id").loc[a.index]
        want = delong_test(a["label:pneumonia"], a["score:pneumonia"], b["score:pneumonia"])
        assert (r.diff, r.p_value, r.auc_arm, r.auc_ref) == pytest.approx(
            (want["diff"], want["p_value"], want["auc_a"], want["auc_b"])
        )
        assert r.n_images == 59  # one NaN label left out


def test_delong_skips_missing_predictions_with_a_note(study):
    t = normalise_trials(study.trials)
    missing = _trial(t, "cxr-ssl/recipe", "10", 0)

    def predictions(trial_id: str) -> pd.DataFrame | None:
        if trial_id == _trial(t, "radiomics", "10", 1):
            raise OSError("disk on fire")
        return None if trial_id == missing else study.preds.get(trial_id)

    rows, notes = delong_comparisons(t, "scratch/finetune", predictions)
    assert len(rows) == 7
    assert any(missing in n and "missing" in n for n in notes)
    assert any("disk on fire" in n for n in notes)
    empty, notes = delong_comparisons(t, "scratch/finetune", None)
    assert empty.empty and "skipped" in notes[0]


def test_delong_multi_label_has_one_row_per_label(study_factory):
    multi = study_factory(labels=("effusion", "nodule"))
    rows, _ = delong_comparisons(normalise_trials(multi.trials), "scratch/finetune", multi.predictions)
    assert len(rows) == 18 and set(rows["label"]) == {"effusion", "nodule"}


def test_paired_seed_tests_match_paired_test(study):
    t = normalise_trials(study.trials)
    paired = paired_seed_tests(t, "scratch/finetune").set_index(["arm", "n_label"])
    for arm in ("cxr-ssl/recipe", "radiomics"):
        for n_label in ("10", "20", "all"):
            a = t[(t["arm"] == arm) & (t["n_label"] == n_label)].set_index("seed")["auc"]
            b = t[(t["arm"] == "scratch/finetune") & (t["n_label"] == n_label)].set_index("seed")["auc"]
            want = paired_test(a.loc[[0, 1]].to_numpy(), b.loc[[0, 1]].to_numpy())
            got = paired.loc[(arm, n_label)]
            assert got["n_pairs"] == want["n"]
            assert got["mean_diff"] == pytest.approx(want["mean_diff"])
            assert got["p_value"] == pytest.approx(want["p_value"], nan_ok=True)
    assert paired.loc[("radiomics", "20"), "n_pairs"] == 1  # scratch's seed 1 failed


def test_choose_reference():
    t = pd.DataFrame({"arm": ["a/x", "scratch/ft", "radiomics"], "source": ["a", "scratch", None]})
    assert choose_reference(t, "radiomics")[0] == "radiomics"
    assert choose_reference(t, None)[0] == "scratch/ft"
    ref, note = choose_reference(t, "nope")
    assert ref == "scratch/ft" and "'nope' is not an arm" in note
    assert choose_reference(t[t["source"] != "scratch"], None)[0] == "a/x"


def test_matches_baseline_against_direct_definition(study):
    summary = summary_table(normalise_trials(study.trials))
    got = matches_baseline(summary, "radiomics").set_index("arm")
    means = summary.pivot(index="arm", columns="n_label", values="auc_mean")[["10", "20", "all"]]
    for arm in ("scratch/finetune", "cxr-ssl/recipe"):
        ok = [n for n in means.columns if means.loc[arm, n] >= means.loc["radiomics", n]]
        assert got.loc[arm, "n_label"] == (ok[0] if ok else None)
    # The fixture is built so that the pretrained recipe matches at once and scratch only with all 40 images.
    assert got["n_label"].to_dict() == {"scratch/finetune": "all", "cxr-ssl/recipe": "10"}


def test_matches_baseline_never():
    s = pd.DataFrame(
        {
            "arm": ["b", "b", "x", "x"],
            "n_label": ["10", "20"] * 2,
            "n": [10.0, 20.0] * 2,
            "auc_mean": [0.8, 0.9, 0.7, 0.8],
        }
    )
    got = matches_baseline(s, "b")
    assert got.loc[0, "n_label"] is None and got.loc[0, "n_compared"] == 2


def _four_sources() -> pd.DataFrame:
    rows = []
    aucs = {"a": [0.70, 0.80], "b": [0.72, 0.78], "c": [0.60, 0.70], "d": [0.65, np.nan]}
    for src, values in aucs.items():
        for n_label, auc in zip(["10", "20"], values, strict=True):
            rows.append({"arm": f"{src}/ft", "kind": "net", "source": src, "strategy": "ft", "n_label": n_label})
            rows[-1]["auc_mean"] = auc
    return pd.DataFrame(rows)


def test_ranking_vs_realised_uses_common_sizes_and_scipy_correlations():
    summary = _four_sources()
    scores = {"a": 4, "b": 3, "c": 1, "d": 2}
    ranking = {"method": "logme", "rows": [{"arm_source": s, "score": v} for s, v in scores.items()]}
    table, corr = ranking_vs_realised(summary, ranking)
    # 'd' has no N=20 result, so every source is scored on N=10 only: a .70, b .72, c .60, d .65.
    assert table["arm_source"].tolist() == ["a", "b", "d", "c"]
    assert table["auc:ft"].tolist() == pytest.approx([0.70, 0.72, 0.65, 0.60])
    assert table["rank:ft"].tolist() == [2, 1, 3, 4]
    row = corr.iloc[0]
    assert row["n_labels"] == "10" and row["n_sources"] == 4 and row["n_label"] == MEAN_OVER_N
    scores, realised = [4, 3, 2, 1], [0.70, 0.72, 0.65, 0.60]
    assert row["spearman"] == pytest.approx(sps.spearmanr(scores, realised).statistic)
    assert row["kendall"] == pytest.approx(sps.kendalltau(scores, realised).statistic)
    assert (row["best_predicted"], row["best_realised"]) == ("a", "b")


def _brute_force_p(x, y, statistic) -> float:
    """Two-sided p over every ordering of ``x`` against ``y``, by enumeration."""
    seen = statistic(x, y)
    null = np.array([statistic(np.array(p), y) for p in itertools.permutations(x)])
    tol = 1e-9
    return min(1.0, 2 * min(np.mean(null >= seen - tol), np.mean(null <= seen + tol)))


def test_exact_p_for_a_perfect_order_of_four_sources_is_2_of_24():
    x = np.array([4.0, 3.0, 2.0, 1.0])
    for y in (x * 0.1, -x):
        r = _rank_corr(x, y)
        assert abs(r["spearman"]) == 1.0 and abs(r["kendall"]) == 1.0
        assert r["spearman_p"] == pytest.approx(2 / 24) and r["kendall_p"] == pytest.approx(2 / 24)
        assert r["spearman_exact"] and r["kendall_exact"] and r["min_p"] == pytest.approx(2 / 24)
    assert sps.spearmanr(x, x).pvalue < 0.001  # the asymptotic p this replaces


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_exact_p_values_match_enumeration_with_and_without_ties(seed):
    rng = np.random.default_rng(seed)
    n = 4 + seed  # up to 6! = 720 orderings to enumerate
    x, y = rng.integers(0, 4, size=n).astype(float), rng.normal(size=n)  # x has ties
    if np.ptp(x) == 0:
        x[0] += 1
    for a, b in ((x, y), (y, y + rng.normal(size=n))):
        r = _rank_corr(a, b)
        spearman = _brute_force_p(sps.rankdata(a), sps.rankdata(b), lambda u, v: np.corrcoef(u, v)[0, 1])
        kendall = _brute_force_p(a, b, lambda u, v: sps.kendalltau(u, v).statistic)
        assert r["spearman"] == pytest.approx(sps.spearmanr(a, b).statistic)
        assert r["kendall"] == pytest.approx(sps.kendalltau(a, b).statistic)
        assert r["spearman_p"] == pytest.approx(spearman) and r["kendall_p"] == pytest.approx(kendall)
        assert r["spearman_exact"] and r["kendall_exact"] and r["min_p"] == pytest.approx(2 / math.factorial(n))


def test_many_sources_fall_back_to_asymptotic_spearman():
    rng = np.random.default_rng(0)
    x, y = rng.normal(size=10), rng.normal(size=10)
    r = _rank_corr(x, y)
    assert not r["spearman_exact"] and r["spearman_p"] == pytest.approx(sps.spearmanr(x, y).pvalue)
    assert r["kendall_exact"] and r["kendall_p"] == pytest.approx(sps.kendalltau(x, y, method="exact").pvalue)
    assert math.isnan(_rank_corr(x[:2], y[:2])["spearman_p"]) and math.isnan(_rank_corr(x, np.ones(10))["min_p"])


def test_smallest_attainable_p():
    assert [round(min_two_sided_p(n), 4) for n in (3, 4, 5, 8)] == [0.3333, 0.0833, 0.0167, 0.0]
    assert math.isnan(min_two_sided_p(2))


def _per_n_ranking(scores_at: dict[str, dict[str, float]]) -> dict:
    by_n = [
        {
            "n_label": lab,
            "n": 40 if lab == "all" else int(lab),
            "n_images": 40 if lab == "all" else int(lab),
            "rows": [{"arm_source": s, "source": s, "score": v, "probe_auc": None} for s, v in scores.items()],
        }
        for lab, scores in scores_at.items()
    ]
    pool = [{"arm_source": s, "score": v, "seconds": 1.0} for s, v in scores_at["all"].items()]
    return {"method": "logme", "n_images": 40, "rows": pool, "by_n": by_n}


@pytest.mark.parametrize("numeric_labels", [False, True])
def test_ranking_vs_realised_per_n(numeric_labels):
    summary = _four_sources()  # ft at N=10: a .70 b .72 c .60 d .65; N=20: a .80 b .78 c .70 (d none)
    if numeric_labels:  # a study whose sizes have no 'all' comes back with integer size labels
        summary["n_label"] = summary["n_label"].astype(int)
    ranking = _per_n_ranking(
        {
            "10": {"a": 1.0, "b": 2.0, "c": -1.0, "d": 0.0},  # the realised order at 10: b a d c
            "20": {"a": 3.0, "b": 2.0, "c": 1.0, "d": 0.0},  # at 20: a b c (d has no result)
            "all": {"a": 0.0, "b": 1.0, "c": 2.0, "d": 3.0},  # no arm ran at 'all' yet: no row
        }
    )
    table, corr = ranking_vs_realised(summary, ranking)
    assert corr["n_label"].tolist() == ["10", "20"] and MEAN_OVER_N not in set(corr["n_label"])
    assert corr["n"].tolist() == [10, 20] and corr["n_sources"].tolist() == [4, 3]
    at10, at20 = corr.iloc[0], corr.iloc[1]
    assert at10["spearman"] == 1.0 and at10["spearman_p"] == pytest.approx(2 / 24)
    assert at10["min_p"] == pytest.approx(2 / 24) and (at10["best_predicted"], at10["best_realised"]) == ("b", "b")
    assert at20["spearman"] == 1.0 and at20["spearman_p"] == pytest.approx(2 / 6) and at20["best_realised"] == "a"
    # the table keeps the whole-pool order and adds the score and predicted rank at each N
    assert table["arm_source"].tolist() == ["d", "c", "b", "a"]
    assert table["predicted_rank@10"].tolist() == [3, 4, 1, 2] and table["score@20"].tolist() == [0.0, 1.0, 2.0, 3.0]


def test_ranking_by_n_reads_nulls_and_old_files():
    ranking = _per_n_ranking({"10": {"a": None, "b": 1.0}, "all": {"a": 2.0, "b": 1.0}})
    long = ranking_by_n(ranking)
    assert long[["n_label", "arm_source", "predicted_rank"]].values.tolist() == [
        ["10", "b", 1],
        ["10", "a", 2],
        ["all", "a", 1],
        ["all", "b", 2],
    ]
    assert long["probe_auc"].isna().all() and math.isnan(long.loc[1, "score"])
    assert ranking_by_n({"rows": []}).empty and ranking_by_n(None).empty


def test_ranking_with_too_few_sources_has_no_correlation():
    summary = _four_sources()
    table, corr = ranking_vs_realised(summary, {"rows": [{"arm_source": "a", "score": 1.0}, {"arm_source": "z"}]})
    assert math.isnan(corr.loc[0, "spearman"]) and corr.loc[0, "n_sources"] == 1
    assert math.isnan(table.set_index("arm_source").loc["z", "auc:ft"])


@pytest.mark.parametrize("labels", [["10", "20"], [10, 20]])
def test_baseline_section_when_an_arm_never_matches(labels):
    """An arm below the baseline at every N beside one that matches, with string or numeric size labels (the
    demo's sizes 20/60/200 have no 'all' and came back as integers): 'never', not a crash."""
    from medtransfer.reporting.document import to_markdown
    from medtransfer.reporting.sections import baseline_section

    s = pd.DataFrame(
        {
            "arm": ["b", "b", "x", "x", "y", "y"],
            "n_label": labels * 3,
            "n": [10.0, 20.0] * 3,
            "auc_mean": [0.8, 0.9, 0.7, 0.8, 0.6, 0.95],
        }
    )
    text = to_markdown(baseline_section(s, "b", pd.Series(["10", "20"], index=labels)))
    assert "| x | never |" in text and "| y | 20 |" in text


def test_arm_pairs_compare_any_two_arms_both_ways(study):
    from medtransfer.errors import UserError
    from medtransfer.reporting.compare import arm_pairs

    t = normalise_trials(study.trials)
    rows, _ = arm_pairs(t, [("cxr-ssl/recipe", "radiomics"), ("radiomics", "cxr-ssl/recipe")], study.predictions)
    there = rows[rows["arm"] == "cxr-ssl/recipe"].set_index("n_label")
    back = rows[rows["arm"] == "radiomics"].set_index("n_label")
    assert np.allclose(there["mean_diff"], -back["mean_diff"])  # the same pairs, the sign flipped
    assert (there["delong_better"] == back["delong_worse"]).all() and (
        there["delong_worse"] == back["delong_better"]
    ).all()
    expected = paired_seed_tests(t[t["arm"].isin(["cxr-ssl/recipe", "radiomics"])], "radiomics")
    assert np.allclose(
        there["paired_t_p"].to_numpy(float), expected.set_index("n_label")["p_value"].to_numpy(float), equal_nan=True
    )
    d, _ = delong_comparisons(t[t["arm"].isin(["cxr-ssl/recipe", "radiomics"])], "radiomics", study.predictions)
    assert int(there["delong_seeds"].sum()) == len(d)
    with pytest.raises(UserError, match="did you mean 'cxr-ssl/recipe'"):
        arm_pairs(t, [("cxr-ssl/recipes", "radiomics")], study.predictions)
