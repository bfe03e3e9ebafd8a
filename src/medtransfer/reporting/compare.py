"""Comparisons between arms: paired tests against a reference arm, matching the baseline, ranking vs outcome.

The study design is paired: at one (N, seed) every arm trains on the same nested subset and is tested on the
same images. So two arms are compared (a) per seed with DeLong's test on the shared test set, joining their
predictions by ``image_id``, and (b) across seeds with a paired test of the per-seed AUCs.

A segmentation study (scored by Dice) is compared the same way, except that (a) is a Wilcoxon signed-rank test
on the per-case Dice of the two arms, joined by ``case``.
"""

from __future__ import annotations

import logging
import math
import warnings
from collections.abc import Callable, Iterator
from typing import Any

import numpy as np
import pandas as pd
from scipy import stats as sps

from medtransfer.errors import UserError
from medtransfer.evaluation.stats import paired_test
from medtransfer.registry import suggest
from medtransfer.reporting.tables import arm_order, metric_spec, n_levels
from medtransfer.tasks.base import kind_of_metric, nanmean_rows

log = logging.getLogger(__name__)

Predictions = Callable[[str], "pd.DataFrame | None"]
DELONG_COLUMNS = [
    "arm",
    "reference",
    "n_label",
    "n",
    "seed",
    "label",
    "auc_arm",
    "auc_ref",
    "diff",
    "se",
    "z",
    "p_value",
    "n_images",
    "trial_arm",
    "trial_ref",
]
PAIRED_COLUMNS = ["arm", "reference", "n_label", "n", "n_pairs", "mean_diff", "sd_diff", "t", "p_value", "wilcoxon_p"]
PAIRED_CASES_COLUMNS = [
    "arm",
    "reference",
    "n_label",
    "n",
    "seed",
    "dice_arm",
    "dice_ref",
    "diff",
    "statistic",
    "p_value",
    "n_cases",
    "n_zero",
    "trial_arm",
    "trial_ref",
]
WILCOXON_MIN_PAIRS = 6  # below this many non-zero differences a two-sided signed-rank p cannot be < 0.05


def choose_reference(trials: pd.DataFrame, reference: str | None) -> tuple[str | None, str]:
    """The reference arm and a sentence saying why it was chosen.

    ``reference`` if it is an arm of the study; else the first arm whose source is 'scratch'; else the first arm.

    Example:
        >>> t = pd.DataFrame({"arm": ["a/x", "scratch/ft"], "source": ["a", "scratch"]})
        >>> choose_reference(t, None)[0]
        'scratch/ft'
    """
    arms = arm_order(trials)
    if not arms:
        return None, "There are no arms to compare."
    note = ""
    if reference is not None:
        if reference in arms:
            return reference, f"Reference arm '{reference}' (chosen by the caller)."
        note = f"The requested reference '{reference}' is not an arm of this study (arms: {', '.join(arms)}). "
        log.warning("reference arm %r not in the study; falling back", reference)
    scratch = [a for a in arms if (trials.loc[trials["arm"] == a, "source"] == "scratch").any()]
    if scratch:
        return scratch[0], note + f"Reference arm '{scratch[0]}': the first arm trained from scratch."
    return arms[0], note + f"Reference arm '{arms[0]}': the first arm (no arm trains from scratch)."


def _done_trial(trials: pd.DataFrame, arm: str, n_label: str, seed: Any) -> pd.Series | None:
    pick = (trials["arm"] == arm) & (trials["n_label"] == n_label) & (trials["seed"] == seed)
    hit = trials[pick & (trials["status"] == "done")]
    return None if hit.empty else hit.iloc[-1]


class _PredictionCache:
    """Calls ``predictions`` at most once per trial and turns problems into notes instead of errors.

    A table is usable when it has the ``key`` column and at least one ``<prefix>…`` column.
    """

    def __init__(
        self,
        predictions: Predictions,
        notes: list[str],
        key: str = "image_id",
        prefix: str = "score:",
        what: str = "Predictions",
    ):
        self.predictions, self.notes, self.cache = predictions, notes, {}
        self.key, self.prefix, self.what = key, prefix, what

    def __call__(self, trial_id: str) -> pd.DataFrame | None:
        if trial_id not in self.cache:
            try:
                df = self.predictions(trial_id)
            except Exception as exc:  # a report at the end of a long study should not die on one bad file
                log.warning("could not read predictions of trial %s", trial_id, exc_info=True)
                self.notes.append(f"{self.what} of trial {trial_id} could not be read ({type(exc).__name__}: {exc}).")
                df = None
            else:
                if df is None:
                    self.notes.append(f"{self.what} of trial {trial_id} are missing; its seed was skipped.")
                elif self.key not in df.columns or not any(str(c).startswith(self.prefix) for c in df.columns):
                    label = "label" if self.prefix == "score:" else "class"
                    self.notes.append(
                        f"{self.what} of trial {trial_id} lack '{self.key}' or '{self.prefix}<{label}>' columns."
                    )
                    df = None
            self.cache[trial_id] = df
        return self.cache[trial_id]


