"""Calibration of predicted probabilities: "when the model says 0.8, is it right 80% of the time?".

Pure functions on numpy arrays. Labels follow the data contract of :mod:`medtransfer.evaluation.metrics`:
``(N, K)`` floats with ``NaN`` = unknown (dropped); binary tasks have K = 1, multi-label tasks one column per
finding, multi-class tasks are one-hot over K classes (a NaN row = unknown class).

Metrics:

* **Brier score** – mean squared difference between the predicted probability and the 0/1 outcome, in [0, 1],
  lower is better (0.25 for always answering 0.5). It mixes calibration with discrimination: a calibrated but
  uninformative model still scores badly. The multi-class Brier score sums the squared differences over the K
  classes of a row before averaging over rows, so it lies in [0, 2].
* **Expected calibration error (ECE)** – predictions are grouped into bins of predicted probability; in each
  bin the observed frequency of positives is compared with the mean predicted probability, and ECE is the
  average of ``|observed - mean predicted|`` over bins weighted by the share of predictions in the bin:
  ``ECE = sum_b (n_b / N) * |observed_b - mean_predicted_b|``. 0 is perfect; 0.05 means the predicted
  probabilities are off by 5 percentage points on average. ECE depends on the binning and is biased upwards
  for small N (noise alone makes ``|observed - predicted|`` positive), so it is reported with its binning.
* **Top-label ECE** (multi-class) – the ECE of the *confidence* (the largest class probability) against
  *correctness* (the arg-max class is the true class), as in Guo et al. 2017.
* **Reliability bins** – the per-bin table behind the ECE (and the reliability diagram): bin edges, count,
  mean predicted probability, observed frequency.
* **Temperature scaling** (Guo et al., "On Calibration of Modern Neural Networks", ICML 2017) – one scalar
  ``T > 0`` divides the logits, fitted on validation data by minimising the negative log-likelihood. ``T > 1``
  softens over-confident predictions; rankings, hence AUCs, are unchanged.

Binning: ``n_bins`` equal-width bins of the predicted probability on [0, 1]: bin ``i`` is
``[i / n_bins, (i + 1) / n_bins)`` and the last bin also holds 1.0, i.e. for ``n_bins = 10``
``[0, 0.1), [0.1, 0.2), ..., [0.8, 0.9), [0.9, 1.0]``. A probability ``p`` falls into bin
``floor(p * n_bins)`` (1.0 into the last). Empty bins are left out (they do not contribute to the ECE).
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Sequence
from typing import Any

import numpy as np
import pandas as pd
from numpy.typing import ArrayLike
from scipy.optimize import minimize_scalar
from scipy.special import expit, logsumexp, softmax
from sklearn.metrics import brier_score_loss

from medtransfer.evaluation.metrics import (
    UndefinedMetricWarning,
    _as_2d,
    _binary_arrays,
    label_score_arrays,
    one_hot,
)

BIN_COLUMNS = ("bin_lo", "bin_hi", "n", "mean_predicted", "observed")


def _check_n_bins(n_bins: int) -> int:
    if isinstance(n_bins, bool) or int(n_bins) != n_bins or n_bins < 1:
        raise ValueError(f"n_bins must be a positive integer, got {n_bins!r}")
    return int(n_bins)


def _clean(y: ArrayLike, p: ArrayLike, name: str | None = None) -> tuple[np.ndarray, np.ndarray]:
    """0/1 labels and probabilities with unknown labels (and non-finite probabilities, with a warning) dropped."""
    y, p = _binary_arrays(y, p, name)
    if p.size and (p.min() < 0.0 or p.max() > 1.0):
        what = f"label '{name}': " if name else ""
        raise ValueError(f"{what}probabilities must lie in [0, 1]; got range [{p.min():.4g}, {p.max():.4g}]")
    return y, p


def _bin_sums(y: np.ndarray, p: np.ndarray, n_bins: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per bin: count, sum of predicted probabilities, sum of outcomes (on cleaned arrays).

    Written here because scikit-learn's ``calibration_curve`` returns no bin counts (needed for the ECE
    weights) and bins on ``np.linspace`` edges, whose rounding puts e.g. p = 0.3 into [0.2, 0.3).
    """
    idx = np.minimum(np.floor(p * n_bins).astype(int), n_bins - 1)
    count = np.bincount(idx, minlength=n_bins)
    sum_p = np.bincount(idx, weights=p, minlength=n_bins)
    sum_y = np.bincount(idx, weights=y, minlength=n_bins)
    return count, sum_p, sum_y


def _brier(y: np.ndarray, p: np.ndarray) -> float:
    return float(brier_score_loss(y, p, pos_label=1)) if y.size else float("nan")


