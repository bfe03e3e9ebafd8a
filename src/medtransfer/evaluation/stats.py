"""Uncertainty and comparisons: bootstrap AUC CIs, DeLong's test, paired tests across seeds.

Everything here is a pure function on numpy arrays. Labels follow the data contract: ``(N, K)`` floats with
``NaN`` for unknown; rows with an unknown label (or a non-finite score) are left out per label.
"""

from __future__ import annotations

import warnings
from collections.abc import Iterator, Sequence
from dataclasses import dataclass

import numpy as np
from numpy.typing import ArrayLike
from scipy import stats as sps

# Bootstrap weights are built in chunks of replicates so that (replicates x images) stays near this many
# elements (~32 MB of float64), whatever N is: 1000 resamples of CXR14-sized test sets fit in memory.
_CHUNK_ELEMENTS = 4_000_000


@dataclass(frozen=True)
class _SortedLabel:
    """One label's valid rows sorted by score, with the start of each run of tied scores."""

    cols: np.ndarray  # indices into the N rows, in score order
    starts: np.ndarray  # first position of each group of tied scores
    positive: np.ndarray  # bool, label of each sorted row


def _sort_label(y: np.ndarray, score: np.ndarray) -> _SortedLabel:
    valid = np.flatnonzero(np.isfinite(y) & np.isfinite(score))
    order = valid[np.argsort(score[valid], kind="stable")]
    # Dense ranks mark groups of tied scores; a tie counts one half, as with Mann–Whitney midranks.
    dense = sps.rankdata(score[order], method="dense")
    starts = np.flatnonzero(np.diff(dense, prepend=0))
    return _SortedLabel(order, starts, y[order] == 1)


def _auc_from_weights(lab: _SortedLabel, weights: np.ndarray) -> np.ndarray:
    """AUC for each row of ``weights`` (B, N): row b counts image i ``weights[b, i]`` times."""
    if lab.cols.size == 0:
        return np.full(weights.shape[0], np.nan)
    w = weights[:, lab.cols]
    pos = np.add.reduceat(w * lab.positive, lab.starts, axis=1)
    neg = np.add.reduceat(w, lab.starts, axis=1) - pos
    below = np.cumsum(neg, axis=1) - neg
    num = (pos * (below + 0.5 * neg)).sum(axis=1)
    den = pos.sum(axis=1) * neg.sum(axis=1)
    out = np.full(weights.shape[0], np.nan)
    np.divide(num, den, out=out, where=den > 0)  # one-class replicates stay NaN
    return out


def weighted_auc(y_true: ArrayLike, score: ArrayLike, weights: ArrayLike | None = None) -> np.ndarray:
    """Rank-based (Mann–Whitney) AUC with integer case weights; the kernel of :func:`bootstrap_auc_ci`.

    Weight ``w`` on a case is the same as repeating it ``w`` times, so a bootstrap replicate is one row of
    counts. Rows of ``y_true`` that are NaN are ignored. One-class rows give NaN.

    Args:
        y_true: ``(N,)`` 0/1 labels, NaN = unknown.
        score: ``(N,)`` scores, higher = more likely positive.
        weights: ``(B, N)`` or ``(N,)`` non-negative weights; ``None`` means all ones.

    Returns:
        ``(B,)`` AUCs (``(1,)`` when ``weights`` is ``None`` or 1-D).

    Example:
        >>> weighted_auc([0, 0, 1, 1], [0.1, 0.5, 0.5, 0.9], [[1, 1, 1, 1], [2, 0, 0, 1]])
        array([0.875, 1.   ])
    """
    y = np.asarray(y_true, dtype=float).ravel()
    s = np.asarray(score, dtype=float).ravel()
    w = np.ones((1, y.size)) if weights is None else np.atleast_2d(np.asarray(weights, dtype=float))
    if s.shape != y.shape or w.shape[1] != y.size:
        raise ValueError(f"shapes differ: y_true {y.shape}, score {s.shape}, weights {w.shape}")
    return _auc_from_weights(_sort_label(y, s), w)