def delong_comparisons(
    trials: pd.DataFrame, reference: str, predictions: Predictions | None, metric: str = "auc"
) -> tuple[pd.DataFrame, list[str]]:
    """DeLong's test of each arm against ``reference`` per (N, seed, label), on predictions joined by image.

    ``diff = auc_arm - auc_ref``. Labels come from the arm's predictions (the reference's are the same images);
    images where the two disagree on a known label are dropped with a note. Returns the rows (columns
    :data:`DELONG_COLUMNS`) and notes about what was skipped. Another image-level metric (``mae``) uses its task
    kind's paired test (:meth:`~medtransfer.tasks.base.TaskKind.paired`; Wilcoxon on absolute errors), in
    columns ``mae_arm``, ``mae_ref``, ``diff`` = arm − reference.

    Example:
        >>> rows, notes = delong_comparisons(pd.DataFrame(columns=["arm", "n_label", "seed", "status"]), "a", None)
        >>> rows.empty, notes
        (True, ['No predictions were given, so the DeLong tests were skipped.'])
    """
    notes: list[str] = []
    key = metric_spec(metric).key
    columns = [c.replace("auc", key, 1) if c.startswith("auc") else c for c in DELONG_COLUMNS]
    if predictions is None:
        return pd.DataFrame(columns=columns), ["No predictions were given, so the per-image tests were skipped."]
    load = _PredictionCache(predictions, notes)
    rows = []
    for arm, level, seed, a, r in _paired_trials(trials, reference):
        pa, pr = load(a["id"]), load(r["id"])
        if pa is None or pr is None:
            continue
        rows += _delong_rows(pa, pr, notes, arm, reference, level, seed, a["id"], r["id"], key)
    return pd.DataFrame(rows, columns=columns), notes


def _paired_trials(trials: pd.DataFrame, reference: str) -> Iterator[tuple[str, Any, Any, pd.Series, pd.Series]]:
    """``(arm, level, seed, arm trial, reference trial)`` for every (arm, N, seed) where both arms are done."""
    levels = n_levels(trials)
    for arm in arm_order(trials):
        if arm == reference:
            continue
        for level in levels.itertuples():
            mine = trials[(trials["arm"] == arm) & (trials["n_label"] == level.n_label) & (trials["status"] == "done")]
            for seed in dict.fromkeys(mine["seed"]):
                a = _done_trial(trials, arm, level.n_label, seed)
                r = _done_trial(trials, reference, level.n_label, seed)
                if a is not None and r is not None:
                    yield arm, level, seed, a, r


def _delong_rows(
    pa: pd.DataFrame,
    pr: pd.DataFrame,
    notes: list[str],
    arm: str,
    ref: str,
    level: Any,
    seed: Any,
    ta: str,
    tr: str,
    key: str = "auc",
) -> list[dict[str, Any]]:
    joined = pa.merge(pr, on="image_id", suffixes=("", "@ref"))
    labels = [c[6:] for c in pa.columns if str(c).startswith("score:") and f"score:{c[6:]}" in pr.columns]
    where = f"{arm} vs {ref} at N={level.n_label}, seed {seed}"
    if joined.empty or not labels:
        notes.append(f"{where}: the two trials share no test images or labels; the test was skipped.")
        return []
    if len(joined) < max(len(pa), len(pr)):
        notes.append(f"{where}: only {len(joined)} of {len(pa)}/{len(pr)} test images are shared.")
    rows = []
    for label in labels:
        y = pd.to_numeric(joined.get(f"label:{label}"), errors="coerce").to_numpy(dtype=float)
        if f"label:{label}@ref" in joined.columns:
            y_ref = pd.to_numeric(joined[f"label:{label}@ref"], errors="coerce").to_numpy(dtype=float)
            clash = np.isfinite(y) & np.isfinite(y_ref) & (y != y_ref)
            if clash.any():
                notes.append(f"{where}, label {label}: {int(clash.sum())} images have different labels; dropped.")
                y = np.where(clash, np.nan, y)
        sa, sr = joined[f"score:{label}"].to_numpy(float), joined[f"score:{label}@ref"].to_numpy(float)
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            # the task kind's paired test: DeLong for an AUC, Wilcoxon on per-image absolute errors for an MAE
            known = np.isfinite(y)
            groups = joined["patient_id"].astype(str).to_numpy()[known] if "patient_id" in joined.columns else None
            res = kind_of_metric(key).paired(y[known, None], sa[known, None], sr[known, None], groups=groups)
        if caught:
            notes.append(f"{where}, label {label}: {caught[0].message}.")
        rows.append(
            {
                "arm": arm,
                "reference": ref,
                "n_label": level.n_label,
                "n": level.n,
                "seed": seed,
                "label": label,
                f"{key}_arm": res["a"],
                f"{key}_ref": res["b"],
                "diff": res["delta"],
                "se": res["se"],
                "z": res["z"],
                "p_value": res["p_value"],
                "n_images": int(np.isfinite(y).sum()),
                "trial_arm": ta,
                "trial_ref": tr,
            }
        )
    return rows


