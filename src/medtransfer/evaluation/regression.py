"""Metrics of a continuous target: MAE (the primary one), RMSE and R², with patient-bootstrap 95 % CIs, and the
paired comparison of two models on the same images.

* CIs are percentile intervals of a cluster bootstrap: patients are drawn with replacement and bring all their
  images (images of one patient are not independent), as for the AUC (:func:`~medtransfer.evaluation.stats.
  bootstrap_auc_ci`). Replicates are weights on the rows, so every replicate is one vectorised pass.
* Rows with an unknown target (NaN) are left out of that target's metrics.
* Several targets: each gets its metrics; the top level is the mean over targets (MAE in each target's unit; put
  targets of different units in different runs if their mean would mean nothing).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np
from numpy.typing import ArrayLike

from medtransfer.evaluation.stats import bootstrap_weights, two_level_bootstrap


def _weighted(y: np.ndarray, pred: np.ndarray, w: np.ndarray) -> dict[str, np.ndarray]:
    """MAE, RMSE and R² of one target under row weights ``w`` (shape ``(b, n)`` or ``(n,)``)."""
    err = pred - y
    total = w.sum(axis=-1)
    with np.errstate(invalid="ignore", divide="ignore"):
        mae = (w * np.abs(err)).sum(axis=-1) / total
        mse = (w * err**2).sum(axis=-1) / total
        mean_y = (w * y).sum(axis=-1) / total
        centred = y - (mean_y[:, None] if w.ndim == 2 else mean_y)
        var_y = (w * centred**2).sum(axis=-1) / total
        r2 = np.where(var_y > 0, 1 - mse / var_y, np.nan)
    return {"mae": mae, "rmse": np.sqrt(mse), "r2": r2}


def _ci(values: np.ndarray, alpha: float = 0.05) -> list[float]:
    finite = values[np.isfinite(values)]
    if finite.size == 0:
        return [math.nan, math.nan]
    lo, hi = np.percentile(finite, [100 * alpha / 2, 100 * (1 - alpha / 2)])
    return [float(lo), float(hi)]


def regression_metrics(
    targets: ArrayLike,
    predictions: ArrayLike,
    names: Sequence[str],
    *,
    patient_ids: ArrayLike | None = None,
    n_boot: int = 1000,
    seed: int = 0,
) -> dict[str, Any]:
    """``{"mae", "mae_ci", "rmse", "rmse_ci", "r2", "r2_ci", "n", "per_target": {name: {... , "n"}}}``.

    Example:
        >>> m = regression_metrics([[1.0], [2.0], [3.0], [4.0]], [[1.5], [2.0], [2.5], [4.0]], ["age"], n_boot=0)
        >>> m["mae"], round(m["rmse"], 4), m["r2"]
        (0.25, 0.3536, 0.9)
    """
    y = np.asarray(targets, dtype=float).reshape(len(np.asarray(targets)), -1)
    p = np.asarray(predictions, dtype=float).reshape(y.shape[0], -1)
    if y.shape != p.shape or y.shape[1] != len(names):
        raise ValueError(f"targets {y.shape}, predictions {p.shape} and {len(names)} names do not agree")
    groups = None if patient_ids is None else np.asarray(patient_ids).astype(str).ravel()
    per_target: dict[str, dict[str, Any]] = {}
    for j, name in enumerate(names):
        known = np.isfinite(y[:, j]) & np.isfinite(p[:, j])
        yj, pj = y[known, j], p[known, j]
        point = {k: float(v) for k, v in _weighted(yj, pj, np.ones(len(yj))).items()} if len(yj) else {}
        entry: dict[str, Any] = {k: point.get(k, math.nan) for k in ("mae", "rmse", "r2")}
        reps: dict[str, list[np.ndarray]] = {"mae": [], "rmse": [], "r2": []}
        if n_boot > 0 and len(yj):
            g = None if groups is None else groups[known]
            for w in bootstrap_weights(len(yj), g, n_boot, seed):
                for k, v in _weighted(yj, pj, w).items():
                    reps[k].append(v)
        for k in ("mae", "rmse", "r2"):
            entry[f"{k}_ci"] = _ci(np.concatenate(reps[k])) if reps[k] else [math.nan, math.nan]
        entry["n"] = int(known.sum())
        per_target[name] = entry
    out: dict[str, Any] = {}
    for k in ("mae", "rmse", "r2"):
        out[k] = _mean([e[k] for e in per_target.values()])
        # the mean target's CI: one target (the usual case) has its own; several get the per-target mean of bounds
        out[f"{k}_ci"] = [_mean([e[f"{k}_ci"][i] for e in per_target.values()]) for i in (0, 1)]
    out["n"] = int(y.shape[0])
    out["per_target"] = per_target
    return out


def _mean(values: list[float]) -> float:
    finite = [v for v in values if math.isfinite(v)]
    return float(np.mean(finite)) if finite else math.nan


def paired_errors_test(
    targets: ArrayLike,
    pred_a: ArrayLike,
    pred_b: ArrayLike,
    *,
    groups: ArrayLike | None = None,
    n_boot: int = 2000,
    seed: int = 0,
) -> dict[str, float | int]:
    """Two models on the same images: ``delta_mae = MAE(a) - MAE(b)`` (negative: ``a`` is better) with a paired
    bootstrap over images of that same difference (percentile CI, two-sided p of 0).

    The verdict and its test concern one statistic, the difference of MAEs, so they cannot disagree. (A Wilcoxon
    test of the per-image errors tests their median difference instead: with ``a`` 1 better on 100 images and 10
    worse on 29, ΔMAE = +1.47 while Wilcoxon favours ``a``, p = 0.03.)

    Example:
        >>> r = paired_errors_test([0.0] * 129, [9.0] * 100 + [20.0] * 29, [10.0] * 129)
        >>> round(r["delta_mae"], 2), r["ci"][0] > 0, r["p_value"] < 0.01
        (1.47, True, True)
    """
    y = np.asarray(targets, dtype=float).ravel()
    a = np.abs(np.asarray(pred_a, dtype=float).ravel() - y)
    b = np.abs(np.asarray(pred_b, dtype=float).ravel() - y)
    keep = np.isfinite(a) & np.isfinite(b)
    d = a[keep] - b[keep]
    if len(d) == 0:
        return {"delta_mae": math.nan, "p_value": math.nan, "ci": [math.nan, math.nan], "se": math.nan, "n": 0}
    units = None if groups is None else np.repeat(np.asarray(groups).ravel(), max(1, a.size // max(len(groups), 1)))
    units = None if units is None or units.size != keep.size else units[keep]  # by patient: pairs of one patient
    with np.errstate(invalid="ignore", divide="ignore"):
        reps = np.concatenate([w @ d / w.sum(axis=1) for w in bootstrap_weights(len(d), units, n_boot, seed)])
    res = two_level_bootstrap(reps[None, :], [float(d.mean())], seed=seed)
    p = 1.0 if not np.any(d != 0) else res.p_value
    return {"delta_mae": res.estimate, "p_value": p, "ci": list(res.normal_ci()), "se": res.se, "n": int(len(d))}