def rank_auc(y_true: ArrayLike, score: ArrayLike) -> float:
    """AUC as the Mann–Whitney U statistic from midranks; NaN labels dropped, NaN if one class.

    Example:
        >>> rank_auc([0, 0, 1, 1], [0.1, 0.5, 0.5, 0.9])
        0.875
    """
    y = np.asarray(y_true, dtype=float).ravel()
    s = np.asarray(score, dtype=float).ravel()
    keep = np.isfinite(y) & np.isfinite(s)
    y, s = y[keep] == 1, s[keep]
    n_pos, n_neg = int(y.sum()), int((~y).sum())
    if n_pos == 0 or n_neg == 0:
        return float("nan")
    ranks = sps.rankdata(s)
    return float((ranks[y].sum() - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg))


def _as_2d(a: ArrayLike, name: str) -> np.ndarray:
    arr = np.asarray(a, dtype=float)
    if arr.ndim == 1:
        arr = arr[:, None]
    if arr.ndim != 2:
        raise ValueError(f"{name} must be (N,) or (N, K), got shape {arr.shape}")
    return arr


def _percentile_ci(values: np.ndarray, alpha: float) -> tuple[float, float]:
    finite = values[np.isfinite(values)]
    if finite.size == 0:
        return (float("nan"), float("nan"))
    lo, hi = np.percentile(finite, [100 * alpha / 2, 100 * (1 - alpha / 2)])
    return (float(lo), float(hi))