def case_comparisons(
    trials: pd.DataFrame, reference: str, predictions: Predictions | None
) -> tuple[pd.DataFrame, list[str]]:
    """Wilcoxon signed-rank test of each arm against ``reference`` per (N, seed) on the per-case Dice.

    ``predictions(trial_id)`` is the trial's per-case table: ``case`` and ``dice:<class>`` (NaN: the class is
    in neither prediction nor ground truth). A case's Dice is the NaN-mean over the classes both trials report;
    the two trials' tables join on ``case`` and a case pairs up when both its Dice are finite. ``diff`` is the
    mean over paired cases of arm − reference (``dice_arm``, ``dice_ref``: the two means over those cases);
    ``statistic`` and ``p_value`` are :func:`scipy.stats.wilcoxon` of the differences with its defaults (zero
    differences dropped, ``n_zero`` counts them); both are NaN when every difference is zero. Fewer than
    :data:`WILCOXON_MIN_PAIRS` non-zero differences cannot give p < 0.05 and get a note. Returns the rows
    (columns :data:`PAIRED_CASES_COLUMNS`) and notes about what was skipped.

    Example:
        >>> rows, notes = case_comparisons(pd.DataFrame(columns=["arm", "n_label", "seed", "status"]), "a", None)
        >>> rows.empty, notes
        (True, ['No per-case results were given, so the Wilcoxon tests were skipped.'])
    """
    notes: list[str] = []
    if predictions is None:
        return pd.DataFrame(columns=PAIRED_CASES_COLUMNS), [
            "No per-case results were given, so the Wilcoxon tests were skipped."
        ]
    load = _PredictionCache(predictions, notes, key="case", prefix="dice:", what="Per-case results")
    rows = []
    for arm, level, seed, a, r in _paired_trials(trials, reference):
        pa, pr = load(a["id"]), load(r["id"])
        if pa is None or pr is None:
            continue
        rows += _case_rows(pa, pr, notes, arm, reference, level, seed, a["id"], r["id"])
    return pd.DataFrame(rows, columns=PAIRED_CASES_COLUMNS), notes


def case_dice(table: pd.DataFrame, columns: list[str]) -> np.ndarray:
    """Per row, the mean of the finite values in ``columns`` (NaN where none), without empty-mean warnings."""
    values = table[columns].apply(pd.to_numeric, errors="coerce").to_numpy(dtype=float)
    return nanmean_rows(list(values.T), len(values))


