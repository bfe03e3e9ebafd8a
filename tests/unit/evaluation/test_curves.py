"""Learning curves: inverse-power-law fit, N needed for a target, seed bootstrap bands and back-testing."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest

from medtransfer.evaluation.curves import PowerLaw, back_test, fit_power_law, learning_curve

LEVELS = np.array([50, 100, 200, 500, 1000, 2000], dtype=float)
AUC_LAW = PowerLaw(a=0.92, b=0.6, c=0.5, higher_is_better=True)
MAE_LAW = PowerLaw(a=5.0, b=40.0, c=0.4, higher_is_better=False)


def _trials(law: PowerLaw, sd: float, n_seeds: int = 3, rng_seed: int = 0, levels: np.ndarray = LEVELS):
    """One trial per (level, seed): the true curve plus Gaussian noise of standard deviation ``sd``."""
    rng = np.random.default_rng(rng_seed)
    n = np.repeat(levels, n_seeds)
    seeds = np.tile(np.arange(n_seeds), levels.size)
    return n, law.predict(n) + rng.normal(0.0, sd, n.size), seeds


# ---- fit_power_law -------------------------------------------------------------------------------------


def test_noiseless_fit_is_exact():
    for law, bounds in ((AUC_LAW, (0.0, 1.0)), (MAE_LAW, (0.0, math.inf))):
        n = np.repeat(LEVELS, 2)
        fit = fit_power_law(n, law.predict(n), higher_is_better=law.higher_is_better, bounds=bounds)
        assert fit is not None and fit.higher_is_better == law.higher_is_better
        assert fit.a == pytest.approx(law.a, abs=1e-6)
        assert fit.b == pytest.approx(law.b, rel=1e-4)
        assert fit.c == pytest.approx(law.c, abs=1e-5)


def test_recovers_auc_curve_from_noisy_seeds():
    # Tolerances ~ the 95th percentile of the errors over 300 noise draws of this design (sd 0.005, 3 seeds):
    # a and c trade off against each other, so the parameters are loose while the curve itself is tight.
    n, y, _ = _trials(AUC_LAW, sd=0.005)
    fit = fit_power_law(n, y, higher_is_better=True, bounds=(0.0, 1.0))
    assert fit is not None
    assert abs(fit.a - 0.92) < 0.05
    assert 0.6 / 2.6 < fit.b < 0.6 * 2.6
    assert abs(fit.c - 0.5) < 0.35
    grid = np.geomspace(50, 2000, 30)
    assert np.max(np.abs(fit.predict(grid) - AUC_LAW.predict(grid))) < 0.008  # worst at n = 50 (least weight)
    assert np.all(np.diff(fit.predict(grid)) > 0)


def test_recovers_lower_is_better_mae_curve():
    # MAE-like scale (values ~13 down to ~7), noise sd 0.05; tolerances ~ 95th percentile over noise draws.
    n, y, _ = _trials(MAE_LAW, sd=0.05)
    fit = fit_power_law(n, y, higher_is_better=False, bounds=(0.0, math.inf))
    assert fit is not None and not fit.higher_is_better
    assert abs(fit.a - 5.0) < 0.5
    assert fit.b == pytest.approx(40.0, rel=0.15)
    assert abs(fit.c - 0.4) < 0.05
    grid = np.geomspace(50, 2000, 30)
    assert np.max(np.abs(fit.predict(grid) - MAE_LAW.predict(grid))) < 0.09
    assert np.all(np.diff(fit.predict(grid)) < 0)


def test_plateau_respects_bounds():
    # Almost linear in log n: unbounded, the plateau would run off above 1.
    n = np.repeat(LEVELS, 2)
    y = 0.7 + 0.04 * np.log(n / 50)
    fit = fit_power_law(n, y, higher_is_better=True, bounds=(0.0, 1.0))
    assert fit is not None and 0.0 <= fit.a <= 1.0 and fit.b >= 0 and 1e-3 <= fit.c <= 3.0


def test_non_finite_points_are_dropped():
    n, y, _ = _trials(AUC_LAW, sd=0.0, n_seeds=1)
    clean = fit_power_law(n, y, higher_is_better=True)
    dirty = fit_power_law(np.r_[n, np.nan, 300.0, 0.0, np.inf], np.r_[y, 0.5, np.nan, 0.1, 0.9], higher_is_better=True)
    assert clean is not None and dirty is not None
    assert (dirty.a, dirty.b, dirty.c) == pytest.approx((clean.a, clean.b, clean.c), rel=1e-6)


# ---- PowerLaw.n_for ------------------------------------------------------------------------------------


@pytest.mark.parametrize("law", [AUC_LAW, MAE_LAW])
def test_n_for_inverts_predict(law: PowerLaw):
    for n_true in (3.0, 75.0, 1234.5, 1e6):
        target = float(law.predict(n_true))
        n = law.n_for(target)
        assert n == pytest.approx(n_true, rel=1e-9)
        assert float(law.predict(n)) == pytest.approx(target, abs=1e-12)


def test_n_for_unreachable_and_trivial_targets():
    assert AUC_LAW.n_for(0.95) == math.inf  # beyond the plateau
    assert AUC_LAW.n_for(0.92) == math.inf  # the plateau itself: only at infinite n
    assert MAE_LAW.n_for(4.0) == math.inf
    assert AUC_LAW.n_for(0.1) == 1.0  # already reached at n = 1 (predict(1) = 0.32)
    assert MAE_LAW.n_for(100.0) == 1.0
    flat = PowerLaw(a=0.8, b=0.0, c=1.0, higher_is_better=True)
    assert flat.n_for(0.7) == 1.0 and flat.n_for(0.9) == math.inf
    with pytest.raises(ValueError):
        AUC_LAW.n_for(float("nan"))


# ---- learning_curve ------------------------------------------------------------------------------------


def test_learning_curve_reachable_target():
    n, y, seeds = _trials(AUC_LAW, sd=0.005, n_seeds=5)
    res = learning_curve(n, y, seeds, higher_is_better=True, target=0.90, bounds=(0.0, 1.0), n_boot=100)
    assert res is not None
    json.dumps(res, allow_nan=False)  # plain JSON, no NaN/inf
    true_n = AUC_LAW.n_for(0.90)  # 900
    assert res["reachable"] is True and res["target"] == 0.90
    assert res["n_needed_lo"] is not None and res["n_needed_hi"] is not None
    assert res["n_needed_lo"] <= res["n_needed"] <= res["n_needed_hi"]
    assert res["n_needed"] == pytest.approx(true_n, rel=0.6)  # over 30 noise draws the ratio ranged 0.82..1.54
    assert (res["n_boot"], res["n_failed"], res["n_points"], res["n_levels"], res["n_max"]) == (100, 0, 30, 6, 2000)

    grid, fit, lo, hi = (np.array(res[k], dtype=float) for k in ("grid", "fit", "lo", "hi"))
    assert grid.size == fit.size == lo.size == hi.size == 50
    assert grid[0] == pytest.approx(50) and grid[-1] == pytest.approx(20000)
    assert np.all(lo <= fit + 1e-12) and np.all(fit <= hi + 1e-12)
    assert np.all(hi - lo > 0)
    assert [h["factor"] for h in res["horizons"]] == [2.0, 4.0]
    for h in res["horizons"]:
        assert h["n"] == h["factor"] * 2000
        assert h["lo"] <= h["predicted"] <= h["hi"]
        assert h["predicted"] == pytest.approx(float(AUC_LAW.predict(h["n"])), abs=0.01)


def test_learning_curve_target_above_plateau_is_unreachable():
    n, y, seeds = _trials(AUC_LAW, sd=0.005)
    res = learning_curve(n, y, seeds, higher_is_better=True, target=0.99, bounds=(0.0, 1.0), n_boot=50)
    assert res is not None
    assert res["reachable"] is False and res["n_needed"] is None and res["n_needed_hi"] is None
    json.dumps(res, allow_nan=False)


def test_learning_curve_without_target_and_lower_is_better():
    n, y, seeds = _trials(MAE_LAW, sd=0.05)
    res = learning_curve(n, y, seeds, higher_is_better=False, bounds=(0.0, math.inf), n_boot=30, horizons=(3.0,))
    assert res is not None
    assert res["target"] is None and res["reachable"] is None and res["n_needed"] is None
    assert res["n_needed_lo"] is None and res["n_needed_hi"] is None
    assert len(res["horizons"]) == 1 and res["horizons"][0]["n"] == 6000.0
    assert np.all(np.diff(res["fit"]) < 0)


def test_learning_curve_is_deterministic_for_a_seed():
    n, y, seeds = _trials(AUC_LAW, sd=0.005)
    seeds = np.array([f"seed-{s}" for s in seeds])  # any hashable seed ids
    kw = {"higher_is_better": True, "target": 0.9, "bounds": (0.0, 1.0), "n_boot": 40}
    first = learning_curve(n, y, seeds, seed=7, **kw)
    assert first == learning_curve(n, y, seeds, seed=7, **kw)
    other = learning_curve(n, y, seeds, seed=8, **kw)
    assert other is not None and other["fit"] == first["fit"] and other["lo"] != first["lo"]


# ---- back_test -----------------------------------------------------------------------------------------


def test_back_test_noiseless_predicts_held_out_level():
    n, y, seeds = _trials(AUC_LAW, sd=0.0, n_seeds=2)
    res = back_test(n, y, seeds, higher_is_better=True, bounds=(0.0, 1.0), n_boot=10, target=0.9)
    assert res is not None
    assert res["n_held_out"] == 2000.0 and res["n_fit_levels"] == 5
    assert res["observed"] == pytest.approx(float(AUC_LAW.predict(2000)))
    assert res["abs_error"] < 1e-3 and res["abs_error"] == abs(res["error"])
    assert res["error"] == pytest.approx(res["predicted"] - res["observed"])


def test_back_test_needs_four_levels():
    n, y, seeds = _trials(AUC_LAW, sd=0.0, levels=LEVELS[:3])
    assert back_test(n, y, seeds, higher_is_better=True) is None
    n, y, seeds = _trials(AUC_LAW, sd=0.0, levels=LEVELS[:4])
    assert back_test(n, y, seeds, higher_is_better=True) is not None


# ---- degenerate input ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "n, y",
    [
        (np.repeat([100.0, 200.0], 3), np.linspace(0.7, 0.8, 6)),  # 2 levels
        (np.repeat(LEVELS, 2), np.full(12, np.nan)),  # all NaN
        (np.full(12, np.nan), np.linspace(0.7, 0.8, 12)),  # all NaN sizes
        (np.repeat(LEVELS, 2), np.full(12, 0.8)),  # constant metric
        (np.array([]), np.array([])),  # empty
    ],
    ids=["two-levels", "nan-y", "nan-n", "constant", "empty"],
)
def test_degenerate_input_returns_none(n: np.ndarray, y: np.ndarray):
    seeds = np.arange(n.size) % 2
    assert fit_power_law(n, y, higher_is_better=True) is None
    assert fit_power_law(n, y, higher_is_better=False, bounds=(0.0, 1.0)) is None
    assert learning_curve(n, y, seeds, higher_is_better=True, target=0.9, n_boot=5) is None
    assert back_test(n, y, seeds, higher_is_better=True) is None


def test_mismatched_lengths_raise():
    with pytest.raises(ValueError):
        fit_power_law([1, 2, 3], [0.5, 0.6], higher_is_better=True)
    with pytest.raises(ValueError):
        learning_curve([1, 2, 3], [0.5, 0.6, 0.7], [0, 1], higher_is_better=True)