def _ece(y: np.ndarray, p: np.ndarray, n_bins: int) -> float:
    if not y.size:
        return float("nan")
    _, sum_p, sum_y = _bin_sums(y, p, n_bins)
    # sum_b (n_b / N) * |sum_y_b / n_b - sum_p_b / n_b| = sum_b |sum_y_b - sum_p_b| / N (empty bins add 0)
    return float(np.abs(sum_y - sum_p).sum() / y.size)


def _bins(y: np.ndarray, p: np.ndarray, n_bins: int) -> pd.DataFrame:
    count, sum_p, sum_y = _bin_sums(y, p, n_bins)
    keep = np.flatnonzero(count)
    n = count[keep]
    return pd.DataFrame(
        {
            "bin_lo": keep / n_bins,
            "bin_hi": (keep + 1) / n_bins,
            "n": n.astype(int),
            "mean_predicted": sum_p[keep] / n,
            "observed": sum_y[keep] / n,
        },
        columns=list(BIN_COLUMNS),
    )


def brier_score(y: ArrayLike, p: ArrayLike) -> float:
    """Binary Brier score ``mean((p - y)^2)`` (scikit-learn's ``brier_score_loss``); NaN labels are dropped.

    Args:
        y: ``(N,)`` 0/1 labels, NaN = unknown.
        p: ``(N,)`` predicted probabilities of the positive class.

    Returns:
        The score in [0, 1] (lower is better); NaN when no label is known.

    Example:
        >>> round(brier_score([0, 1, 1, 0, np.nan], [0.1, 0.8, 0.6, 0.3, 0.9]), 6)
        0.075
    """
    return _brier(*_clean(y, p))


def expected_calibration_error(y: ArrayLike, p: ArrayLike, n_bins: int = 10) -> float:
    """Expected calibration error over ``n_bins`` equal-width bins of the predicted probability.

    Bins are ``[0, 1/n_bins), [1/n_bins, 2/n_bins), ..., [1 - 1/n_bins, 1]`` (for 10 bins
    ``[0, 0.1), ..., [0.9, 1.0]``); ``ECE = sum over non-empty bins of (n_bin / N) * |observed - mean predicted|``.
    NaN labels are dropped; NaN when no label is known.

    Example:
        >>> # bin [0.2, 0.3): 2 predictions (0.21, 0.29), mean 0.25, 1 positive -> |0.5 - 0.25| = 0.25, weight 2/3
        >>> # bin [0.9, 1.0]: 1 prediction of 0.9, positive -> |1 - 0.9| = 0.1, weight 1/3
        >>> round(expected_calibration_error([0, 1, 1, np.nan], [0.21, 0.29, 0.9, 0.5]), 6)
        0.2
    """
    return _ece(*_clean(y, p), _check_n_bins(n_bins))


def reliability_bins(y: ArrayLike, p: ArrayLike, n_bins: int = 10) -> pd.DataFrame:
    """The reliability table behind :func:`expected_calibration_error`: one row per non-empty bin.

    Columns ``bin_lo, bin_hi, n, mean_predicted, observed`` (observed = fraction of positives in the bin).
    The ``n`` sum to the number of known labels, and
    ``sum(n * |observed - mean_predicted|) / sum(n)`` is the ECE. NaN labels are dropped.

    Example:
        >>> reliability_bins([0, 1, 1, np.nan], [0.21, 0.29, 0.9, 0.5]).round(3).to_dict("list")
        {'bin_lo': [0.2, 0.9], 'bin_hi': [0.3, 1.0], 'n': [2, 1], 'mean_predicted': [0.25, 0.9], 'observed': [0.5, 1.0]}
    """
    return _bins(*_clean(y, p), _check_n_bins(n_bins))


def _records(bins: pd.DataFrame) -> list[dict[str, float | int]]:
    """Reliability rows as plain Python numbers (JSON-ready)."""
    return [{c: (int(row[c]) if c == "n" else float(row[c])) for c in BIN_COLUMNS} for row in bins.to_dict("records")]


