"""Segmentation metrics per foreground class: Dice, HD95 (mm), and a bootstrap summary over cases.

Conventions (one per class and case):

* NaN means "not evaluable": the class is absent from both prediction and ground truth. NaNs are left out of
  means, never counted as 0 or 1.
* A class present in only one of the two gets Dice 0 and HD95 ``inf``: a missed (or hallucinated) structure is
  the worst outcome, and a NaN would silently drop it from a mean. MONAI 1.6 returns NaN for HD95 here (it takes
  the percentile of all-infinite distances) and ``inf`` for the plain Hausdorff distance; report HD95 with a
  median or with the count of infinite cases, not a mean.
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from typing import Any

import numpy as np
from numpy.typing import ArrayLike


def _label_pair(pred: ArrayLike, gt: ArrayLike, n_classes: int) -> tuple[np.ndarray, np.ndarray]:
    p, g = np.asarray(pred), np.asarray(gt)
    if p.shape != g.shape:
        raise ValueError(f"prediction {p.shape} and ground truth {g.shape} must have the same shape")
    for name, a in (("prediction", p), ("ground truth", g)):
        if a.size and (a.min() < 0 or a.max() >= n_classes):
            raise ValueError(f"{name} values must be in 0..{n_classes - 1}, got {a.min()}..{a.max()}")
    return p.astype(np.int64, copy=False), g.astype(np.int64, copy=False)


def dice_per_class(pred: ArrayLike, gt: ArrayLike, n_classes: int) -> np.ndarray:
    """Dice of each foreground class ``1..K-1``; NaN where the class is in neither volume.

    Computed here rather than with MONAI's ``DiceMetric``: one bincount of (pred, gt) pairs gives every class
    without one-hot volumes, and ``DiceMetric(ignore_empty=True)`` gives NaN whenever the ground truth is empty,
    even when the prediction has false positives (we give 0 there).

    Example:
        >>> dice_per_class(np.array([0, 1, 1, 2]), np.array([0, 1, 2, 2]), 4)
        array([0.66666667, 0.66666667,        nan])
    """
    p, g = _label_pair(pred, gt, n_classes)
    counts = np.bincount((p * n_classes + g).ravel(), minlength=n_classes * n_classes).reshape(n_classes, n_classes)
    both = np.diag(counts).astype(float)
    total = (counts.sum(axis=1) + counts.sum(axis=0)).astype(float)
    dice = np.full(n_classes, np.nan)
    np.divide(2 * both, total, out=dice, where=total > 0)
    return dice[1:]


def hd95_per_class(pred: ArrayLike, gt: ArrayLike, n_classes: int, spacing: Sequence[float]) -> np.ndarray:
    """95th-percentile symmetric Hausdorff distance (mm) of each foreground class, via MONAI.

    As MONAI's ``HausdorffDistanceMetric(percentile=95)``: boundary voxels by erosion, Euclidean distances with
    the voxel ``spacing``, the 95th percentile in each direction, the larger of the two. NaN when the class is in
    neither volume, ``inf`` when it is in only one (MONAI gives NaN there; see the module docstring).

    Example:
        >>> gt = np.zeros((8, 8, 8), int); gt[2:5, 2:5, 2:5] = 1
        >>> hd95_per_class(np.roll(gt, 1, axis=0), gt, 3, spacing=(2.0, 1.0, 1.0))
        array([ 2., nan])
    """
    # deferred: monai takes seconds to import (torch with it); Dice needs neither, only HD95 does
    import torch
    from monai.metrics import compute_hausdorff_distance

    p, g = _label_pair(pred, gt, n_classes)
    if len(spacing) != p.ndim:
        raise ValueError(f"spacing must have {p.ndim} values, got {spacing}")
    out = np.full(n_classes - 1, np.nan)
    for c in range(1, n_classes):
        pc, gc = p == c, g == c
        has_p, has_g = bool(pc.any()), bool(gc.any())
        if has_p != has_g:
            out[c - 1] = np.inf
        if not (has_p and has_g):
            continue
        # MONAI converts the whole volume to float before cropping to the structures; cropping first (with a
        # one-voxel margin, as MONAI does) keeps memory at the size of the structure.
        nz = np.nonzero(pc | gc)
        box = tuple(slice(max(0, int(i.min()) - 1), int(i.max()) + 2) for i in nz)
        with warnings.catch_warnings():
            # MONAI 1.6 passes its own deprecated argument internally (always_return_as_numpy); nothing to act on.
            warnings.filterwarnings("ignore", message=".*always_return_as_numpy", category=FutureWarning)
            hd = compute_hausdorff_distance(
                torch.from_numpy(pc[box])[None, None],
                torch.from_numpy(gc[box])[None, None],
                include_background=True,
                percentile=95,
                spacing=[float(s) for s in spacing],
            )
        out[c - 1] = float(hd[0, 0])
    return out


def _nanmean(values: np.ndarray, axis: int) -> np.ndarray:
    """Mean along ``axis`` ignoring NaN; NaN where nothing is left (without numpy's empty-slice warning)."""
    finite = np.isfinite(values)
    n = finite.sum(axis=axis)
    total = np.where(finite, values, 0.0).sum(axis=axis)
    out = np.full(np.shape(total), np.nan)
    np.divide(total, n, out=out, where=n > 0)
    return out


def _ci(values: np.ndarray, alpha: float) -> list[float]:
    finite = values[np.isfinite(values)]
    if finite.size == 0:
        return [float("nan"), float("nan")]
    return [float(v) for v in np.percentile(finite, [100 * alpha / 2, 100 * (1 - alpha / 2)])]


def summarize_segmentation(
    dices: ArrayLike, class_names: Sequence[str], seed: int = 0, *, n_boot: int = 1000, alpha: float = 0.05
) -> dict[str, Any]:
    """Mean Dice with percentile-bootstrap CIs over cases, overall and per class.

    ``dice`` is the mean over classes of each class's mean over the cases where it is evaluable (NaN-aware).
    Each bootstrap replicate resamples cases (rows) with replacement and recomputes the same statistic.

    Args:
        dices: ``(n_cases, K-1)`` per-class Dice from :func:`dice_per_class`, NaN = not evaluable.
        class_names: the K-1 foreground names, or the K names with ``background`` first (then dropped).
        seed: seed of the resampling; the same seed gives the same intervals.
        n_boot: replicates (0 skips the CIs: they become ``[nan, nan]``).
        alpha: 1 - coverage.

    Returns:
        ``{"dice", "dice_ci": [lo, hi], "n", "per_label": {name: {"dice", "dice_ci", "n"}}}``, ``n`` counting
        cases (per label: the cases where it is evaluable). Pass through
        :func:`medtransfer.evaluation.metrics.to_jsonable` before ``json.dump``.

    Example:
        >>> m = summarize_segmentation([[0.8, np.nan], [0.9, 0.7]], ["background", "Anterior", "Posterior"], n_boot=50)
        >>> round(m["dice"], 3), m["per_label"]["Posterior"]["n"]
        (0.775, 1)
    """
    d = np.asarray(dices, dtype=float)
    if d.ndim != 2:
        raise ValueError(f"dices must be (n_cases, K-1), got shape {d.shape}")
    names = list(class_names)
    if len(names) == d.shape[1] + 1 and names[0] == "background":
        names = names[1:]
    if len(names) != d.shape[1]:
        raise ValueError(f"{len(names)} class names for {d.shape[1]} Dice columns")
    per_class = _nanmean(d, axis=0)
    boot = np.full((max(n_boot, 0), d.shape[1]), np.nan)
    if n_boot > 0 and d.shape[0] > 0:
        draws = np.random.default_rng(seed).integers(0, d.shape[0], size=(n_boot, d.shape[0]))
        boot = _nanmean(d[draws], axis=1)  # (n_boot, K-1): per-class means of each replicate
    overall = _nanmean(per_class, axis=0)
    boot_overall = _nanmean(boot, axis=1)
    per_label = {
        name: {"dice": float(per_class[j]), "dice_ci": _ci(boot[:, j], alpha), "n": int(np.isfinite(d[:, j]).sum())}
        for j, name in enumerate(names)
    }
    return {"dice": float(overall), "dice_ci": _ci(boot_overall, alpha), "n": int(d.shape[0]), "per_label": per_label}
