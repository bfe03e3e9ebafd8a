"""Operating points: what a binary score does at one threshold, as a clinical reader asks it.

A threshold is chosen on the validation split (``eval.threshold``: :func:`medtransfer.evaluation.metrics.
choose_threshold`); on the test split this module gives, at that threshold, sensitivity, specificity, PPV, NPV, F1
and accuracy, each with a 95 % percentile bootstrap CI (resampling patients when their ids are given, the same
draws as the AUC's CI), and, read off the test ROC, the sensitivity at specificity 0.90 and 0.95.

"Read off the ROC" is the step reading, not an interpolation: the highest sensitivity of any threshold whose
specificity on these images is at least the target (what a user who set that threshold would get on them).

Multi-label tasks get one operating point per label and their macro mean (each replicate averages the labels it has,
so the macro CI respects the correlation between labels).

Example:
    >>> y = np.array([0, 0, 0, 1, 1, 1.0]); s = np.array([0.1, 0.2, 0.6, 0.4, 0.7, 0.9])
    >>> p = operating_point(y, s, 0.5, n_boot=0)
    >>> p["sensitivity"], p["specificity"], p["ppv"], p["tp"], p["fp"]
    (0.6666666666666666, 0.6666666666666666, 0.6666666666666666, 2, 1)
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Sequence
from typing import Any

import numpy as np
from numpy.typing import ArrayLike

from medtransfer.evaluation.stats import _percentile_ci, bootstrap_weights

POINT_METRICS = ("sensitivity", "specificity", "ppv", "npv", "f1", "accuracy")
SPECIFICITY_TARGETS = (0.90, 0.95)
# The flat names of sensitivity at each target specificity (results.csv columns, metrics.json keys)
SENS_AT_SPEC = tuple(f"sens_at_spec{round(100 * t)}" for t in SPECIFICITY_TARGETS)


def _rates(tp: np.ndarray, fp: np.ndarray, tn: np.ndarray, fn: np.ndarray) -> dict[str, np.ndarray]:
    """The point metrics from (weighted) confusion counts; NaN where a denominator is 0."""

    def ratio(a: np.ndarray, b: np.ndarray) -> np.ndarray:
        out = np.full(np.shape(a), np.nan)
        np.divide(a, b, out=out, where=np.asarray(b) > 0)
        return out

    return {
        "sensitivity": ratio(tp, tp + fn),
        "specificity": ratio(tn, tn + fp),
        "ppv": ratio(tp, tp + fp),
        "npv": ratio(tn, tn + fn),
        "f1": ratio(2 * tp, 2 * tp + fp + fn),
        "accuracy": ratio(tp + tn, tp + tn + fp + fn),
    }


class _Label:
    """One label's known rows, its predictions at the threshold, and its rows in descending score order."""

    def __init__(self, y: np.ndarray, s: np.ndarray, threshold: float) -> None:
        self.rows = np.flatnonzero(np.isfinite(y) & np.isfinite(s))
        y, s = y[self.rows] == 1, s[self.rows]
        self.pos = y
        self.pred = s >= threshold if math.isfinite(threshold) else None
        order = np.argsort(-s, kind="stable")
        self.order, self.pos_sorted = order, y[order]
        # the last row of each run of tied scores: a threshold can only sit between distinct scores
        s_sorted = s[order]
        self.ends = np.flatnonzero(np.append(s_sorted[1:] != s_sorted[:-1], True))

    def confusion(self, w: np.ndarray) -> tuple[np.ndarray, ...]:
        """Weighted (tp, fp, tn, fn) for each row of ``w`` (``(B, rows)``)."""
        p, y = self.pred, self.pos
        return w @ (p & y), w @ (p & ~y), w @ (~p & ~y), w @ (~p & y)

    def sens_at_spec(self, w: np.ndarray, targets: Sequence[float]) -> np.ndarray:
        """``(B, len(targets))``: the highest sensitivity among thresholds with specificity ≥ each target."""
        ws = w[:, self.order]
        tp = np.cumsum(ws * self.pos_sorted, axis=1)[:, self.ends]
        fp = np.cumsum(ws * ~self.pos_sorted, axis=1)[:, self.ends]
        n_pos, n_neg = tp[:, -1:], fp[:, -1:]
        out = np.full((w.shape[0], len(targets)), np.nan)
        ok = (n_pos[:, 0] > 0) & (n_neg[:, 0] > 0)
        if not ok.any():
            return out
        tpr = tp[ok] / n_pos[ok]
        fpr = fp[ok] / n_neg[ok]
        for j, target in enumerate(targets):
            feasible = fpr <= (1.0 - target) + 1e-12
            # no threshold at all ("everyone negative") has sensitivity 0 and specificity 1: the floor
            out[ok, j] = np.where(feasible, tpr, 0.0).max(axis=1)
        return out