def _case_rows(
    pa: pd.DataFrame, pr: pd.DataFrame, notes: list[str], arm: str, ref: str, level: Any, seed: Any, ta: str, tr: str
) -> list[dict[str, Any]]:
    where = f"{arm} vs {ref} at N={level.n_label}, seed {seed}"
    classes = [str(c) for c in pa.columns if str(c).startswith("dice:") and c in pr.columns]
    if not classes:
        notes.append(f"{where}: the two trials share no Dice classes; Wilcoxon skipped.")
        return []
    sides = []
    for df, trial in ((pa, ta), (pr, tr)):
        side = df[["case", *classes]].assign(case=df["case"].astype(str))
        if side["case"].duplicated().any():
            notes.append(f"{where}: trial {trial} lists some cases twice; the last row of each was kept.")
            side = side.drop_duplicates("case", keep="last")
        sides.append(side)
    joined = sides[0].merge(sides[1], on="case", suffixes=("", "@ref"))
    if joined.empty:
        notes.append(f"{where}: the two trials share no test cases; Wilcoxon skipped.")
        return []
    if len(joined) < max(len(sides[0]), len(sides[1])):
        notes.append(f"{where}: only {len(joined)} of {len(sides[0])}/{len(sides[1])} test cases are shared.")
    x = case_dice(joined, classes)
    y = case_dice(joined, [f"{c}@ref" for c in classes])
    keep = np.isfinite(x) & np.isfinite(y)
    if not keep.any():
        notes.append(f"{where}: no shared case has a Dice in both trials; Wilcoxon skipped.")
        return []
    d = x[keep] - y[keep]
    nonzero = int(np.count_nonzero(d))
    stat = p = math.nan
    if nonzero:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            res = sps.wilcoxon(d)
        stat, p = float(res.statistic), float(res.pvalue)
        if caught:
            notes.append(f"{where}: {caught[0].message}.")
    else:
        notes.append(f"{where}: every per-case Dice difference is zero; the Wilcoxon test is undefined.")
    if 0 < nonzero < WILCOXON_MIN_PAIRS:
        notes.append(
            f"{where}: only {nonzero} non-zero per-case differences; a two-sided Wilcoxon p cannot go below "
            f"{2 / 2**nonzero:.3f} with so few, so the test is uninformative."
        )
    return [
        {
            "arm": arm,
            "reference": ref,
            "n_label": level.n_label,
            "n": level.n,
            "seed": seed,
            "dice_arm": float(x[keep].mean()),
            "dice_ref": float(y[keep].mean()),
            "diff": float(d.mean()),
            "statistic": stat,
            "p_value": p,
            "n_cases": int(keep.sum()),
            "n_zero": int(d.size - nonzero),
            "trial_arm": ta,
            "trial_ref": tr,
        }
    ]


def paired_seed_tests(trials: pd.DataFrame, reference: str, metric: str = "auc") -> pd.DataFrame:
    """Per arm and N, :func:`~medtransfer.evaluation.stats.paired_test` of per-seed AUCs (arm minus reference).

    Seeds pair up when both arms have a done trial with a finite AUC (``metric``'s score) at that (N, seed).

    Example:
        >>> t = pd.DataFrame({"arm": ["a", "a", "r", "r"], "n_label": "10", "n": 10.0, "seed": [0, 1, 0, 1],
        ...                   "status": "done", "auc": [0.8, 0.9, 0.7, 0.75]})
        >>> round(float(paired_seed_tests(t, "r").loc[0, "mean_diff"]), 3)
        0.125
    """
    key = metric_spec(metric).key
    done = trials[(trials["status"] == "done") & np.isfinite(trials[key])]
    rows = []
    for arm in arm_order(trials):
        if arm == reference:
            continue
        for level in n_levels(trials).itertuples():
            if not (trials["arm"].eq(arm) & trials["n_label"].eq(level.n_label)).any():
                continue  # this arm has no trial at this N at all
            pick = done["n_label"] == level.n_label
            a = done[pick & (done["arm"] == arm)].drop_duplicates("seed", keep="last")
            r = done[pick & (done["arm"] == reference)].drop_duplicates("seed", keep="last")
            pairs = a.merge(r, on="seed", suffixes=("", "_ref"))
            res = paired_test(pairs[key].to_numpy(float), pairs[f"{key}_ref"].to_numpy(float))
            rows.append(
                {
                    "arm": arm,
                    "reference": reference,
                    "n_label": level.n_label,
                    "n": level.n,
                    "n_pairs": res["n"],
                    **{k: res[k] for k in ("mean_diff", "sd_diff", "t", "p_value", "wilcoxon_p")},
                }
            )
    return pd.DataFrame(rows, columns=PAIRED_COLUMNS)


def seed_differences(trials: pd.DataFrame, reference: str, metric: str = "auc") -> pd.DataFrame:
    """Per-seed AUC (or Dice) differences (arm minus reference) at each N: columns arm, n_label, n, seed, diff."""
    key = metric_spec(metric).key
    done = trials[(trials["status"] == "done") & np.isfinite(trials[key])]
    ref = done[done["arm"] == reference].drop_duplicates(["n_label", "seed"], keep="last")
    other = done[done["arm"] != reference].drop_duplicates(["arm", "n_label", "seed"], keep="last")
    pairs = other.merge(ref[["n_label", "seed", key]], on=["n_label", "seed"], suffixes=("", "_ref"))
    pairs["diff"] = pairs[key] - pairs[f"{key}_ref"]
    return pairs[["arm", "n_label", "n", "seed", "diff"]].reset_index(drop=True)