def bootstrap_weights(n: int, groups: ArrayLike | None, n_boot: int, seed: int) -> Iterator[np.ndarray]:
    """``(b, n)`` row-weight blocks of ``n_boot`` bootstrap replicates, ``b`` at a time (memory-bounded blocks).

    With ``groups`` it is a cluster bootstrap: units (patients) are drawn with replacement and each brings all its
    rows. Every replicate is one row of weights (how often a row was drawn), so a statistic over all replicates is
    one vectorised pass; :func:`bootstrap_auc_ci` and the regression metrics use the same draws.
    """
    if groups is None:
        unit_of_row, n_units = np.arange(n), n
    else:
        g = np.asarray(groups).astype(str).ravel()
        if g.size != n:
            raise ValueError(f"groups has {g.size} entries for {n} rows")
        _, unit_of_row = np.unique(g, return_inverse=True)
        n_units = int(unit_of_row.max()) + 1 if n else 0
    if n_units == 0:
        return
    rng = np.random.default_rng(seed)
    chunk = max(1, _CHUNK_ELEMENTS // max(n, n_units))
    for start in range(0, n_boot, chunk):
        b = min(chunk, n_boot - start)
        draws = rng.integers(0, n_units, size=(b, n_units))
        # Counts per unit via one bincount over row-offset draws: no Python loop over replicates.
        offsets = (np.arange(b) * n_units)[:, None]
        counts = np.bincount((draws + offsets).ravel(), minlength=b * n_units).reshape(b, n_units)
        yield (counts if groups is None else counts[:, unit_of_row]).astype(float)


def bootstrap_auc_ci(
    labels: ArrayLike,
    scores: ArrayLike,
    *,
    groups: ArrayLike | None = None,
    n_boot: int = 1000,
    alpha: float = 0.05,
    seed: int = 0,
) -> tuple[tuple[float, float], list[tuple[float, float]]]:
    """Percentile bootstrap CIs for the macro AUC and each label's AUC.

    With ``groups`` (patient ids) this is a cluster bootstrap: patients are drawn with replacement and each
    brings all its images, because images of one patient are not independent. Every label is evaluated on
    the same replicates, so the macro CI respects the correlation between labels. A replicate in which a
    label has one class is skipped for that label; the macro of a replicate averages the labels it has.

    Args:
        labels: ``(N, K)`` (or ``(N,)``) 0/1 labels, NaN = unknown.
        scores: same shape, higher = more likely positive.
        groups: ``(N,)`` cluster ids (e.g. ``patient_id``); ``None`` resamples images.
        n_boot: number of replicates.
        alpha: 1 - coverage (0.05 → 95% interval).
        seed: seed of the resampling; the same seed gives the same intervals.

    Returns:
        ``(macro_ci, per_label_cis)``: ``(lo, hi)`` and a list of ``(lo, hi)`` in column order
        (NaN where no replicate had both classes).

    Example:
        >>> rng = np.random.default_rng(0)
        >>> y = rng.integers(0, 2, (200, 2)).astype(float)
        >>> macro, per_label = bootstrap_auc_ci(y, y + rng.normal(size=y.shape), n_boot=200)
        >>> macro[0] < macro[1] and len(per_label) == 2
        True
    """
    y, s = _as_2d(labels, "labels"), _as_2d(scores, "scores")
    if y.shape != s.shape:
        raise ValueError(f"labels {y.shape} and scores {s.shape} must have the same shape")
    if n_boot < 1 or not 0 < alpha < 1:
        raise ValueError(f"need n_boot >= 1 and 0 < alpha < 1, got n_boot={n_boot}, alpha={alpha}")
    n, k = y.shape
    sorted_labels = [_sort_label(y[:, j], s[:, j]) for j in range(k)]
    reps = np.full((n_boot, k), np.nan)
    start = 0
    for weights in bootstrap_weights(n, groups, n_boot, seed):
        b = len(weights)
        for j, lab in enumerate(sorted_labels):
            reps[start : start + b, j] = _auc_from_weights(lab, weights)
        start += b
    has_any = np.isfinite(reps).any(axis=1)
    macro = np.full(n_boot, np.nan)
    macro[has_any] = np.nanmean(reps[has_any], axis=1)
    return _percentile_ci(macro, alpha), [_percentile_ci(reps[:, j], alpha) for j in range(k)]


def delong_covariance(
    y_true: ArrayLike, scores: Sequence[ArrayLike], groups: ArrayLike | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """AUCs of several scores on the same cases and DeLong's covariance matrix of those AUCs.

    Fast midrank algorithm of Sun & Xu (2014), O(N log N) per score. In DeLong et al. (1988) notation,
    ``v10[i]`` is the fraction of negatives a positive case beats (ties count 1/2) and ``v01[j]`` the
    fraction of positives that beat a negative case; ``cov = S10 / m + S01 / n``.

    With ``groups`` (patient ids) where a patient has several images, the covariance is Obuchowski's (1997,
    Biometrics 53:567) clustered generalisation: the structural components are summed per patient, so images of one
    patient are not counted as independent (with one image per patient it equals DeLong's).

    Args:
        y_true: ``(N,)`` 0/1 labels; cases with NaN label or any non-finite score are dropped.
        scores: a sequence of ``(N,)`` score arrays (one per model).
        groups: ``(N,)`` cluster ids, or None (every image its own cluster).

    Returns:
        ``(aucs, cov)`` of shapes ``(k,)`` and ``(k, k)``. Covariance is NaN (with a warning) when a class
        has fewer than two cases; everything is NaN when a class is absent.

    Example:
        >>> aucs, cov = delong_covariance([0, 0, 1, 1], [[0.1, 0.4, 0.35, 0.8], [0.1, 0.2, 0.3, 0.4]])
        >>> aucs.tolist()
        [0.75, 1.0]
    """
    y = np.asarray(y_true, dtype=float).ravel()
    s = np.atleast_2d(np.asarray(scores, dtype=float))
    if s.shape[1] != y.size:
        raise ValueError(f"scores {s.shape} must be (k, N) with N = {y.size} labels")
    keep = np.isfinite(y) & np.isfinite(s).all(axis=0)
    y, s = y[keep] == 1, s[:, keep]
    g = None if groups is None else np.asarray(groups).astype(str).ravel()[keep]
    pos, neg = s[:, y], s[:, ~y]
    m, n, k = pos.shape[1], neg.shape[1], s.shape[0]
    if m == 0 or n == 0:
        warnings.warn(f"DeLong needs both classes; got {m} positives and {n} negatives", stacklevel=2)
        return np.full(k, np.nan), np.full((k, k), np.nan)
    rank_pos = sps.rankdata(pos, axis=1)
    rank_neg = sps.rankdata(neg, axis=1)
    rank_all = sps.rankdata(np.concatenate([pos, neg], axis=1), axis=1)
    aucs = rank_all[:, :m].sum(axis=1) / (m * n) - (m + 1) / (2 * n)
    # A positive's rank among all minus its rank among positives = negatives it beats (midranks: ties 1/2).
    v10 = (rank_all[:, :m] - rank_pos) / n
    v01 = 1.0 - (rank_all[:, m:] - rank_neg) / m
    if m < 2 or n < 2:
        warnings.warn(f"DeLong variance needs >= 2 cases per class; got {m} positives and {n} negatives", stacklevel=2)
        return aucs, np.full((k, k), np.nan)
    if g is not None and len(np.unique(g)) < g.size:
        return aucs, _clustered_covariance(aucs, v10, v01, g[y], g[~y])
    cov = np.atleast_2d(np.cov(v10)) / m + np.atleast_2d(np.cov(v01)) / n
    return aucs, cov


def _clustered_covariance(
    aucs: np.ndarray, v10: np.ndarray, v01: np.ndarray, g_pos: np.ndarray, g_neg: np.ndarray
) -> np.ndarray:
    """Obuchowski (1997): per cluster i, X_i = sum of its positives' v10, Y_i = sum of its negatives' v01, with m_i, n_i
    positives and negatives; S10, S01 and the cross term S11 from the centred cluster sums. Written here because no
    library in our stack has it (pROC's "obuchowski" is another method, a binormal variance)."""
    clusters, pos_idx = np.unique(np.concatenate([g_pos, g_neg]), return_inverse=True)
    ip, ineg = pos_idx[: g_pos.size], pos_idx[g_pos.size :]
    k, n_cl = len(aucs), len(clusters)
    m_i, n_i = np.bincount(ip, minlength=n_cl), np.bincount(ineg, minlength=n_cl)
    x = np.stack([np.bincount(ip, weights=v10[a], minlength=n_cl) for a in range(k)])  # (k, I)
    yy = np.stack([np.bincount(ineg, weights=v01[a], minlength=n_cl) for a in range(k)])
    cx = x - m_i[None, :] * aucs[:, None]
    cy = yy - n_i[None, :] * aucs[:, None]
    big_m, big_n = int(m_i.sum()), int(n_i.sum())
    i10, i01 = int((m_i > 0).sum()), int((n_i > 0).sum())
    if i10 < 2 or i01 < 2:
        warnings.warn(f"clustered DeLong needs >= 2 clusters per class; got {i10} and {i01}", stacklevel=3)
        return np.full((k, k), np.nan)
    s10 = i10 / ((i10 - 1) * big_m) * cx @ cx.T
    s01 = i01 / ((i01 - 1) * big_n) * cy @ cy.T
    s11 = n_cl / (n_cl - 1) * cx @ cy.T
    return s10 / big_m + s01 / big_n + (s11 + s11.T) / (big_m * big_n)


def delong_ci(y_true: ArrayLike, score: ArrayLike, *, alpha: float = 0.05) -> dict[str, object]:
    """One AUC with DeLong's variance and a normal-approximation CI, clipped to [0, 1].

    Example:
        >>> r = delong_ci([0, 0, 0, 1, 1, 1], [0.1, 0.3, 0.6, 0.4, 0.7, 0.9])
        >>> round(r["auc"], 3), r["ci"][1]
        (0.889, 1.0)
    """
    aucs, cov = delong_covariance(y_true, [score])
    auc, var = float(aucs[0]), float(cov[0, 0])
    se = float(np.sqrt(max(var, 0.0))) if np.isfinite(var) else float("nan")
    q = float(sps.norm.ppf(1 - alpha / 2))
    ci = [float(np.clip(auc - q * se, 0, 1)), float(np.clip(auc + q * se, 0, 1))]
    return {"auc": auc, "var": var, "se": se, "ci": ci}


def delong_test(
    y_true: ArrayLike,
    score_a: ArrayLike,
    score_b: ArrayLike,
    *,
    alpha: float = 0.05,
    groups: ArrayLike | None = None,
) -> dict[str, object]:
    """DeLong's two-sided test that two correlated AUCs (same cases, two models) are equal; with ``groups`` where a
    patient has several images, Obuchowski's clustered covariance (:func:`delong_covariance`).

    Args:
        y_true: ``(N,)`` 0/1 labels (NaN dropped).
        score_a: scores of model A on the same cases.
        score_b: scores of model B.
        alpha: 1 - coverage of the CI on ``diff = auc_a - auc_b``.

    Returns:
        ``{"auc_a", "auc_b", "diff", "se", "z", "p_value", "ci": [lo, hi]}``. Identical scores give
        ``diff = 0``, ``z = 0``, ``p = 1``; NaN where the test is undefined.

    Example:
        >>> y = [0, 0, 0, 1, 1, 1]
        >>> delong_test(y, [0.1, 0.2, 0.3, 0.7, 0.8, 0.9], [0.1, 0.2, 0.3, 0.7, 0.8, 0.9])["p_value"]
        1.0
    """
    aucs, cov = delong_covariance(y_true, [score_a, score_b], groups)
    diff = float(aucs[0] - aucs[1])
    var = float(cov[0, 0] + cov[1, 1] - 2 * cov[0, 1])
    se = float(np.sqrt(max(var, 0.0))) if np.isfinite(var) else float("nan")
    if not np.isfinite(se):
        z = p = float("nan")
    elif se == 0.0:
        # Zero variance of the difference: equal AUCs are not evidence of a difference (p = 1); a non-zero
        # difference with no variance (e.g. a perfect model against its reverse) is certain (p = 0).
        z = 0.0 if diff == 0 else float(np.sign(diff) * np.inf)
        p = 1.0 if diff == 0 else 0.0
    else:
        z = diff / se
        p = float(2 * sps.norm.sf(abs(z)))
    q = float(sps.norm.ppf(1 - alpha / 2))
    return {
        "auc_a": float(aucs[0]),
        "auc_b": float(aucs[1]),
        "diff": diff,
        "se": se,
        "z": float(z),
        "p_value": float(p),
        "ci": [diff - q * se, diff + q * se],
    }


def paired_test(a: ArrayLike, b: ArrayLike) -> dict[str, float | int]:
    """Paired comparison of two methods across seeds (or folds): paired t-test and Wilcoxon signed-rank.

    Pairs with a NaN on either side are dropped. With fewer than two pairs, zero spread, or all-zero
    differences the undefined statistics are NaN rather than an error, so 2-3 seeds are fine.

    Returns:
        ``{"mean_diff", "sd_diff", "t", "p_value", "wilcoxon_p", "n"}`` with ``diff = a - b``.

    Example:
        >>> r = paired_test([0.81, 0.83, 0.80], [0.78, 0.79, 0.78])
        >>> r["n"], round(r["mean_diff"], 3), r["p_value"] < 0.1
        (3, 0.03, True)
    """
    x = np.asarray(a, dtype=float).ravel()
    y = np.asarray(b, dtype=float).ravel()
    if x.shape != y.shape:
        raise ValueError(f"paired samples must have the same length, got {x.size} and {y.size}")
    keep = np.isfinite(x) & np.isfinite(y)
    x, y = x[keep], y[keep]
    d = x - y
    n = int(d.size)
    nan = float("nan")
    mean_diff = float(d.mean()) if n else nan
    sd_diff = float(d.std(ddof=1)) if n >= 2 else nan
    t = p = wil = nan
    if n >= 2 and sd_diff > 0:
        res = sps.ttest_rel(x, y)
        t, p = float(res.statistic), float(res.pvalue)
    if n >= 2 and np.any(d != 0):
        wil = float(sps.wilcoxon(d).pvalue)
    return {"mean_diff": mean_diff, "sd_diff": sd_diff, "t": t, "p_value": p, "wilcoxon_p": wil, "n": n}


# --------------------------------------------------------------------------- multiplicity
def holm(p_values: ArrayLike) -> np.ndarray:
    """Holm's step-down adjusted p-values (family-wise error control); NaN entries stay NaN and are not counted.

    Written here because SciPy has Benjamini–Hochberg (:func:`scipy.stats.false_discovery_control`) but not Holm:
    sorted ascending, ``p_(i)`` becomes ``max_{j<=i} min(1, (m - j + 1) p_(j))``.

    Example:
        >>> holm([0.01, 0.04, 0.03, float("nan")]).round(3).tolist()
        [0.03, 0.06, 0.06, nan]
    """
    p = np.asarray(p_values, dtype=float).ravel()
    out = np.full(p.shape, np.nan)
    finite = np.flatnonzero(np.isfinite(p))
    m = finite.size
    if m == 0:
        return out
    order = finite[np.argsort(p[finite], kind="stable")]
    scaled = np.minimum(1.0, (m - np.arange(m)) * p[order])
    out[order] = np.maximum.accumulate(scaled)
    return out


def benjamini_hochberg(p_values: ArrayLike) -> np.ndarray:
    """Benjamini–Hochberg adjusted p-values (false discovery rate) by SciPy; NaN entries stay NaN.

    Example:
        >>> benjamini_hochberg([0.01, 0.04, 0.03, float("nan")]).round(3).tolist()
        [0.03, 0.04, 0.04, nan]
    """
    p = np.asarray(p_values, dtype=float).ravel()
    out = np.full(p.shape, np.nan)
    finite = np.isfinite(p)
    if finite.any():
        out[finite] = sps.false_discovery_control(p[finite], method="bh")
    return out


# --------------------------------------------------------------------------- two-level bootstrap
@dataclass(frozen=True)
class TwoLevel:
    """The result of :func:`two_level_bootstrap`: estimate, percentile CI, bootstrap SE, two-sided p of 0, counts."""

    estimate: float
    lo: float
    hi: float
    se: float
    p_value: float
    n_seeds: int
    n_boot: int

    def normal_ci(self, alpha: float = 0.05) -> tuple[float, float]:
        """estimate ± z·SE: the interval that excludes the null exactly when ``p_value`` < ``alpha``."""
        q = float(sps.norm.ppf(1 - alpha / 2))
        return (self.estimate - q * self.se, self.estimate + q * self.se)


def two_level_bootstrap(
    replicates: ArrayLike, point: ArrayLike, *, seed: int = 0, alpha: float = 0.05, null: float = 0.0
) -> TwoLevel:
    """Two-level bootstrap of a mean over seeds: resample seeds, then test images, in one replicate.

    ``replicates[s, b]`` is seed ``s``'s statistic (a metric, or the paired difference arm − reference of a metric)
    computed on bootstrap replicate ``b`` of the **test images** (weights from :func:`bootstrap_weights`, by patient
    where patients are known). Every seed's column ``b`` uses the *same* image draw, because all seeds are scored on
    the same test set: its sampling noise is shared, not averaged away. Replicate ``b`` then draws ``S`` seeds with
    replacement and averages their values in column ``b``. So the spread covers both what the training seed changes
    and what the test sample changes; a t-interval across seeds covers only the first, a per-trial bootstrap only the
    second. ``point[s]`` is seed ``s``'s value on the full test set; the estimate is their mean.

    The p-value is the two-sided test of ``null`` from the bootstrap's normal approximation (z = (estimate − null) /
    bootstrap SE), and :meth:`TwoLevel.normal_ci` is the interval that excludes ``null`` exactly when p < alpha: a
    difference's sign, CI and test cannot disagree. (A percentile p could not go below 2 / (B + 1), too coarse for
    Holm's adjustment over large families.) ``lo``/``hi`` are the percentile interval, kept for a single arm's metric.
    Ours because the clustered, shared-image two-level scheme is not in SciPy or scikit-learn.
    With few seeds the seed level is coarse (3 seeds have 10 distinct resamples).

    Example:
        >>> rng = np.random.default_rng(0)
        >>> r = two_level_bootstrap(0.05 + rng.normal(0, 0.01, (3, 2000)), [0.05, 0.06, 0.04])
        >>> round(r.estimate, 3), r.lo < 0.05 < r.hi, r.p_value < 0.01
        (0.05, True, True)
    """
    reps = np.atleast_2d(np.asarray(replicates, dtype=float))
    pts = np.asarray(point, dtype=float).ravel()
    if reps.shape[0] != pts.size:
        raise ValueError(f"replicates have {reps.shape[0]} seeds, point has {pts.size}")
    keep = np.isfinite(pts)
    reps, pts = reps[keep], pts[keep]
    s, b = reps.shape
    nan = float("nan")
    if s == 0 or b == 0:
        return TwoLevel(nan, nan, nan, nan, nan, int(s), int(b))
    rng = np.random.default_rng(seed)
    draws = rng.integers(0, s, size=(b, s))  # the seeds of each replicate
    values = reps[draws, np.arange(b)[:, None]].mean(axis=1)
    values = values[np.isfinite(values)]
    if values.size == 0:
        return TwoLevel(float(pts.mean()), nan, nan, nan, nan, int(s), int(b))
    lo, hi = np.percentile(values, [100 * alpha / 2, 100 * (1 - alpha / 2)])
    est, se = float(pts.mean()), float(values.std(ddof=1)) if values.size > 1 else 0.0
    # p from the bootstrap's normal approximation, z = (estimate - null) / bootstrap SE: a percentile p cannot go
    # below 2 / (B + 1), too coarse for Holm over a family of 60 tests (it needs p < 0.05 / 60)
    if se > 0:
        p = float(2 * sps.norm.sf(abs(est - null) / se))
    else:
        p = 1.0 if est == null else 0.0
    return TwoLevel(est, float(lo), float(hi), se, p, int(s), int(values.size))
