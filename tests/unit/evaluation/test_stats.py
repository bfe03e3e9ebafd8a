"""Bootstrap CIs, DeLong's test (against a direct O(m*n) implementation) and paired tests."""

from __future__ import annotations

import math
import time

import numpy as np
import pytest
from scipy import stats as sps
from sklearn.metrics import roc_auc_score

from medtransfer.evaluation.stats import (
    bootstrap_auc_ci,
    delong_ci,
    delong_covariance,
    delong_test,
    paired_test,
    rank_auc,
    weighted_auc,
)


def _binormal(rng: np.random.Generator, n: int, d: float = 1.0, ties: bool = False):
    y = (rng.random(n) < 0.4).astype(float)
    s = rng.normal(size=n) + d * y
    return y, (np.round(s, 1) if ties else s)


# ---- rank-based AUC (the bootstrap kernel) ----------------------------------------------------------


def test_rank_auc_matches_sklearn_with_ties(rng):
    y = rng.integers(0, 2, 300)
    s = rng.integers(0, 5, 300).astype(float)  # heavy ties
    assert rank_auc(y, s) == pytest.approx(roc_auc_score(y, s), abs=1e-12)
    assert weighted_auc(y, s)[0] == pytest.approx(roc_auc_score(y, s), abs=1e-12)
    assert math.isnan(rank_auc([1, 1, np.nan], [0.1, 0.2, 0.3]))


def test_weighted_auc_equals_sklearn_on_repeated_cases(rng):
    y = rng.integers(0, 2, 80).astype(float)
    s = np.round(y + rng.normal(size=80), 1)
    y[:5] = np.nan  # unknown labels are ignored
    w = rng.integers(0, 4, (3, 80))
    out = weighted_auc(y, s, w)
    keep = ~np.isnan(y)
    for b in range(3):
        rep = np.repeat(np.flatnonzero(keep), w[b, keep])
        assert out[b] == pytest.approx(roc_auc_score(y[rep], s[rep]), abs=1e-12)
    assert math.isnan(weighted_auc([0, 1], [0.1, 0.2], [[1, 0]])[0])  # one class in the replicate


# ---- bootstrap -----------------------------------------------------------------------------------------


def test_bootstrap_contains_point_estimate_and_is_deterministic(rng):
    y = rng.integers(0, 2, (400, 3)).astype(float)
    s = y + rng.normal(size=y.shape) * 1.5
    y[rng.random(y.shape) < 0.2] = np.nan
    macro, per = bootstrap_auc_ci(y, s, n_boot=300, seed=1)
    aucs = [rank_auc(y[:, j], s[:, j]) for j in range(3)]
    for (lo, hi), auc in zip(per, aucs, strict=True):
        assert lo < auc < hi
    assert macro[0] < np.mean(aucs) < macro[1]
    assert bootstrap_auc_ci(y, s, n_boot=300, seed=1) == (macro, per)
    assert bootstrap_auc_ci(y, s, n_boot=300, seed=2) != (macro, per)


def test_bootstrap_narrows_with_more_data(rng):
    widths = []
    for n in (200, 2000):
        y, s = _binormal(rng, n)
        (lo, hi), _ = bootstrap_auc_ci(y, s, n_boot=300)
        widths.append(hi - lo)
    assert widths[1] < widths[0] / 2  # ~ 1/sqrt(10) in theory


def test_patient_bootstrap_is_wider_for_duplicated_images(rng):
    y, s = _binormal(rng, 150)
    y5, s5, patients = np.repeat(y, 5), np.repeat(s, 5), np.repeat(np.arange(150), 5)
    (lo_i, hi_i), _ = bootstrap_auc_ci(y5, s5, n_boot=400)
    (lo_p, hi_p), _ = bootstrap_auc_ci(y5, s5, groups=patients.astype(str), n_boot=400)
    (lo_o, hi_o), _ = bootstrap_auc_ci(y, s, n_boot=400)
    assert hi_p - lo_p > 1.5 * (hi_i - lo_i)  # ~ sqrt(5) in theory
    assert hi_p - lo_p == pytest.approx(hi_o - lo_o, rel=0.25)  # five copies carry one patient's information


def test_bootstrap_skips_one_class_replicates():
    y = np.zeros((40, 2))
    y[0, 0] = 1.0  # one positive: many replicates miss it
    s = np.linspace(0, 1, 40)[:, None].repeat(2, axis=1)
    macro, (ci_rare, ci_none) = bootstrap_auc_ci(y, s, n_boot=200)
    assert all(math.isfinite(v) for v in ci_rare + macro)
    assert all(math.isnan(v) for v in ci_none)


def test_bootstrap_speed():
    rng = np.random.default_rng(0)
    y, s = _binormal(rng, 5000, ties=True)
    start = time.perf_counter()
    bootstrap_auc_ci(y, s, n_boot=1000)
    # Target is < 2 s; the bound is loose so a busy CI machine does not fail it.
    assert time.perf_counter() - start < 4.0


# ---- DeLong --------------------------------------------------------------------------------------------