def _multiclass_rows(y: np.ndarray, s: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Rows whose class is known (and whose scores are finite) of one-hot labels and class probabilities."""
    known = np.isfinite(y).all(axis=1)
    bad = known & ~np.isfinite(s).all(axis=1)
    if bad.any():
        warnings.warn(f"{int(bad.sum())} rows with non-finite scores dropped", UndefinedMetricWarning, stacklevel=3)
    keep = known & ~bad
    return y[keep], s[keep]


def calibration_metrics(
    labels: ArrayLike, scores: ArrayLike, names: Sequence[str], *, exclusive: bool = False, n_bins: int = 10
) -> dict[str, Any]:
    """Brier score, ECE and reliability bins for one prediction set (e.g. a test set).

    Schema::

        {"brier": float, "ece": float, "ece_bins": n_bins,
         "ece_binning": "<n_bins> equal-width bins of the predicted probability",
         "per_label": {name: {"brier", "ece", "n"}},
         "reliability": {name: [{"bin_lo", "bin_hi", "n", "mean_predicted", "observed"}, ...]}}

    Every label (class) column is scored on its own, one-vs-rest (``n`` = known labels of that column). For
    ``binary`` / ``multilabel`` the top-level ``brier`` / ``ece`` are the means over labels that have both
    classes among their known labels (NaN, with a warning, when none has). For ``multiclass`` the top-level
    ``brier`` is the multi-class Brier score (mean over rows of ``sum_k (p_k - y_k)^2``) and ``ece`` the top-label
    ECE (confidence = largest probability, correct = arg-max is the true class), over rows with a known class.
    Floats may be NaN; pass the result through :func:`~medtransfer.evaluation.metrics.to_jsonable` before
    ``json.dump``.

    Args:
        labels: ``(N, K)`` labels (NaN = unknown); for ``multiclass`` also ``(N,)`` class indices.
        scores: ``(N, K)`` probabilities; for ``binary`` also ``(N,)`` or ``(N, 2)`` softmax (column 1 used).
        names: K label (class) names.
        exclusive: labels are one-hot over exclusive classes (multi-class, softmax); otherwise each column is its own
            0/1 label (binary, multi-label; sigmoid).
        n_bins: number of equal-width probability bins for the ECE and the reliability bins.

    Example:
        >>> m = calibration_metrics([[0], [1], [1], [0]], [[0.1], [0.8], [0.6], [0.3]], ["pneumonia"], exclusive=False)
        >>> round(m["brier"], 6), sorted(m), m["per_label"]["pneumonia"]["n"]
        (0.075, ['brier', 'ece', 'ece_binning', 'ece_bins', 'per_label', 'reliability'], 4)
    """
    n_bins = _check_n_bins(n_bins)
    y, s = label_score_arrays(labels, scores, names, exclusive)

    per_label: dict[str, dict[str, float | int]] = {}
    reliability: dict[str, list[dict[str, float | int]]] = {}
    both_classes: list[str] = []
    for j, name in enumerate(names):
        yj, pj = _clean(y[:, j], s[:, j], name)
        per_label[name] = {"brier": _brier(yj, pj), "ece": _ece(yj, pj, n_bins), "n": int(yj.size)}
        reliability[name] = _records(_bins(yj, pj, n_bins))
        if np.unique(yj).size == 2:
            both_classes.append(name)

    if exclusive:
        yk, sk = _multiclass_rows(y, s)
        # Multi-class Brier written out: scikit-learn's brier_score_loss handles (N, K) only from 1.7 on.
        brier = float(np.mean(np.sum((sk - yk) ** 2, axis=1))) if yk.size else float("nan")
        correct = (np.argmax(sk, axis=1) == np.argmax(yk, axis=1)).astype(float)
        ece = _ece(correct, sk.max(axis=1), n_bins) if yk.size else float("nan")
    elif both_classes:
        brier = float(np.mean([per_label[n]["brier"] for n in both_classes]))
        ece = float(np.mean([per_label[n]["ece"] for n in both_classes]))
    else:
        warnings.warn(
            "calibration summary undefined: no label has both classes among its known labels; reporting NaN",
            UndefinedMetricWarning,
            stacklevel=2,
        )
        brier = ece = float("nan")
    return {
        "brier": brier,
        "ece": ece,
        "ece_bins": n_bins,
        "ece_binning": f"{n_bins} equal-width bins of the predicted probability",
        "per_label": per_label,
        "reliability": reliability,
    }


def _logit_arrays(logits: ArrayLike, labels: ArrayLike, exclusive: bool) -> tuple[np.ndarray, np.ndarray]:
    """``(N, K)`` logits and labels of the known entries: a flat pair for sigmoid tasks, known rows for softmax."""
    z = _as_2d(logits, "logits")
    y = np.asarray(labels, dtype=float)
    if exclusive and y.ndim == 1:
        y = one_hot(y, z.shape[1])
    y = _as_2d(y, "labels")
    if y.shape != z.shape:
        raise ValueError(f"labels {y.shape} and logits {z.shape} must have the same shape")
    if exclusive:
        known = np.isfinite(y).all(axis=1)
        z, y = z[known], y[known]
        if y.size and not (np.isin(y, (0.0, 1.0)).all() and (y.sum(axis=1) == 1).all()):
            raise ValueError("multiclass labels must be one-hot rows (or NaN rows for an unknown class)")
    else:
        known = np.isfinite(y)
        z, y = z[known], y[known]
        if not np.isin(y, (0.0, 1.0)).all():
            raise ValueError(f"labels must be 0, 1 or NaN; found {np.unique(y)[:5]}")
    if not y.size:
        raise ValueError("cannot fit a temperature: no known labels (all labels are NaN or there are no rows)")
    if not np.isfinite(z).all():
        raise ValueError("cannot fit a temperature: logits of known labels must be finite")
    return z, y


def _nll(z: np.ndarray, y: np.ndarray, exclusive: bool, temperature: float) -> float:
    """Mean negative log-likelihood of ``logits / temperature`` (numerically stable forms)."""
    t = z / temperature
    if exclusive:
        return float(np.mean(logsumexp(t, axis=1) - np.sum(t * y, axis=1)))  # cross-entropy, y one-hot
    return float(np.mean(np.logaddexp(0.0, t) - y * t))  # binary cross-entropy on sigmoid(t)


def fit_temperature(
    logits: ArrayLike, labels: ArrayLike, *, exclusive: bool = False, bounds: tuple[float, float] = (0.05, 20.0)
) -> float:
    """Temperature scaling (Guo et al. 2017): the ``T > 0`` minimising the validation NLL of ``logits / T``.

    ``binary`` / ``multilabel``: probabilities ``sigmoid(logit / T)``, binary cross-entropy over the known
    (non-NaN) entries, one ``T`` shared by all labels. ``multiclass``: ``softmax(logits / T)``, cross-entropy over
    rows whose class is known. ``log T`` is optimised with SciPy's bounded ``minimize_scalar`` over ``bounds``;
    a warning is given when the optimum sits on a bound. Fit on validation data, never on the test set.

    Args:
        logits: ``(N, K)`` (or ``(N,)``) raw model outputs, before sigmoid / softmax.
        labels: ``(N, K)`` labels, NaN = unknown (one-hot for ``multiclass``, which also takes ``(N,)`` indices).
        exclusive: labels are one-hot over exclusive classes (multi-class, softmax); otherwise each column is its own
            0/1 label (binary, multi-label; sigmoid).
        bounds: the range searched for ``T``.

    Raises:
        ValueError: no known labels, non-finite logits, or labels that are not 0/1 (one-hot).

    Example:
        >>> # 3 of 4 right at logit +-2: the fit makes sigmoid(2 / T) = 0.75, i.e. T = 2 / log(3)
        >>> round(fit_temperature([2.0, -2.0, 2.0, -2.0], [1, 0, 0, 0], exclusive=False), 3)
        1.82
    """
    z, y = _logit_arrays(logits, labels, exclusive)
    lo, hi = bounds
    if not (0 < lo < hi and math.isfinite(hi)):
        raise ValueError(f"bounds must satisfy 0 < lo < hi < inf, got {bounds}")
    res = minimize_scalar(
        lambda log_t: _nll(z, y, exclusive, math.exp(log_t)),
        bounds=(math.log(lo), math.log(hi)),
        method="bounded",
        options={"xatol": 1e-6},
    )
    temperature = float(math.exp(res.x))
    if min(abs(res.x - math.log(lo)), abs(res.x - math.log(hi))) < 1e-3:
        warnings.warn(
            f"fitted temperature {temperature:.3g} sits on the search bound {bounds}: the logits carry little "
            "calibratable signal (e.g. one class only, or random predictions)",
            UndefinedMetricWarning,
            stacklevel=2,
        )
    return temperature


def apply_temperature(logits: ArrayLike, temperature: float, *, exclusive: bool = False) -> np.ndarray:
    """Probabilities from logits scaled by a fitted temperature: ``sigmoid(logits / T)`` or ``softmax(logits / T)``.

    ``binary`` / ``multilabel`` apply the sigmoid element-wise (any shape); ``multiclass`` takes ``(N, K)``
    logits and applies the softmax over the K classes. The output has the shape of ``logits``.

    Example:
        >>> apply_temperature([[2.0, 0.0], [0.0, 0.0]], 2.0, exclusive=True).round(3).tolist()
        [[0.731, 0.269], [0.5, 0.5]]
        >>> apply_temperature([0.0, 2.0], 2.0, exclusive=False).round(3).tolist()
        [0.5, 0.731]
    """
    t = float(temperature)
    if not (math.isfinite(t) and t > 0):
        raise ValueError(f"temperature must be a finite number > 0, got {temperature!r}")
    z = np.asarray(logits, dtype=float) / t
    if exclusive:
        if z.ndim != 2:
            raise ValueError(f"multiclass logits must be (N, K), got shape {z.shape}")
        return softmax(z, axis=1)
    return expit(z)
