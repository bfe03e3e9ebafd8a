"""Learning curves: "how many labelled images do I need?".

A metric measured on models trained with ``N`` labelled images is fitted with an inverse power law
(Figueroa et al., "Predicting sample size required for classification performance", BMC Med Inform Decis Mak
12:8, 2012)::

    y(N) = a - b * N**-c    (higher is better, e.g. AUC)
    y(N) = a + b * N**-c    (lower is better, e.g. an MAE)

``a`` is the plateau (the metric with unlimited data), ``b >= 0`` the scale of the gap to the plateau and
``c > 0`` how fast the gap closes. As in Figueroa et al. the least-squares fit is weighted so that large ``N``
counts more: a metric estimated from ``N`` labels has a variance that shrinks about as ``1/N``, so each point
gets ``sigma = 1/sqrt(N)`` (weight ``N`` on its squared residual).

Functions:

* :func:`fit_power_law` – the weighted fit (started from a profile over ``c``, the best weighted residual
  wins); ``None`` when the data cannot support it (fewer than 3 distinct ``N``, constant metric, failed
  optimisation).
* :func:`learning_curve` – the point fit plus bootstrap bands over training seeds, predictions at multiples
  of the largest ``N`` and the ``N`` needed to reach a target, as a JSON-friendly dict.
* :func:`back_test` – fit without the largest ``N`` and compare the extrapolation with what was observed there:
  a direct check of how far the extrapolation can be trusted.

Extrapolation is the point of a learning curve and also its weakness: the band is a bootstrap over the seeds
that were run, so it shows the fit's sensitivity to seed noise, not the model error of the power law itself.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Hashable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from numpy.typing import ArrayLike
from scipy.optimize import OptimizeWarning, curve_fit

_C_MIN = 1e-3
_C_MAX = 3.0


@dataclass(frozen=True)
class PowerLaw:
    """An inverse power law ``a - b * n**-c`` (higher is better) or ``a + b * n**-c`` (lower is better).

    Attributes:
        a: The plateau: the metric at infinite ``n``.
        b: ``>= 0``, the scale of the gap to the plateau (the gap at ``n = 1``).
        c: ``> 0``, the decay rate of the gap.
        higher_is_better: Whether the metric improves upwards (AUC) or downwards (MAE).

    Example:
        >>> law = PowerLaw(a=0.9, b=0.5, c=0.5, higher_is_better=True)
        >>> [round(float(v), 3) for v in law.predict([1, 100])]
        [0.4, 0.85]
        >>> round(law.n_for(0.85), 6)
        100.0
    """

    a: float
    b: float
    c: float
    higher_is_better: bool

    def predict(self, n: ArrayLike) -> np.ndarray:
        """The metric predicted at ``n`` (``n > 0``), as a float array of ``n``'s shape."""
        gap = self.b * np.power(np.asarray(n, dtype=float), -self.c)
        return self.a - gap if self.higher_is_better else self.a + gap

    def n_for(self, target: float) -> float:
        """The smallest ``n`` whose predicted metric reaches ``target`` (``>=``, or ``<=`` if lower is better).

        The curve is monotone, so this is the closed form ``(b / gap)**(1/c)`` with ``gap`` the distance from the
        target to the plateau. It is continuous (round up for a count of images) and never below 1: a target
        already reached at ``n = 1`` gives ``1.0``.

        Returns:
            ``n >= 1``, or ``math.inf`` when the plateau does not reach the target (a target exactly at the
            plateau is only reached at infinite ``n``).

        Raises:
            ValueError: ``target`` is not finite.
        """
        if not math.isfinite(target):
            raise ValueError(f"target must be finite, got {target}")
        gap = (self.a - target) if self.higher_is_better else (target - self.a)
        if gap <= 0:
            return math.inf
        if self.b <= 0:
            return 1.0
        log_n = (math.log(self.b) - math.log(gap)) / self.c
        if log_n <= 0:
            return 1.0
        return math.exp(log_n) if log_n < 700 else math.inf