def _slow_delong(y: np.ndarray, scores: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """DeLong et al. (1988) structural components, written directly from the paper."""
    pos, neg = scores[:, y == 1], scores[:, y == 0]
    m, n = pos.shape[1], neg.shape[1]
    # psi[r, i, j] = 1 if positive i beats negative j under model r, 1/2 on a tie
    psi = (pos[:, :, None] > neg[:, None, :]) + 0.5 * (pos[:, :, None] == neg[:, None, :])
    aucs = psi.mean(axis=(1, 2))
    v10, v01 = psi.mean(axis=2), psi.mean(axis=1)
    s10 = (v10 - aucs[:, None]) @ (v10 - aucs[:, None]).T / (m - 1)
    s01 = (v01 - aucs[:, None]) @ (v01 - aucs[:, None]).T / (n - 1)
    return aucs, s10 / m + s01 / n


@pytest.mark.parametrize("ties", [False, True])
def test_fast_delong_equals_direct_computation(rng, ties):
    y, _ = _binormal(rng, 150)
    scores = np.stack([y + rng.normal(size=150), y * 0.5 + rng.normal(size=150), rng.normal(size=150)])
    if ties:
        scores = np.round(scores)
    aucs, cov = delong_covariance(y, scores)
    slow_aucs, slow_cov = _slow_delong(y, scores)
    np.testing.assert_allclose(aucs, slow_aucs, atol=1e-12)
    np.testing.assert_allclose(cov, slow_cov, atol=1e-12)
    for r in range(3):
        assert aucs[r] == pytest.approx(roc_auc_score(y, scores[r]), abs=1e-12)


def test_delong_identical_scores():
    rng = np.random.default_rng(3)
    y, s = _binormal(rng, 100)
    r = delong_test(y, s, s)
    assert r["diff"] == 0 and r["z"] == 0 and r["p_value"] == 1.0
    assert r["auc_a"] == r["auc_b"] == pytest.approx(roc_auc_score(y, s))


def test_delong_against_a_perfect_model(rng):
    y, s = _binormal(rng, 200)
    perfect = y + 10.0  # every positive above every negative: no variance
    r = delong_test(y, perfect, s)
    single = delong_ci(y, s)
    assert r["auc_a"] == 1.0
    # Var(diff) reduces to the other model's variance, so z = (1 - AUC_b) / SE_b.
    assert r["se"] == pytest.approx(single["se"], rel=1e-10)
    assert r["z"] == pytest.approx((1 - single["auc"]) / single["se"], rel=1e-10)
    assert r["p_value"] == pytest.approx(2 * sps.norm.sf(r["z"]))
    swapped = delong_test(y, s, perfect)
    assert swapped["z"] == pytest.approx(-r["z"]) and swapped["p_value"] == pytest.approx(r["p_value"])
    assert r["ci"][0] < r["diff"] < r["ci"][1]


def test_delong_hanley_mcneil_ratings_example():
    # Hanley & McNeil (1982), Radiology 143:29, Table 1: 5-point CT ratings of 58 normal and 51 abnormal
    # cases; published AUC 0.893, SE 0.032 (their exponential approximation, not DeLong's, so loose).
    neg_counts, pos_counts = [33, 6, 6, 11, 2], [3, 2, 2, 11, 33]
    ratings = np.arange(1, 6)
    s = np.r_[np.repeat(ratings, neg_counts), np.repeat(ratings, pos_counts)].astype(float)
    y = np.r_[np.zeros(58), np.ones(51)]
    r = delong_ci(y, s)
    assert r["auc"] == pytest.approx(0.893, abs=5e-4)
    assert r["se"] == pytest.approx(0.032, abs=0.003)
    assert r["ci"][0] < r["auc"] < r["ci"][1]


def test_delong_ci_coverage_binormal():
    rng = np.random.default_rng(123)
    d, reps = 1.0, 300
    true_auc = sps.norm.cdf(d / np.sqrt(2))
    hits = 0
    for _ in range(reps):
        y = np.r_[np.ones(60), np.zeros(60)]
        s = rng.normal(size=120) + d * y
        lo, hi = delong_ci(y, s)["ci"]
        hits += lo <= true_auc <= hi
    assert 0.90 <= hits / reps <= 0.985


def test_delong_degenerate_inputs_warn_not_crash():
    with pytest.warns(UserWarning, match="both classes"):
        r = delong_test([1, 1, 1], [0.1, 0.2, 0.3], [0.3, 0.2, 0.1])
    assert math.isnan(r["auc_a"]) and math.isnan(r["p_value"])
    with pytest.warns(UserWarning, match=">= 2 cases"):
        r = delong_ci([0, 1, 0, 0], [0.1, 0.9, 0.2, 0.3])
    assert r["auc"] == 1.0 and math.isnan(r["se"])


# ---- paired tests --------------------------------------------------------------------------------------


def test_paired_test_matches_scipy(rng):
    a = 0.8 + rng.normal(scale=0.02, size=8)
    b = a - 0.01 + rng.normal(scale=0.01, size=8)
    r = paired_test(a, b)
    t = sps.ttest_rel(a, b)
    assert r["n"] == 8 and r["t"] == pytest.approx(t.statistic) and r["p_value"] == pytest.approx(t.pvalue)
    assert r["wilcoxon_p"] == pytest.approx(sps.wilcoxon(a - b).pvalue)
    assert r["mean_diff"] == pytest.approx(np.mean(a - b))
    assert r["sd_diff"] == pytest.approx(np.std(a - b, ddof=1))


def test_paired_test_small_and_degenerate_samples():
    two = paired_test([0.80, 0.82], [0.78, 0.79])
    assert two["n"] == 2 and 0 < two["p_value"] < 1 and two["wilcoxon_p"] == pytest.approx(0.5)
    three = paired_test([0.80, 0.82, np.nan], [0.78, 0.79, 0.7])  # NaN pair dropped
    assert three["n"] == 2
    same = paired_test([0.8, 0.7, 0.9], [0.8, 0.7, 0.9])
    assert same["mean_diff"] == 0 and math.isnan(same["p_value"]) and math.isnan(same["wilcoxon_p"])
    one = paired_test([0.8], [0.7])
    assert one["n"] == 1 and math.isnan(one["sd_diff"]) and math.isnan(one["t"])
    assert paired_test([], [])["n"] == 0
    with pytest.raises(ValueError, match="same length"):
        paired_test([1, 2], [1])
