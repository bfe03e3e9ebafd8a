"""Classification metrics as pure functions on numpy arrays, and the ``metrics.json`` summary.

Labels follow the data contract: ``(N, K)`` floats, ``NaN`` = unknown. Binary tasks have K = 1, multi-label
tasks one column per finding, multi-class tasks are one-hot over K classes (a NaN row = unknown class), so
one-vs-rest AUCs from softmax probabilities come from the same per-label code.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any

import numpy as np
from numpy.typing import ArrayLike
from sklearn.metrics import roc_auc_score, roc_curve

from medtransfer.config import threshold_rule
from medtransfer.evaluation.operating import operating_points
from medtransfer.evaluation.stats import bootstrap_auc_ci
from medtransfer.registry import Registry


class UndefinedMetricWarning(UserWarning):
    """A metric is undefined for this input (e.g. AUC with one class) and was reported as NaN."""


def _binary_arrays(y_true: ArrayLike, score: ArrayLike, name: str | None) -> tuple[np.ndarray, np.ndarray]:
    """Flatten, check shapes and 0/1 labels, and drop unknown labels and non-finite scores."""
    y = np.asarray(y_true, dtype=float).ravel()
    s = np.asarray(score, dtype=float).ravel()
    what = f"label '{name}'" if name else "labels"
    if y.shape != s.shape:
        raise ValueError(f"{what}: y_true has {y.size} entries but score has {s.size}")
    known = np.isfinite(y)
    if not np.isin(y[known], (0.0, 1.0)).all():
        raise ValueError(f"{what}: y_true must be 0, 1 or NaN; found {np.unique(y[known])[:5]}")
    bad_score = known & ~np.isfinite(s)
    if bad_score.any():
        warnings.warn(f"{what}: {int(bad_score.sum())} non-finite scores dropped", UndefinedMetricWarning, stacklevel=3)
    keep = known & np.isfinite(s)
    return y[keep], s[keep]


def roc_auc(y_true: ArrayLike, score: ArrayLike, name: str | None = None) -> float:
    """Binary ROC AUC (scikit-learn); NaN labels are dropped, one class gives NaN and a warning.

    Args:
        y_true: ``(N,)`` 0/1 labels, NaN = unknown.
        score: ``(N,)`` scores, higher = more likely positive.
        name: label name used in the warning.

    Example:
        >>> roc_auc([0, 1, np.nan, 1], [0.2, 0.9, 0.5, 0.7])
        1.0
    """
    y, s = _binary_arrays(y_true, score, name)
    if np.unique(y).size < 2:
        what = f"label '{name}'" if name else "y_true"
        warnings.warn(
            f"AUC undefined for {what}: only one class among {y.size} known labels; reporting NaN",
            UndefinedMetricWarning,
            stacklevel=2,
        )
        return float("nan")
    return float(roc_auc_score(y, s))


def _as_2d(a: ArrayLike, name: str) -> np.ndarray:
    arr = np.asarray(a, dtype=float)
    if arr.ndim == 1:
        arr = arr[:, None]
    if arr.ndim != 2:
        raise ValueError(f"{name} must be (N,) or (N, K), got shape {arr.shape}")
    return arr


def _check_label_arrays(labels: ArrayLike, scores: ArrayLike, names: Sequence[str]) -> tuple[np.ndarray, ...]:
    y, s = _as_2d(labels, "labels"), _as_2d(scores, "scores")
    if y.shape != s.shape:
        raise ValueError(f"labels {y.shape} and scores {s.shape} must have the same shape")
    if len(names) != y.shape[1]:
        raise ValueError(f"{len(names)} names for {y.shape[1]} label columns")
    return y, s


def per_label_auc(labels: ArrayLike, scores: ArrayLike, names: Sequence[str]) -> dict[str, dict[str, float | int]]:
    """AUC and class counts for each column; works for multi-label and one-hot multi-class (one-vs-rest).

    Example:
        >>> y = np.array([[1, 0], [0, 1], [1, np.nan]])
        >>> per_label_auc(y, [[0.9, 0.2], [0.1, 0.8], [0.7, 0.5]], ["a", "b"])["a"]
        {'auc': 1.0, 'n_pos': 2, 'n_neg': 1}
    """
    y, s = _check_label_arrays(labels, scores, names)
    out: dict[str, dict[str, float | int]] = {}
    for j, name in enumerate(names):
        col = y[:, j]
        out[name] = {
            "auc": roc_auc(col, s[:, j], name=name),
            "n_pos": int(np.sum(col == 1)),
            "n_neg": int(np.sum(col == 0)),
        }
    return out


def macro_auc(aucs: Mapping[str, Mapping[str, Any]] | Iterable[float]) -> float:
    """Mean AUC over labels, ignoring NaN (undefined) labels; NaN if none is defined.

    Accepts the output of :func:`per_label_auc` or plain AUC values.

    Example:
        >>> macro_auc([0.75, float("nan"), 0.25])
        0.5
    """
    values = [v["auc"] for v in aucs.values()] if isinstance(aucs, Mapping) else list(aucs)
    arr = np.asarray(values, dtype=float)
    arr = arr[np.isfinite(arr)]
    return float(arr.mean()) if arr.size else float("nan")


def one_hot(classes: ArrayLike, n_classes: int) -> np.ndarray:
    """Integer class indices → ``(N, K)`` one-hot floats; a negative or NaN index gives a NaN row.

    Example:
        >>> one_hot([2, -1, 0], 3).tolist()
        [[0.0, 0.0, 1.0], [nan, nan, nan], [1.0, 0.0, 0.0]]
    """
    c = np.asarray(classes, dtype=float).ravel()
    known = np.isfinite(c) & (c >= 0)
    if np.any(c[known] >= n_classes) or np.any(c[known] % 1 != 0):
        raise ValueError(f"class indices must be integers in [0, {n_classes}), got {np.unique(c[known])[:5]}")
    out = np.full((c.size, n_classes), np.nan)
    out[known] = 0.0
    out[np.flatnonzero(known), c[known].astype(int)] = 1.0
    return out


# A threshold rule maps (y, score, target) with both classes present to a threshold; predictions are score >= t.
# `eval.threshold` names one (medtransfer.config.threshold_rule parses it): youden, sensitivity:X, specificity:X,
# or a fixed probability.
THRESHOLD_METHODS: Registry[Callable[[np.ndarray, np.ndarray, float | None], float]] = Registry("threshold method")


@THRESHOLD_METHODS.register("youden")
def _youden(y: np.ndarray, s: np.ndarray, target: float | None = None) -> float:
    fpr, tpr, thr = roc_curve(y, s)
    j = tpr - fpr
    # roc_curve starts at +inf ("nobody positive"); an infinite threshold is useless downstream and
    # only wins when the scores carry no information, so it is never chosen.
    j[~np.isfinite(thr)] = -np.inf
    return float(thr[int(np.argmax(j))])


@THRESHOLD_METHODS.register("sensitivity")
def _at_sensitivity(y: np.ndarray, s: np.ndarray, target: float | None) -> float:
    """The highest threshold whose sensitivity on these images is at least ``target`` (the most specific one)."""
    _, tpr, thr = roc_curve(y, s, drop_intermediate=False)
    return float(thr[int(np.argmax(tpr >= float(target) - 1e-12))])


@THRESHOLD_METHODS.register("specificity")
def _at_specificity(y: np.ndarray, s: np.ndarray, target: float | None) -> float:
    """The lowest threshold whose specificity on these images is at least ``target`` (the most sensitive one);
    just above the highest score when only "nobody positive" reaches it."""
    fpr, _, thr = roc_curve(y, s, drop_intermediate=False)
    last = int(np.flatnonzero(fpr <= 1.0 - float(target) + 1e-12)[-1])
    return float(thr[last]) if last > 0 else float(np.nextafter(s.max(), np.inf))


@THRESHOLD_METHODS.register("fixed")
def _fixed(y: np.ndarray, s: np.ndarray, target: float | None) -> float:
    return float(target)


def choose_threshold(y_true: ArrayLike, score: ArrayLike, method: str | float = "youden") -> float:
    """Pick a decision threshold on validation data (predict positive when ``score >= threshold``).

    Args:
        y_true: ``(N,)`` 0/1 labels, NaN = unknown.
        score: ``(N,)`` scores.
        method: an ``eval.threshold`` rule: ``"youden"`` (maximise sensitivity + specificity - 1),
            ``"sensitivity:0.9"``, ``"specificity:0.95"`` or a fixed probability (``0.5``).

    Returns:
        The threshold; NaN (with a warning) when the labels have one class.

    Example:
        >>> choose_threshold([0, 0, 1, 1], [0.1, 0.4, 0.6, 0.8])
        0.6
        >>> choose_threshold([0, 0, 0, 0, 1, 1], [0.1, 0.2, 0.3, 0.7, 0.6, 0.8], "specificity:1")
        0.8
    """
    name, target = threshold_rule(method)
    rule = THRESHOLD_METHODS.get(name)
    y, s = _binary_arrays(y_true, score, None)
    if name == "fixed":
        return float(target)
    if np.unique(y).size < 2:
        warnings.warn(
            "threshold undefined: only one class in y_true; returning NaN",
            UndefinedMetricWarning,
            stacklevel=2,
        )
        return float("nan")
    return rule(y, s, target)


def threshold_metrics(y_true: ArrayLike, score: ArrayLike, threshold: float) -> dict[str, float]:
    """Sensitivity, specificity and accuracy of ``score >= threshold``; NaN where a class is absent.

    Example:
        >>> threshold_metrics([0, 0, 1, 1], [0.1, 0.7, 0.6, 0.8], 0.5)
        {'sensitivity': 1.0, 'specificity': 0.5, 'accuracy': 0.75, 'threshold': 0.5}
    """
    y, s = _binary_arrays(y_true, score, None)
    nan = float("nan")
    if not math.isfinite(threshold) or y.size == 0:
        return {"sensitivity": nan, "specificity": nan, "accuracy": nan, "threshold": float(threshold)}
    pred, pos = s >= threshold, y == 1
    n_pos, n_neg = int(pos.sum()), int((~pos).sum())
    return {
        "sensitivity": float((pred & pos).sum() / n_pos) if n_pos else nan,
        "specificity": float((~pred & ~pos).sum() / n_neg) if n_neg else nan,
        "accuracy": float((pred == pos).mean()),
        "threshold": float(threshold),
    }


def top1_accuracy(labels: ArrayLike, scores: ArrayLike) -> float:
    """Multi-class accuracy: argmax of scores vs the one-hot label, over rows with a known class.

    Example:
        >>> top1_accuracy([[1, 0], [0, 1], [np.nan, np.nan]], [[0.6, 0.4], [0.7, 0.3], [0.5, 0.5]])
        0.5
    """
    y, s = _as_2d(labels, "labels"), _as_2d(scores, "scores")
    known = np.isfinite(y).all(axis=1)
    if not known.any():
        return float("nan")
    return float(np.mean(np.argmax(s[known], axis=1) == np.argmax(y[known], axis=1)))


def label_score_arrays(
    labels: ArrayLike, scores: ArrayLike, names: Sequence[str], exclusive: bool
) -> tuple[np.ndarray, np.ndarray]:
    """``(N, K)`` labels and scores as the summaries take them: a binary ``(N, 2)`` softmax keeps its positive
    column, exclusive class indices ``(N,)`` become one-hot; shapes and names are checked."""
    s = np.asarray(scores, dtype=float)
    if not exclusive and s.ndim == 2 and s.shape[1] == 2 and len(names) == 1:
        s = s[:, 1]  # softmax over (negative, positive)
    y = np.asarray(labels, dtype=float)
    if exclusive and y.ndim == 1:
        y = one_hot(y, len(names))
    return _check_label_arrays(y, s, names)


def summarize(
    labels: ArrayLike,
    scores: ArrayLike,
    names: Sequence[str],
    *,
    exclusive: bool = False,
    patient_ids: ArrayLike | None = None,
    thresholds: Mapping[str, float] | float | None = None,
    n_boot: int = 1000,
    seed: int = 0,
) -> dict[str, Any]:
    """Everything that goes into ``metrics.json`` for one test set.

    Schema: ``{"auc", "auc_ci": [lo, hi], "n", "per_label": {name: {"auc", "auc_ci", "n_pos", "n_neg"}}}``;
    each label also gets ``"sensitivity", "specificity", "accuracy", "threshold"`` when ``thresholds`` has
    it (thresholds are chosen on validation, never on the test set), and multi-class adds top-1
    ``"accuracy"``. Binary and multi-label tasks also get ``"operating_point"`` (each label's, and the summary's: the
    one label's or the macro mean; :mod:`medtransfer.evaluation.operating`): sensitivity, specificity, PPV, NPV, F1 and
    accuracy at the threshold, sensitivity at specificity 0.90 and 0.95, each with its CI. CIs are 95% percentile
    bootstrap, resampling patients when ``patient_ids`` is given.
    Floats may be NaN; pass the result through :func:`to_jsonable` before ``json.dump``.

    Args:
        labels: ``(N, K)`` labels (NaN = unknown); for ``multiclass`` also ``(N,)`` class indices.
        scores: ``(N, K)`` probabilities; for ``binary`` also ``(N,)`` or ``(N, 2)`` softmax (column 1 used).
        names: K label (class) names.
        exclusive: labels are one-hot over exclusive classes (multi-class: also top-1 ``accuracy``); otherwise each
            column is its own 0/1 label (binary, multi-label).
        patient_ids: ``(N,)`` ids for the cluster bootstrap.
        thresholds: label name → threshold from :func:`choose_threshold` on validation (a bare float
            is accepted when there is one label).
        n_boot: bootstrap replicates (0 skips the CIs: they become ``[nan, nan]``).
        seed: bootstrap seed.

    Example:
        >>> y = np.array([[0.0], [1.0], [0.0], [1.0]])
        >>> m = summarize(y, [[0.2], [0.9], [0.4], [0.6]], ["pneumonia"], n_boot=50)
        >>> m["auc"], sorted(m["per_label"]["pneumonia"])
        (1.0, ['auc', 'auc_ci', 'n_neg', 'n_pos', 'operating_point'])
    """
    y, s = label_score_arrays(labels, scores, names, exclusive)
    if isinstance(thresholds, int | float):
        if len(names) != 1:
            raise ValueError(f"a single threshold needs one label; got {len(names)}: pass {{name: threshold}}")
        thresholds = {names[0]: float(thresholds)}
    per_label = per_label_auc(y, s, names)
    if n_boot > 0:
        macro_ci, label_cis = bootstrap_auc_ci(y, s, groups=patient_ids, n_boot=n_boot, seed=seed)
    else:
        macro_ci, label_cis = (math.nan, math.nan), [(math.nan, math.nan)] * len(names)
    points, macro_point = (None, None) if exclusive else _operating(y, s, names, thresholds, patient_ids, n_boot, seed)
    for j, name in enumerate(names):
        entry = {"auc": per_label[name]["auc"], "auc_ci": list(label_cis[j])}
        entry.update(n_pos=per_label[name]["n_pos"], n_neg=per_label[name]["n_neg"])
        if thresholds is not None and name in thresholds:
            entry.update(threshold_metrics(y[:, j], s[:, j], thresholds[name]))
        if points is not None:
            entry["operating_point"] = points[j]
        per_label[name] = entry
    out: dict[str, Any] = {"auc": macro_auc(per_label), "auc_ci": list(macro_ci), "n": int(y.shape[0])}
    if exclusive:
        out["accuracy"] = top1_accuracy(y, s)
    else:
        out["operating_point"] = macro_point
    out["per_label"] = per_label
    return out


def _operating(y, s, names, thresholds, patient_ids, n_boot, seed) -> tuple[list[dict], dict]:
    """Each label's operating point at its validation threshold (sensitivity at the target specificities only, when
    it has none) and the summary's ``operating_point``: the one label's, or the labels' macro mean."""
    thr = [float((thresholds or {}).get(name, math.nan)) for name in names]
    points, macro = operating_points(y, s, thr, groups=patient_ids, n_boot=n_boot, seed=seed)
    return points, (points[0] if len(names) == 1 else macro)


def to_jsonable(obj: Any) -> Any:
    """Recursively turn NaN/inf into ``None``, numpy scalars/arrays into Python, tuples into lists.

    Example:
        >>> to_jsonable({"auc": float("nan"), "ci": (np.float32(0.5), 1.0)})
        {'auc': None, 'ci': [0.5, 1.0]}
    """
    if isinstance(obj, Mapping):
        return {str(k): to_jsonable(v) for k, v in obj.items()}
    if isinstance(obj, np.ndarray):
        return to_jsonable(obj.tolist())
    if isinstance(obj, list | tuple):
        return [to_jsonable(v) for v in obj]
    if isinstance(obj, np.generic):
        obj = obj.item()
    if isinstance(obj, float) and not math.isfinite(obj):
        return None
    return obj