def _clean(n: ArrayLike, y: ArrayLike) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Flat float arrays and the mask of usable points (finite ``n > 0`` and finite ``y``)."""
    n_arr = np.asarray(n, dtype=float).ravel()
    y_arr = np.asarray(y, dtype=float).ravel()
    if n_arr.shape != y_arr.shape:
        raise ValueError(f"n has {n_arr.size} entries but y has {y_arr.size}")
    with np.errstate(invalid="ignore"):
        keep = np.isfinite(n_arr) & np.isfinite(y_arr) & (n_arr > 0)
    return n_arr, y_arr, keep


_C_GRID = np.geomspace(_C_MIN, _C_MAX, 96)


def _profile_starts(
    x: np.ndarray, y: np.ndarray, w: np.ndarray, sign: float, a_lo: float, a_hi: float, n_starts: int = 2
) -> list[tuple[float, float, float]]:
    """Starting values ``(a, B, c)`` for the model ``a + sign * B * x**-c`` from a profile over ``c``.

    For a fixed ``c`` the model is linear in ``a`` and ``B``, so a weighted linear least-squares fit (then
    ``B >= 0`` and ``a`` clipped into its bounds) gives the best ``(a, B)`` on a grid of ``c`` at once. The
    ``n_starts`` grid values of ``c`` with the smallest residual that are local minima of the profile are
    returned (so the optimiser starts near the global minimum and near a competing one, if any).
    """
    u = sign * np.power(x[None, :], -_C_GRID[:, None])  # (C, P) regressor of B
    wsum = w.sum()
    u_bar = (u * w).sum(axis=1) / wsum
    y_bar = float((y * w).sum() / wsum)
    du = u - u_bar[:, None]
    sxx = (w * du * du).sum(axis=1)
    sxy = (w * du * (y - y_bar)).sum(axis=1)
    with np.errstate(all="ignore"):
        big_b = np.where(sxx > 0, sxy / sxx, 0.0)
    big_b = np.maximum(np.nan_to_num(big_b, nan=0.0, posinf=0.0, neginf=0.0), 0.0)
    a = y_bar - big_b * u_bar
    clipped = (a < a_lo) | (a > a_hi)
    if clipped.any():
        a = np.clip(a, a_lo, a_hi)
        with np.errstate(all="ignore"):
            refit = (w * u * (y - a[:, None])).sum(axis=1) / (w * u * u).sum(axis=1)
        big_b = np.where(clipped, np.maximum(np.nan_to_num(refit, nan=0.0), 0.0), big_b)
    with np.errstate(all="ignore"):
        sse = (w * (y - a[:, None] - big_b[:, None] * u) ** 2).sum(axis=1)
    sse = np.where(np.isfinite(sse), sse, np.inf)
    padded = np.concatenate([[np.inf], sse, [np.inf]])
    local = np.flatnonzero((padded[1:-1] <= padded[:-2]) & (padded[1:-1] <= padded[2:]) & np.isfinite(sse))
    order = local[np.argsort(sse[local], kind="stable")][:n_starts]
    return [(float(a[i]), float(max(big_b[i], 1e-12)), float(_C_GRID[i])) for i in order]


def fit_power_law(
    n: ArrayLike,
    y: ArrayLike,
    *,
    higher_is_better: bool,
    bounds: tuple[float, float] | None = None,
) -> PowerLaw | None:
    """Weighted least-squares fit of an inverse power law to a learning curve.

    All points are fitted (several seeds per ``n`` are fine, and better than their means: the scatter is the
    data). Each point gets ``sigma = 1/sqrt(n)``: the variance of a metric estimated from ``n`` labels shrinks
    about as ``1/n``, so points at large ``n`` are more precise and weigh more (Figueroa et al. 2012).
    Constraints: ``b >= 0``, ``1e-3 <= c <= 3`` and, when ``bounds`` is given, ``bounds[0] <= a <= bounds[1]``.
    Starting values come from a profile over ``c`` (for a fixed ``c`` the model is linear in ``a`` and ``b``, a
    weighted linear fit on a grid of ``c``); ``curve_fit`` is started from the best two local minima of that
    profile and the fit with the smallest weighted sum of squared residuals ``sum(n * (y - fit)**2)`` is kept.
    Internally ``b`` is fitted at the geometric mean of the ``n`` levels (better conditioned) and converted back.

    Args:
        n: Training-set sizes, one per point.
        y: The metric, one per point.
        higher_is_better: ``True`` for ``a - b * n**-c`` (AUC, accuracy), ``False`` for ``a + b * n**-c`` (MAE).
        bounds: The metric's range ``(low, high)``, which bounds the plateau ``a``: ``(0, 1)`` for an AUC,
            ``(0, inf)`` for an MAE. ``None`` leaves ``a`` free.

    Returns:
        The fitted :class:`PowerLaw`, or ``None`` (never an exception for bad data) when fewer than 3 distinct
        ``n`` remain after dropping non-finite points (and ``n <= 0``), when ``y`` is constant (the decay is not
        identifiable), or when the optimisation fails.

    Example:
        >>> n = np.repeat([50, 100, 200, 500, 1000], 2)
        >>> law = fit_power_law(n, 0.9 - 0.5 * n**-0.5, higher_is_better=True, bounds=(0, 1))
        >>> round(law.a, 3), round(law.b, 3), round(law.c, 3)
        (0.9, 0.5, 0.5)
    """
    n_arr, y_arr, keep = _clean(n, y)
    n_arr, y_arr = n_arr[keep], y_arr[keep]
    if np.unique(n_arr).size < 3:
        return None
    if np.ptp(y_arr) <= 1e-12 * max(1.0, float(np.abs(y_arr).max())):
        return None
    a_lo, a_hi = (-math.inf, math.inf) if bounds is None else (float(bounds[0]), float(bounds[1]))
    if not a_lo < a_hi:
        return None
    sign = -1.0 if higher_is_better else 1.0
    n_ref = float(np.exp(np.log(np.unique(n_arr)).mean()))
    x = n_arr / n_ref

    def model(xv: np.ndarray, a: float, big_b: float, c: float) -> np.ndarray:
        return a + sign * big_b * np.power(xv, -c)

    def jac(xv: np.ndarray, a: float, big_b: float, c: float) -> np.ndarray:
        z = np.power(xv, -c)
        return np.column_stack([np.ones_like(xv), sign * z, -sign * big_b * z * np.log(xv)])

    sigma = 1.0 / np.sqrt(n_arr)
    lower, upper = [a_lo, 0.0, _C_MIN], [a_hi, np.inf, _C_MAX]
    best: tuple[float, np.ndarray] | None = None
    with np.errstate(all="ignore"):
        starts = _profile_starts(x, y_arr, n_arr, sign, a_lo, a_hi)
    if not starts:  # a profile without a finite residual: fall back to a generic start
        starts = [(min(max(float(np.mean(y_arr)), a_lo), a_hi), float(np.ptp(y_arr)), 0.5)]
    for p0 in starts:
        try:
            with warnings.catch_warnings(), np.errstate(all="ignore"):
                warnings.simplefilter("ignore", OptimizeWarning)
                warnings.simplefilter("ignore", RuntimeWarning)
                params, _ = curve_fit(
                    model, x, y_arr, p0=p0, sigma=sigma, bounds=(lower, upper), jac=jac, max_nfev=2000
                )
        except (RuntimeError, ValueError, OptimizeWarning):
            continue
        if not np.all(np.isfinite(params)):
            continue
        with np.errstate(all="ignore"):
            sse = float(np.sum(n_arr * (y_arr - model(x, *params)) ** 2))
        if math.isfinite(sse) and (best is None or sse < best[0]):
            best = (sse, params)
    if best is None:
        return None
    a, big_b, c = (float(v) for v in best[1])
    with np.errstate(all="ignore"):
        b = big_b * n_ref**c
    if not math.isfinite(b):
        return None
    return PowerLaw(a=a, b=b, c=c, higher_is_better=higher_is_better)


def _percentile_inf(values: np.ndarray, q: float) -> float:
    """Linear-interpolation percentile (numpy's default) of values that may hold ``+inf``."""
    v = np.sort(values)
    h = (v.size - 1) * q / 100.0
    i = int(math.floor(h))
    g = h - i
    if g == 0 or i + 1 >= v.size:
        return float(v[i])
    if math.isinf(v[i]) or math.isinf(v[i + 1]):
        return math.inf
    return float(v[i] + g * (v[i + 1] - v[i]))


def _opt(v: float) -> float | None:
    """``None`` for a non-finite value, else the plain float."""
    return float(v) if math.isfinite(v) else None


def learning_curve(
    n: ArrayLike,
    y: ArrayLike,
    seeds: Sequence[Hashable] | ArrayLike,
    *,
    higher_is_better: bool,
    target: float | None = None,
    horizons: Sequence[float] = (2.0, 4.0),
    n_boot: int = 200,
    seed: int = 0,
    bounds: tuple[float, float] | None = None,
    reach_factor: float = 10.0,
    grid_points: int = 50,
    alpha: float = 0.05,
) -> dict[str, Any] | None:
    """Fit a learning curve, bootstrap it over seeds and say how much data a target needs.

    The point fit (:func:`fit_power_law`) uses all points. The bands come from a bootstrap over training seeds:
    the seed ids are resampled with replacement (each drawn seed brings all its points, at every ``n``) and the
    curve is refitted; bands and intervals are the ``alpha/2`` and ``1 - alpha/2`` percentiles of the replicates.
    Replicates whose fit fails are dropped and counted in ``n_failed``. With a single seed every replicate is the
    point fit, so the band has zero width: run several seeds per ``n``.

    Args:
        n: Training-set size of each trial.
        y: The metric of each trial.
        seeds: The seed id of each trial (any hashable values).
        higher_is_better: Direction of the metric.
        target: A metric value to reach, or ``None``.
        horizons: Multiples of the largest observed ``n`` at which to report predictions.
        n_boot: Number of bootstrap replicates (0 gives no bands: ``lo``/``hi`` are ``None``).
        seed: Seed of ``np.random.default_rng``; the result is deterministic for a fixed seed.
        bounds: The metric's range, which bounds the plateau (see :func:`fit_power_law`).
        reach_factor: Extrapolation limit as a multiple of the largest observed ``n``: the grid ends there, and a
            target needing more is reported as not reachable.
        grid_points: Number of points of the (geometric) grid from the smallest ``n`` to ``reach_factor * n_max``.
        alpha: ``1 - alpha`` is the coverage of the percentile bands.

    Returns:
        ``None`` when fewer than 3 distinct finite ``n`` remain or the point fit fails; else a JSON-friendly dict:

        * ``a``, ``b``, ``c``: the point fit; ``n_max``: the largest observed ``n``;
        * ``grid``, ``fit``, ``lo``, ``hi``: lists over the grid (``lo``/``hi`` are lists of ``None`` when no
          replicate succeeded);
        * ``horizons``: ``[{"factor", "n", "predicted", "lo", "hi"}, ...]`` at ``factor * n_max``;
        * ``target``; ``n_needed``: the point fit's :meth:`PowerLaw.n_for`, ``None`` when not reachable;
          ``reachable``: ``False`` when the target needs more than ``reach_factor * n_max`` (or is beyond the
          plateau), ``None`` without a target; ``n_needed_lo``/``n_needed_hi``: percentiles of the replicates'
          ``n_for`` (infinite ones included), ``None`` when infinite, and for the upper bound also when beyond
          ``reach_factor * n_max``;
        * ``n_boot``, ``n_failed``: replicates asked for and failed; ``n_points``, ``n_levels``: finite points
          and distinct ``n`` used.

    Raises:
        ValueError: ``n``, ``y`` and ``seeds`` differ in length, or ``target`` is given but not finite.
    """
    n_arr, y_arr, keep = _clean(n, y)
    seed_list = list(np.asarray(seeds, dtype=object).ravel())
    if len(seed_list) != n_arr.size:
        raise ValueError(f"seeds has {len(seed_list)} entries but n has {n_arr.size}")
    if target is not None and not math.isfinite(target):
        raise ValueError(f"target must be finite or None, got {target}")
    codes_all: dict[Hashable, int] = {}
    codes = np.array([codes_all.setdefault(s, len(codes_all)) for s in seed_list], dtype=int)
    n_arr, y_arr, codes = n_arr[keep], y_arr[keep], codes[keep]
    n_levels = int(np.unique(n_arr).size)
    if n_levels < 3:
        return None
    point = fit_power_law(n_arr, y_arr, higher_is_better=higher_is_better, bounds=bounds)
    if point is None:
        return None

    n_max = float(n_arr.max())
    reach = reach_factor * n_max
    grid = np.geomspace(float(n_arr.min()), reach, grid_points)
    factors = [float(f) for f in horizons]
    h_n = np.array([f * n_max for f in factors])

    rng = np.random.default_rng(seed)
    seed_ids = np.unique(codes)
    rows = {s: np.flatnonzero(codes == s) for s in seed_ids}
    curves, at_h, needed = [], [], []
    n_failed = 0
    for _ in range(n_boot):
        drawn = rng.choice(seed_ids, size=seed_ids.size, replace=True)
        idx = np.concatenate([rows[s] for s in drawn])
        law = fit_power_law(n_arr[idx], y_arr[idx], higher_is_better=higher_is_better, bounds=bounds)
        if law is None:
            n_failed += 1
            continue
        curves.append(law.predict(grid))
        at_h.append(law.predict(h_n))
        if target is not None:
            needed.append(law.n_for(target))

    q_lo, q_hi = 100 * alpha / 2, 100 * (1 - alpha / 2)
    if curves:
        lo, hi = np.percentile(np.array(curves), [q_lo, q_hi], axis=0)
        h_lo, h_hi = np.percentile(np.array(at_h), [q_lo, q_hi], axis=0)
        lo_list: list[float | None] = [_opt(v) for v in lo]
        hi_list: list[float | None] = [_opt(v) for v in hi]
    else:
        lo_list = [None] * grid.size
        hi_list = [None] * grid.size
        h_lo = h_hi = np.full(h_n.size, np.nan)
    h_pred = point.predict(h_n)

    n_needed = n_needed_lo = n_needed_hi = None
    reachable = None
    if target is not None:
        n_pt = point.n_for(target)
        reachable = bool(n_pt <= reach)
        n_needed = float(n_pt) if reachable else None
        if needed:
            vals = np.array(needed, dtype=float)
            n_needed_lo = _opt(_percentile_inf(vals, q_lo))
            up = _percentile_inf(vals, q_hi)
            n_needed_hi = float(up) if up <= reach else None

    return {
        "a": point.a,
        "b": point.b,
        "c": point.c,
        "n_max": n_max,
        "grid": [float(v) for v in grid],
        "fit": [_opt(v) for v in point.predict(grid)],
        "lo": lo_list,
        "hi": hi_list,
        "horizons": [
            {"factor": f, "n": float(nh), "predicted": _opt(p), "lo": _opt(lo_h), "hi": _opt(hi_h)}
            for f, nh, p, lo_h, hi_h in zip(factors, h_n, h_pred, h_lo, h_hi, strict=True)
        ],
        "target": None if target is None else float(target),
        "n_needed": n_needed,
        "n_needed_lo": n_needed_lo,
        "n_needed_hi": n_needed_hi,
        "reachable": reachable,
        "n_boot": int(n_boot),
        "n_failed": n_failed,
        "n_points": int(n_arr.size),
        "n_levels": n_levels,
    }


def back_test(
    n: ArrayLike,
    y: ArrayLike,
    seeds: Sequence[Hashable] | ArrayLike,
    *,
    higher_is_better: bool,
    bounds: tuple[float, float] | None = None,
    **kw: Any,
) -> dict[str, Any] | None:
    """Hold out the largest ``n``, fit the rest and compare the extrapolation with the observed metric there.

    Args:
        n: Training-set size of each trial.
        y: The metric of each trial.
        seeds: The seed id of each trial (only checked for length: the fit uses all points).
        higher_is_better: Direction of the metric.
        bounds: The metric's range (see :func:`fit_power_law`).
        **kw: Ignored, so that the keyword arguments of :func:`learning_curve` can be passed unchanged.

    Returns:
        ``None`` when fewer than 4 distinct finite ``n`` remain or the fit fails; else ``{"n_held_out",
        "predicted", "observed" (mean metric at the held-out n), "error" (predicted - observed), "abs_error",
        "n_fit_levels"}``.

    Example:
        >>> n = np.array([50, 100, 200, 500, 1000])
        >>> res = back_test(n, 0.9 - 0.5 * n**-0.5, [0] * 5, higher_is_better=True)
        >>> res["n_held_out"], res["abs_error"] < 1e-6
        (1000.0, True)
    """
    del kw
    n_arr, y_arr, keep = _clean(n, y)
    if len(np.asarray(seeds, dtype=object).ravel()) != n_arr.size:
        raise ValueError("seeds must have one entry per point")
    n_arr, y_arr = n_arr[keep], y_arr[keep]
    levels = np.unique(n_arr)
    if levels.size < 4:
        return None
    held = float(levels[-1])
    train = n_arr < held
    law = fit_power_law(n_arr[train], y_arr[train], higher_is_better=higher_is_better, bounds=bounds)
    if law is None:
        return None
    predicted = float(law.predict(held))
    observed = float(y_arr[~train].mean())
    if not math.isfinite(predicted):
        return None
    error = predicted - observed
    return {
        "n_held_out": held,
        "predicted": predicted,
        "observed": observed,
        "error": error,
        "abs_error": abs(error),
        "n_fit_levels": int(levels.size - 1),
    }
