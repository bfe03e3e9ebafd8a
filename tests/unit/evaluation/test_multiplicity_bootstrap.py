"""Holm and Benjamini–Hochberg against hand-worked values; the two-level bootstrap against a closed form; the
regression verdict and its test are about the same statistic."""

from __future__ import annotations

import math

import numpy as np
import pytest

from medtransfer.evaluation.regression import paired_errors_test
from medtransfer.evaluation.stats import benjamini_hochberg, bootstrap_weights, holm, two_level_bootstrap

P = [0.01, 0.04, 0.03, 0.005]


def test_holm_by_hand():
    # sorted: 0.005, 0.01, 0.03, 0.04 (m = 4) -> 4*0.005=0.02, 3*0.01=0.03, 2*0.03=0.06, 1*0.04=0.04 -> max so far
    assert holm(P).tolist() == pytest.approx([0.03, 0.06, 0.06, 0.02])
    assert holm([0.5, 0.9]).tolist() == pytest.approx([1.0, 1.0])  # capped at 1
    out = holm([0.01, float("nan"), 0.02])  # NaN stays NaN and does not count in m
    assert out[0] == pytest.approx(0.02) and math.isnan(out[1]) and out[2] == pytest.approx(0.02)


def test_bh_by_hand():
    # sorted 0.005, 0.01, 0.03, 0.04: p*m/rank = 0.02, 0.02, 0.04, 0.04; then the running minimum from the top
    assert benjamini_hochberg(P).tolist() == pytest.approx([0.02, 0.04, 0.04, 0.02])
    assert math.isnan(benjamini_hochberg([0.01, float("nan")])[1])


def test_pneumonia_pairs_counts_are_reproducible():
    """85 p-values like the old pairs.csv: Holm never keeps more than BH, BH never more than the raw p < 0.05."""
    rng = np.random.default_rng(0)
    p = np.concatenate([rng.uniform(0, 0.01, 30), rng.uniform(0, 1, 55)])
    raw, bh, hb = (p < 0.05).sum(), (benjamini_hochberg(p) < 0.05).sum(), (holm(p) < 0.05).sum()
    assert raw >= bh >= hb


def _additive(s: int, n: int, sd_seed: float, sd_image: float, rng):
    u = rng.normal(0, sd_seed, s)
    v = rng.normal(0, sd_image, n)
    return u, v


def test_two_level_bootstrap_matches_the_closed_form():
    """d[s, i] = u_s + v_i, a mean statistic: a replicate is the mean of S resampled u plus the weighted mean of v on
    one shared image draw, so its variance is var_pop(u)/S + var_pop(v)/N (multinomial draws)."""
    rng = np.random.default_rng(1)
    s, n, n_boot = 5, 400, 20000
    u, v = _additive(s, n, 0.03, 0.2, rng)
    d = u[:, None] + v[None, :]
    reps = np.zeros((s, n_boot))
    start = 0
    for w in bootstrap_weights(n, None, n_boot, seed=3):
        reps[:, start : start + len(w)] = (w @ d.T / w.sum(axis=1, keepdims=True)).T
        start += len(w)
    res = two_level_bootstrap(reps, d.mean(axis=1), seed=4)
    expected = math.sqrt(u.var() / s + v.var() / n)
    assert res.estimate == pytest.approx(d.mean())
    assert res.se == pytest.approx(expected, rel=0.03)
    assert res.lo < d.mean() < res.hi and res.n_seeds == s and res.n_boot == n_boot


def test_two_level_bootstrap_covers_both_levels():
    """With all the spread in the seeds the image level adds nothing, and the other way round."""
    rng = np.random.default_rng(2)
    seeds_only = two_level_bootstrap(np.repeat(rng.normal(0, 1, (4, 1)), 5000, axis=1), np.zeros(4), seed=0)
    images_only = two_level_bootstrap(np.repeat(rng.normal(0, 1, (1, 5000)), 4, axis=0), np.zeros(4), seed=0)
    assert seeds_only.se > 0 and images_only.se > 0
    same = two_level_bootstrap(np.zeros((3, 100)), np.zeros(3))
    assert same.p_value == 1.0 and same.estimate == 0.0


def test_a_significant_p_comes_with_a_ci_that_excludes_zero():
    rng = np.random.default_rng(3)
    for shift in (0.0, 0.01, 0.03, 0.1):
        r = two_level_bootstrap(shift + rng.normal(0, 0.02, (3, 2000)), shift + rng.normal(0, 0.005, 3), seed=1)
        if r.p_value < 0.05:
            assert r.lo > 0 or r.hi < 0