def matches_baseline(summary: pd.DataFrame, baseline: str, metric: str = "auc") -> pd.DataFrame:
    """Per non-baseline arm: the smallest N where its mean AUC over seeds ≥ the baseline's mean AUC at that N.

    Only sizes where both means are finite count (``n_compared`` of them). ``n_label`` is None ('never') when
    no such N exists. With ``metric='dice'`` the same on mean Dice (columns ``dice_arm``, ``dice_baseline``).

    Example:
        >>> s = pd.DataFrame({"arm": ["b", "b", "x", "x"], "n_label": ["10", "20"] * 2, "n": [10.0, 20.0] * 2,
        ...                   "auc_mean": [0.7, 0.72, 0.6, 0.75]})
        >>> matches_baseline(s, "b").loc[0, "n_label"]
        '20'
    """
    m = metric_spec(metric)
    key = m.key
    base = summary[summary["arm"] == baseline].set_index("n_label")[f"{key}_mean"]
    rows = []
    for arm in dict.fromkeys(summary["arm"]):
        if arm == baseline:
            continue
        mine = summary[summary["arm"] == arm].sort_values("n", kind="stable", na_position="last")
        both = [(r.n_label, r.n, getattr(r, f"{key}_mean"), base.get(r.n_label, math.nan)) for r in mine.itertuples()]
        both = [c for c in both if math.isfinite(c[2]) and math.isfinite(c[3])]
        hit = next((c for c in both if m.better(c[2], c[3])), None)  # ≥ an AUC, ≤ an MAE
        compared = len(both)
        rows.append(
            {
                "arm": arm,
                "n_label": hit[0] if hit else None,
                "n": hit[1] if hit else math.nan,
                f"{key}_arm": hit[2] if hit else math.nan,
                f"{key}_baseline": hit[3] if hit else math.nan,
                "n_compared": compared,
            }
        )
    return pd.DataFrame(rows, columns=["arm", "n_label", "n", f"{key}_arm", f"{key}_baseline", "n_compared"])


EXACT_MAX_SOURCES = 8  # up to 8! = 40,320 orderings the permutation p is exact; above, scipy's asymptotic p
RANK_CORR_COLUMNS = [
    "strategy",
    "n_label",
    "n",
    "n_sources",
    "n_labels",
    "spearman",
    "spearman_p",
    "spearman_exact",
    "kendall",
    "kendall_p",
    "kendall_exact",
    "min_p",
    "best_predicted",
    "best_realised",
]
MEAN_OVER_N = "mean over N"  # the n_label of a correlation of scores averaged over sizes (a ranking without by_n)


def min_two_sided_p(n: int) -> float:
    """The smallest two-sided permutation p a rank correlation of ``n`` distinct values can reach: 2 / n!
    (with ties fewer orderings differ, so the smallest p is larger). NaN below 3 values, where no correlation is
    computed.

    Example:
        >>> round(min_two_sided_p(4), 4), round(min_two_sided_p(5), 4)
        (0.0833, 0.0167)
    """
    return min(1.0, 2.0 / math.factorial(n)) if n >= 3 else math.nan