def operating_points(
    labels: ArrayLike,
    scores: ArrayLike,
    thresholds: Sequence[float] | None,
    *,
    groups: ArrayLike | None = None,
    n_boot: int = 1000,
    alpha: float = 0.05,
    seed: int = 0,
) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    """Each label's operating point and their macro mean: ``(per_label, macro)``.

    Args:
        labels: ``(N, K)`` 0/1 labels, NaN = unknown.
        scores: ``(N, K)`` probabilities.
        thresholds: one per label, chosen on validation (NaN or None: no point metrics, only sensitivity at the
            target specificities).
        groups: ``(N,)`` patient ids for the cluster bootstrap (None: resample images).
        n_boot: bootstrap replicates (0: no CIs).
        alpha: 1 - coverage of the CIs.
        seed: the bootstrap's seed.

    Returns:
        Dicts with ``threshold``, the :data:`POINT_METRICS` and ``<name>_ci`` for each, ``tp``, ``fp``, ``tn``,
        ``fn`` (counts of images), ``n_pos``, ``n_neg``, and :data:`SENS_AT_SPEC` with their ``_ci``. The macro dict
        has no threshold or counts.
    """
    y = np.asarray(labels, dtype=float)
    s = np.asarray(scores, dtype=float)
    y, s = (y[:, None], s[:, None]) if y.ndim == 1 else (y, s)
    k = y.shape[1]
    thr = [math.nan] * k if thresholds is None else [float(t) for t in thresholds]
    cols = [_Label(y[:, j], s[:, j], thr[j]) for j in range(k)]
    names = (*POINT_METRICS, *SENS_AT_SPEC)

    def values(weights: np.ndarray) -> np.ndarray:
        """``(B, K, metrics)`` for rows of image weights ``(B, N)``."""
        out = np.full((weights.shape[0], k, len(names)), np.nan)
        for j, col in enumerate(cols):
            w = weights[:, col.rows]
            if col.pred is not None:
                rates = _rates(*col.confusion(w))
                out[:, j, : len(POINT_METRICS)] = np.stack([rates[m] for m in POINT_METRICS], axis=1)
            out[:, j, len(POINT_METRICS) :] = col.sens_at_spec(w, SPECIFICITY_TARGETS)
        return out

    point = values(np.ones((1, y.shape[0])))[0]
    reps = [values(w) for w in bootstrap_weights(y.shape[0], groups, n_boot, seed)] if n_boot > 0 else []
    boot = np.concatenate(reps) if reps else np.full((0, k, len(names)), np.nan)

    def entry(p: np.ndarray, b: np.ndarray) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for i, name in enumerate(names):
            out[name] = float(p[i])
            out[f"{name}_ci"] = list(_percentile_ci(b[:, i], alpha)) if len(b) else [math.nan, math.nan]
        return out

    per_label = []
    for j, col in enumerate(cols):
        e = {"threshold": thr[j], **entry(point[j], boot[:, j])}
        e.update(n_pos=int(col.pos.sum()), n_neg=int((~col.pos).sum()))
        if col.pred is not None:
            counts = col.confusion(np.ones((1, col.rows.size)))
            e.update({name: int(round(c[0])) for name, c in zip(("tp", "fp", "tn", "fn"), counts, strict=True)})
        per_label.append(e)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # a replicate in which no label is defined stays NaN
        macro = entry(np.nanmean(point, axis=0), np.nanmean(boot, axis=1) if len(boot) else boot[:, 0])
    return per_label, macro


def operating_point(y_true: ArrayLike, score: ArrayLike, threshold: float, **kwargs: Any) -> dict[str, Any]:
    """:func:`operating_points` of one label (see the module's example)."""
    y, s = np.asarray(y_true, float).reshape(-1, 1), np.asarray(score, float).reshape(-1, 1)
    return operating_points(y, s, [threshold], **kwargs)[0][0]


def describe(metrics: dict[str, Any]) -> list[str]:
    """The operating point of a ``metrics.json`` as the CLI prints it (no lines when it has none).

    Example:
        >>> m = {"threshold_rule": "youden", "operating_point": operating_point([0, 1, 1], [0.2, 0.7, 0.4], 0.5,
        ...      n_boot=0), "per_label": {"p": {}}}
        >>> print("\\n".join(describe(m)))  # doctest: +NORMALIZE_WHITESPACE
        operating point: threshold 0.5 (youden on the validation split)
          sensitivity 0.500 (95% CI –)  specificity 1.000 (95% CI –)  PPV 1.000 (95% CI –)  NPV 0.500 (95% CI –)
          F1 0.667 (95% CI –)
          sensitivity at specificity 0.90: 1.000 (95% CI –); at 0.95: 1.000 (95% CI –)
    """
    point = metrics.get("operating_point")
    if not point:
        return []

    def value(name: str) -> str:
        v, ci = point.get(name), point.get(f"{name}_ci") or [None, None]
        if v is None or not math.isfinite(v):
            return "–"
        ok = all(c is not None and math.isfinite(c) for c in ci)
        return f"{v:.3f} (95% CI {ci[0]:.3f}–{ci[1]:.3f})" if ok else f"{v:.3f} (95% CI –)"

    labels = metrics.get("per_label") or {}
    rule = metrics.get("threshold_rule") or "youden"
    lines = []
    threshold = point.get("threshold")
    if len(labels) > 1:
        lines.append(
            f"operating point: macro mean over {len(labels)} labels, each at its threshold ({rule} on the "
            "validation split; per label in metrics.json)"
        )
    elif threshold is not None and math.isfinite(threshold):
        lines.append(f"operating point: threshold {threshold:.4g} ({rule} on the validation split)")
    if lines:
        names = {"ppv": "PPV", "npv": "NPV", "f1": "F1"}
        cells = [f"{names.get(m, m)} {value(m)}" for m in POINT_METRICS if m != "accuracy"]
        lines += ["  " + "  ".join(cells[:4]), "  " + cells[4]]
    at = "; ".join(
        f"{'sensitivity at specificity ' if i == 0 else 'at '}{t:.2f}: {value(name)}"
        for i, (t, name) in enumerate(zip(SPECIFICITY_TARGETS, SENS_AT_SPEC, strict=True))
    )
    return [*lines, "  " + at]