def test_the_mae_example_is_judged_by_the_mae_difference():
    """Issue [1/4]: reference error 10 on 129 images; the arm's error 9 on 100 and 20 on 29. The old report took the
    sign of ΔMAE (+1.47: worse) and the p of a Wilcoxon test on per-image errors (0.032), which favours the arm (it is
    better on 100 of 129 images): the label and its test were about different statistics. Now both are ΔMAE."""
    y = np.zeros(129)
    ref = np.full(129, 10.0)
    arm = np.array([9.0] * 100 + [20.0] * 29)
    r = paired_errors_test(y, arm, ref)
    assert r["delta_mae"] == pytest.approx(1.4729, abs=1e-4)
    lo, hi = r["ci"]
    # the CI of the same ΔMAE: about ±1.96 * sd(d)/sqrt(129) = ±0.79
    assert lo == pytest.approx(1.47 - 0.79, abs=0.15) and hi == pytest.approx(1.47 + 0.79, abs=0.15)
    assert r["p_value"] < 0.05 and lo > 0  # sign, CI and p agree: the arm's MAE is higher
    from scipy import stats as sps

    d = np.abs(arm - y) - np.abs(ref - y)
    ranks = sps.rankdata(np.abs(d))
    assert ranks[d > 0].sum() < ranks[d < 0].sum()  # the signed ranks favour the arm: the old label's p said "better"
    assert sps.wilcoxon(d).pvalue == pytest.approx(0.032, abs=0.002)


def test_clustered_delong_equals_delong_with_one_image_per_patient_and_counts_copies_once():
    """Obuchowski (1997): singleton clusters give DeLong's covariance; every image copied twice into its patient's
    cluster gives the original variance back, where the unclustered DeLong halves it (it thinks it has 2x the data)."""
    from medtransfer.evaluation.stats import delong_covariance, delong_test

    rng = np.random.default_rng(5)
    y = (rng.random(120) < 0.4).astype(float)
    a, b = y + rng.normal(size=120), 0.5 * y + rng.normal(size=120)
    aucs, cov = delong_covariance(y, [a, b])
    aucs1, cov1 = delong_covariance(y, [a, b], groups=np.arange(120))
    np.testing.assert_allclose(cov1, cov, rtol=1e-12)
    y2, a2, b2, g2 = np.repeat(y, 2), np.repeat(a, 2), np.repeat(b, 2), np.repeat(np.arange(120), 2)
    aucs2, cov2 = delong_covariance(y2, [a2, b2], groups=g2)
    _, naive = delong_covariance(y2, [a2, b2])
    np.testing.assert_allclose(aucs2, aucs)
    np.testing.assert_allclose(cov2, cov, rtol=1e-9)
    assert naive[0, 0] < 0.6 * cov[0, 0]
    assert delong_test(y2, a2, b2, groups=g2)["p_value"] == pytest.approx(delong_test(y, a, b)["p_value"], rel=1e-6)


def test_clustered_delong_with_mixed_clusters_matches_a_direct_formula():
    from medtransfer.evaluation.stats import delong_covariance

    rng = np.random.default_rng(6)
    g = rng.integers(0, 25, 90)
    y = (rng.random(90) < 0.5).astype(float)
    s = y + rng.normal(size=90)
    auc, cov = delong_covariance(y, [s], groups=g)
    pos, neg = s[y == 1], s[y == 0]
    psi = (pos[:, None] > neg[None, :]) + 0.5 * (pos[:, None] == neg[None, :])
    theta = psi.mean()
    v10, v01 = psi.mean(axis=1), psi.mean(axis=0)
    ids = np.unique(g)
    xs = np.array([v10[g[y == 1] == i].sum() for i in ids])
    ys = np.array([v01[g[y == 0] == i].sum() for i in ids])
    m = np.array([(g[y == 1] == i).sum() for i in ids])
    n = np.array([(g[y == 0] == i).sum() for i in ids])
    big_m, big_n, i10, i01, big_i = m.sum(), n.sum(), (m > 0).sum(), (n > 0).sum(), len(ids)
    s10 = i10 / ((i10 - 1) * big_m) * ((xs - m * theta) ** 2).sum()
    s01 = i01 / ((i01 - 1) * big_n) * ((ys - n * theta) ** 2).sum()
    s11 = big_i / (big_i - 1) * ((xs - m * theta) * (ys - n * theta)).sum()
    assert auc[0] == pytest.approx(theta)
    assert cov[0, 0] == pytest.approx(s10 / big_m + s01 / big_n + 2 * s11 / (big_m * big_n), rel=1e-10)