def _pearson_last_axis(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Pearson correlation along the last axis (``a`` may hold a batch of rows, ``b`` is one row)."""
    a = a - a.mean(axis=-1, keepdims=True)
    b = b - b.mean(axis=-1, keepdims=True)
    return (a * b).sum(axis=-1) / np.sqrt((a * a).sum(axis=-1) * (b * b).sum(axis=-1))


def _kendall_tau_b_last_axis(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Kendall's τ-b along the last axis (``a`` may hold a batch of rows, ``b`` is one row), as scipy's default."""
    sa = np.sign(a[..., :, None] - a[..., None, :])
    sb = np.sign(b[:, None] - b[None, :])
    pairs_a, pairs_b = (sa != 0).sum(axis=(-2, -1)), (sb != 0).sum()
    return (sa * sb).sum(axis=(-2, -1)) / np.sqrt(pairs_a * pairs_b)


def exact_permutation_p(x: np.ndarray, y: np.ndarray, statistic: Callable[[np.ndarray, np.ndarray], Any]) -> float:
    """Two-sided p of ``statistic(x, y)`` over all n! pairings of ``x`` with ``y``: the share of orderings at least
    as extreme, from :func:`scipy.stats.permutation_test` with ``n_resamples=inf``.

    ``statistic(a, y)`` takes a batch of re-ordered ``x`` as the rows of ``a``. With 4 values and a perfect
    correlation the p is 2/24: no ordering is more extreme, and one of the 24 is as extreme on each side.
    """
    res = sps.permutation_test(
        (np.asarray(x, float),),
        lambda a, axis=-1: statistic(np.moveaxis(a, axis, -1), np.asarray(y, float)),
        permutation_type="pairings",
        n_resamples=np.inf,
        vectorized=True,
        alternative="two-sided",
    )
    return float(min(1.0, res.pvalue))


def _rank_corr(x: np.ndarray, y: np.ndarray) -> dict[str, Any]:
    """Spearman's ρ and Kendall's τ-b of ``x`` and ``y`` with two-sided p-values that are honest for few sources.

    Spearman: the exact permutation p for up to :data:`EXACT_MAX_SOURCES` values, scipy's asymptotic p above.
    Kendall: scipy's exact p (``method='exact'``) without ties; with ties the exact permutation p for up to
    :data:`EXACT_MAX_SOURCES` values, the asymptotic p above. ``min_p``: the smallest two-sided p the number of
    values allows (:func:`min_two_sided_p`). Everything is NaN below 3 values or with a constant input.

    Example:
        >>> r = _rank_corr(np.array([4.0, 3, 2, 1]), np.array([0.9, 0.8, 0.7, 0.6]))
        >>> r["spearman"], round(r["spearman_p"], 4), round(r["kendall_p"], 4), r["spearman_exact"]
        (1.0, 0.0833, 0.0833, True)
    """
    n = len(x)
    out: dict[str, Any] = {"spearman": math.nan, "spearman_p": math.nan, "spearman_exact": False}
    out |= {"kendall": math.nan, "kendall_p": math.nan, "kendall_exact": False, "min_p": math.nan}
    # Constant inputs make the correlations undefined; checking first avoids scipy's ConstantInputWarning.
    if n < 3 or np.ptp(x) == 0 or np.ptp(y) == 0:
        return out
    small = n <= EXACT_MAX_SOURCES
    rho = sps.spearmanr(x, y)
    out["spearman"], out["spearman_exact"] = float(rho.statistic), small
    rx, ry = sps.rankdata(x), sps.rankdata(y)
    out["spearman_p"] = exact_permutation_p(rx, ry, _pearson_last_axis) if small else float(rho.pvalue)
    ties = len(np.unique(x)) < n or len(np.unique(y)) < n
    tau = sps.kendalltau(x, y, method="auto" if ties else "exact")
    out["kendall"], out["kendall_p"], out["kendall_exact"] = float(tau.statistic), float(tau.pvalue), not ties
    if ties and small:
        out["kendall_p"], out["kendall_exact"] = exact_permutation_p(x, y, _kendall_tau_b_last_axis), True
    out["min_p"] = min_two_sided_p(n)
    return out


def _ranked_rows(rows: list[dict] | None) -> pd.DataFrame:
    """A ranking's rows as a table, best predicted first, with ``predicted_rank``, ``arm_source`` (text), and numeric
    ``score``, ``probe_auc`` and ``seconds`` (NaN where missing or ``null``)."""
    ranked = pd.DataFrame(list(rows or []))
    for col in ("arm_source", "score", "probe_auc", "seconds"):
        if col not in ranked.columns:
            ranked[col] = math.nan if col != "arm_source" else None
    ranked["arm_source"] = ranked["arm_source"].astype(str)
    for col in ("score", "probe_auc", "seconds"):
        ranked[col] = pd.to_numeric(ranked[col], errors="coerce").astype(float)
    ranked = ranked.sort_values("score", ascending=False, na_position="last", kind="stable").reset_index(drop=True)
    ranked.insert(0, "predicted_rank", range(1, len(ranked) + 1))
    return ranked


def ranking_by_n(ranking: dict | None) -> pd.DataFrame:
    """The ranking at each training-set size (``ranking["by_n"]``), long: one row per (size, source) with
    ``n_label`` (text), ``n``, ``n_images``, ``predicted_rank`` (at that size), ``arm_source``, ``score`` and
    ``probe_auc``; sizes in the file's order (small first). Empty for a ranking written before ``by_n`` existed.

    Example:
        >>> r = {"by_n": [{"n_label": "10", "n": 10, "n_images": 10,
        ...                "rows": [{"arm_source": "a", "score": 1.0}, {"arm_source": "b", "score": 2.0}]}]}
        >>> ranking_by_n(r)[["n_label", "arm_source", "predicted_rank"]].values.tolist()
        [['10', 'b', 1], ['10', 'a', 2]]
    """
    columns = ["n_label", "n", "n_images", "predicted_rank", "arm_source", "score", "probe_auc"]
    frames = []
    for level in (ranking or {}).get("by_n") or []:
        ranked = _ranked_rows(level.get("rows"))
        n, n_images = level.get("n"), level.get("n_images")
        ranked["n_label"] = str(level.get("n_label"))
        ranked["n"] = float(n) if n is not None else math.nan
        ranked["n_images"] = float(n_images) if n_images is not None else math.nan
        frames.append(ranked[columns])
    return pd.concat(frames, ignore_index=True) if frames else pd.DataFrame(columns=columns)


def _agreement(ranked: pd.DataFrame, realised: pd.Series, higher_is_better: bool) -> dict[str, Any]:
    """Rank correlations (:func:`_rank_corr`) between the predicted scores of ``ranked`` (best predicted first) and
    the ``realised`` value of each source, over the sources with both; and the predicted and the realised best."""
    real = ranked["arm_source"].map(realised).astype(float)
    both = ranked.assign(real=real)[np.isfinite(real) & np.isfinite(ranked["score"])]
    sign = 1.0 if higher_is_better else -1.0  # the correlation is between the score and how good an arm is
    best_real = both.sort_values("real", ascending=not higher_is_better, kind="stable")["arm_source"]
    return {
        "n_sources": len(both),
        **_rank_corr(both["score"].to_numpy(float), sign * both["real"].to_numpy(float)),
        "best_predicted": both["arm_source"].iloc[0] if len(both) else None,
        "best_realised": best_real.iloc[0] if len(both) else None,
    }


def ranking_vs_realised(summary: pd.DataFrame, ranking: dict, metric: str = "auc") -> tuple[pd.DataFrame, pd.DataFrame]:
    """The predicted order of sources next to the realised order, per transfer strategy.

    Returns ``(table, correlations)``. ``table``: one row per ranked source, ordered by the whole-pool score
    (``ranking["rows"]``): predicted rank, score, probe AUC, seconds, and per strategy ``auc:<strategy>`` and
    ``rank:<strategy>``: the mean over N of its arm's mean AUC, over the sizes at which every ranked source with
    results for that strategy has a mean AUC (so all sources are averaged over the same N); with a ranking per size,
    ``score@<n_label>`` and ``predicted_rank@<n_label>`` per size too (sizes small first).

    ``correlations`` (columns :data:`RANK_CORR_COLUMNS`): with a ranking per size (``ranking["by_n"]``), one row per
    strategy and size with results: the order predicted at that N against the realised mean AUC at that N
    (``n_label``, ``n``; ``n_labels`` repeats the size). Without it (an older ``ranking.json``), one row per strategy,
    ``n_label`` ``'mean over N'``, comparing the whole-pool scores with the table's realised means (``n_labels``: the
    sizes averaged). Each row: the number of sources, Spearman and Kendall correlations with their two-sided p
    (exact for few sources, see :func:`_rank_corr`; NaN below 3 sources), the smallest p attainable with that many
    sources (``min_p``), and the predicted and realised best source. With ``metric='dice'`` the realised score is
    mean Dice, in ``dice:<strategy>`` columns.

    Example:
        >>> s = pd.DataFrame({"arm": ["a/f", "b/f", "c/f"], "kind": "net", "source": ["a", "b", "c"],
        ...                   "strategy": "f", "n_label": "10", "auc_mean": [0.9, 0.8, 0.7]})
        >>> r = {"method": "logme", "rows": [{"arm_source": k, "score": v} for k, v in zip("abc", [3, 2, 1])]}
        >>> table, corr = ranking_vs_realised(s, r)
        >>> table["rank:f"].tolist(), float(corr.loc[0, "spearman"]), round(float(corr.loc[0, "spearman_p"]), 3)
        ([1, 2, 3], 1.0, 0.333)
    """
    m = metric_spec(metric)
    key = m.key
    mean_col = f"{key}_mean"
    ranked = _ranked_rows(ranking.get("rows"))
    per_n = ranking_by_n(ranking)
    for n_label, at_n in per_n.groupby("n_label", sort=False):
        at = at_n.drop_duplicates("arm_source").set_index("arm_source")
        ranked[f"score@{n_label}"] = ranked["arm_source"].map(at["score"]).astype(float)
        ranked[f"predicted_rank@{n_label}"] = ranked["arm_source"].map(at["predicted_rank"]).astype("Int64")
    nets = summary[(summary["kind"] != "baseline") & summary["source"].isin(ranked["arm_source"])]
    by_size = summary.sort_values("n", kind="stable") if "n" in summary.columns else summary
    size_order = list(dict.fromkeys(by_size["n_label"]))
    corr_rows = []
    for strategy in dict.fromkeys(nets["strategy"].dropna()):
        cells = nets[(nets["strategy"] == strategy) & nets[mean_col].map(lambda v: math.isfinite(v))]
        sources = list(dict.fromkeys(cells["source"]))
        sizes = [set(cells.loc[cells["source"] == s, "n_label"]) for s in sources]
        common = set.intersection(*sizes) if sizes else set()
        realised = cells[cells["n_label"].isin(common)].groupby("source")[mean_col].mean()
        col = f"{key}:{strategy}"
        ranked[col] = ranked["arm_source"].map(realised)
        ranked[f"rank:{strategy}"] = ranked[col].rank(ascending=not m.higher_is_better, method="min").astype("Int64")
        if per_n.empty:
            averaged = ", ".join(str(lab) for lab in size_order if lab in common)
            row = {"strategy": strategy, "n_label": MEAN_OVER_N, "n": math.nan, "n_labels": averaged}
            corr_rows.append(row | _agreement(ranked, realised, m.higher_is_better))
            continue
        cell_labels = cells["n_label"].astype(str)  # a summary may hold sizes as numbers, by_n holds text
        for n_label, at_n in per_n.groupby("n_label", sort=False):
            realised_at_n = cells[cell_labels == n_label].groupby("source")[mean_col].mean()
            agreement = _agreement(at_n.reset_index(drop=True), realised_at_n, m.higher_is_better)
            if agreement["n_sources"] == 0:
                continue  # no ranked source has a result at this N for this strategy (yet)
            row = {"strategy": strategy, "n_label": n_label, "n": at_n["n"].iloc[0], "n_labels": n_label}
            corr_rows.append(row | agreement)
    return ranked, pd.DataFrame(corr_rows, columns=RANK_CORR_COLUMNS)


PAIR_COLUMNS = [
    "arm",
    "reference",
    "n_label",
    "n",
    "n_pairs",
    "auc_arm",
    "auc_ref",
    "mean_diff",
    "paired_t_p",
    "delong_better",
    "delong_worse",
    "delong_seeds",
]


def arm_pairs(
    trials: pd.DataFrame, pairs: list[tuple[str, str]], predictions: Predictions | None
) -> tuple[pd.DataFrame, list[str]]:
    """Any arm against any other, per N: mean AUCs, the mean per-seed difference (arm minus reference) with the paired
    t-test across seeds, and in how many seeds DeLong's test on the shared test images finds the arm better or worse
    (p < 0.05). The report compares every arm with one reference; this answers questions such as "recipe vs
    fine-tune from the same source" or "same-site vs other-site source under one strategy".

    Example:
        >>> t = pd.DataFrame({"arm": ["a", "a", "r", "r"], "n_label": "10", "n": 10.0, "seed": [0, 1, 0, 1],
        ...                   "status": "done", "auc": [0.8, 0.9, 0.7, 0.75], "id": ["1", "2", "3", "4"]})
        >>> rows, _ = arm_pairs(t, [("a", "r")], None)
        >>> round(float(rows.loc[0, "mean_diff"]), 3)
        0.125
    """
    known = set(trials["arm"])
    rows, notes = [], []
    for arm, ref in pairs:
        for name in (arm, ref):
            if name not in known:
                close = suggest(name, sorted(known))
                hint = f"; did you mean {close[0]!r}?" if close else ""
                raise UserError(f"{name!r} is not an arm of this study{hint}")
        two = trials[trials["arm"].isin([arm, ref])]
        seeds = paired_seed_tests(two, ref)
        delong = delong_comparisons(two, ref, predictions)[0] if predictions is not None else pd.DataFrame()
        done = two[two["status"] == "done"]
        for s in seeds.itertuples():
            at = done[done["n_label"] == s.n_label]
            d = delong[delong["n_label"] == s.n_label] if len(delong) else delong
            rows.append(
                {
                    "arm": arm,
                    "reference": ref,
                    "n_label": s.n_label,
                    "n": s.n,
                    "n_pairs": s.n_pairs,
                    "auc_arm": float(at.loc[at["arm"] == arm, "auc"].mean()),
                    "auc_ref": float(at.loc[at["arm"] == ref, "auc"].mean()),
                    "mean_diff": s.mean_diff,
                    "paired_t_p": s.p_value,
                    "delong_better": int(((d["diff"] > 0) & (d["p_value"] < 0.05)).sum()) if len(d) else 0,
                    "delong_worse": int(((d["diff"] < 0) & (d["p_value"] < 0.05)).sum()) if len(d) else 0,
                    "delong_seeds": int(d["seed"].nunique()) if len(d) else 0,
                }
            )
    if predictions is None:
        notes.append("No predictions were given, so the DeLong columns are 0.")
    return pd.DataFrame(rows, columns=PAIR_COLUMNS), notes
