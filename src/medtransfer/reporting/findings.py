"""What a study shows, generated: collapsed trials, a two-level bootstrap of every arm and every paired difference,
the comparison families of the design with Holm's adjustment, non-inferiority against the baseline, and the
sentences the report opens with (``findings.csv`` holds every test behind them).

The statistics, in one place:

* **Replicates.** Every finished trial's predictions are scored on the same bootstrap draws of the test images
  (by patient where the predictions name patients; :func:`~medtransfer.evaluation.stats.bootstrap_weights`), through
  its task kind's :meth:`~medtransfer.tasks.base.TaskKind.replicate_scores` (AUC, MAE, Dice under case weights).
* **Two-level bootstrap** (:func:`~medtransfer.evaluation.stats.two_level_bootstrap`): resample seeds, then (shared
  across seeds) test images. An arm's CI is that of its mean over seeds; a comparison's Δ is the mean over paired seeds
  of arm − reference on the same image draw, and its p-value comes from the same replicates, so the verdict, the CI
  and the p can never disagree.
* **Families** (Holm within each, over all N; Benjamini–Hochberg given as a column): the best network vs the next at
  each N; each source vs scratch under the same strategy; source vs source under the same strategy; each strategy vs
  ``finetune`` from the same source; the best network vs each baseline. "Better"/"worse" only when Holm's adjusted
  p < 0.05; otherwise "no detectable difference".
* **Degenerate trials** (:meth:`~medtransfer.tasks.base.TaskKind.collapse_reason`) are excluded from means and tests
  by default (``study.keep_degenerate``): a model that did not learn measures an optimisation failure, not what the arm
  achieves with N labels. How often an arm collapses is reported beside it, since excluding them flatters that arm.
* **Best network** at an N is chosen by mean *validation* score (never by test); the test then describes it.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd

from medtransfer.evaluation.curves import back_test, learning_curve
from medtransfer.evaluation.stats import benjamini_hochberg, bootstrap_weights, holm, paired_test, two_level_bootstrap
from medtransfer.reporting.tables import Metric, arm_order, mean_ci, metric_spec, n_levels
from medtransfer.tasks.base import kind_of_metric

log = logging.getLogger(__name__)

N_BOOT = 2000
ALPHA = 0.05
METHOD = "two-level bootstrap (seeds, then test images{by}); Holm within family"

FAMILIES = {
    "best_vs_next": "best network vs the next (by validation)",
    "source_vs_scratch": "each source vs scratch (same strategy)",
    "source_vs_source": "source vs source (same strategy)",
    "strategy_vs_finetune": "each strategy vs finetune (same source)",
    "best_vs_baseline": "best network vs each baseline",
}
FINDINGS_COLUMNS = [
    "family",
    "n_label",
    "n",
    "arm",
    "reference",
    "metric",
    "arm_mean",
    "reference_mean",
    "delta",
    "ci_lo",
    "ci_hi",
    "p_value",
    "p_holm",
    "p_bh",
    "family_size",
    "verdict",
    "n_seeds",
    "n_images",
    "n_excluded",
    "not_converged",
    "method",
]


# --------------------------------------------------------------------------- trial-level facts
def degenerate_reasons(trials: pd.DataFrame) -> pd.Series:
    """Per trial: why it is degenerate (the ledger's reason, else the kind's check of its metrics), or None."""
    out = []
    for r in trials.itertuples():
        reason = getattr(r, "degenerate", None)
        if isinstance(reason, str) and reason:
            out.append(reason)
            continue
        m = r.metrics if isinstance(r.metrics, dict) else {}
        if r.status != "done" or not m.get("metric"):
            out.append(None)
            continue
        if "degenerate" in m:  # the trial was checked when it finished
            out.append(m["degenerate"] or None)
            continue
        try:
            out.append(kind_of_metric(m["metric"]).collapse_reason(m))
        except ValueError:
            out.append(None)
    return pd.Series(out, index=trials.index, dtype=object)


def usable(trials: pd.DataFrame, key: str, keep_degenerate: bool = False) -> pd.DataFrame:
    """Done trials with a finite score, less the degenerate ones unless ``keep_degenerate``."""
    t = trials[(trials["status"] == "done") & np.isfinite(trials[key])]
    if not keep_degenerate and "degenerate" in t.columns:
        t = t[t["degenerate"].isna()]
    return t


def convergence_flags(trials: pd.DataFrame) -> dict[tuple[str, str], tuple[int, int]]:
    """``(arm, n_label) -> (seeds whose best epoch was the last one, seeds with epochs recorded)``."""
    out: dict[tuple[str, str], tuple[int, int]] = {}
    done = trials[trials["status"] == "done"]
    for (arm, level), g in done.groupby(["arm", "n_label"], sort=False):
        last = total = 0
        for m in g["metrics"]:
            best, run = (m or {}).get("best_epoch"), (m or {}).get("epochs_run")
            if isinstance(best, int | float) and isinstance(run, int | float) and run > 1:
                total += 1
                last += int(best == run - 1)
        out[(arm, level)] = (last, total)
    return out


def not_converged(flags: dict[tuple[str, str], tuple[int, int]], arm: str, level: str) -> bool:
    """The arm's best epoch was its last in most seeds at this N: more epochs might still have helped."""
    last, total = flags.get((arm, level), (0, 0))
    return total > 0 and last > total / 2


# --------------------------------------------------------------------------- replicates
@dataclass
class Replicates:
    """Each usable trial's metric on the full test set (``point``) and on ``n_boot`` shared image draws."""

    point: dict[str, float] = field(default_factory=dict)
    values: dict[str, np.ndarray] = field(default_factory=dict)
    n_images: dict[str, int] = field(default_factory=dict)
    by_patient: bool = False
    n_boot: int = N_BOOT
    notes: list[str] = field(default_factory=list)


def trial_replicates(
    trials: pd.DataFrame,
    predictions: Callable[[str], pd.DataFrame | None] | None,
    metric: str,
    *,
    n_boot: int = N_BOOT,
    seed: int = 0,
) -> Replicates:
    """Score every trial in ``trials`` on the same ``n_boot`` bootstrap draws of the union of their test images."""
    kind = kind_of_metric(metric_spec(metric).key)
    rep = Replicates(n_boot=n_boot)
    if predictions is None or trials.empty:
        rep.notes.append("No per-image predictions: arm CIs are t-intervals across seeds and no Δ was tested.")
        return rep
    tables: dict[str, tuple] = {}
    for tid in trials["id"]:
        try:
            table = predictions(tid)
        except Exception as exc:  # noqa: BLE001 - one unreadable file costs one trial, with a note
            rep.notes.append(f"Predictions of trial {tid} could not be read ({type(exc).__name__}).")
            continue
        arrays = None if table is None else kind.prediction_arrays(table)
        if arrays is None:
            rep.notes.append(f"Trial {tid} has no usable per-image predictions; it is left out of the bootstrap.")
            continue
        tables[tid] = arrays
    if not tables:
        return rep
    ids = pd.Index(pd.unique(pd.concat([a[0] for a in tables.values()], ignore_index=True)))
    group_of = pd.concat([pd.Series(a[1].to_numpy(), index=a[0].to_numpy()) for a in tables.values()])
    group_of = group_of[~group_of.index.duplicated()].reindex(ids)
    rep.by_patient = bool((group_of.to_numpy() != ids.to_numpy()).any())
    cols = {tid: ids.get_indexer(a[0]) for tid, a in tables.items()}
    for tid, (_, _, lab, out) in tables.items():
        rep.point[tid] = float(kind.replicate_scores(lab, out, np.ones((1, len(lab))))[0])
        rep.values[tid] = np.full(n_boot, np.nan)
        rep.n_images[tid] = len(lab)
    start = 0
    groups = group_of.to_numpy() if rep.by_patient else None
    for weights in bootstrap_weights(len(ids), groups, n_boot, seed):
        b = len(weights)
        for tid, (_, _, lab, out) in tables.items():
            with np.errstate(invalid="ignore", divide="ignore"):
                rep.values[tid][start : start + b] = kind.replicate_scores(lab, out, weights[:, cols[tid]])
        start += b
    return rep


# --------------------------------------------------------------------------- arms and comparisons
def _seed_trials(t: pd.DataFrame, arm: str, level: str, rep: Replicates) -> pd.DataFrame:
    g = t[(t["arm"] == arm) & (t["n_label"] == level) & t["id"].isin(list(rep.values))]
    return g.drop_duplicates("seed", keep="last")


def arm_intervals(t: pd.DataFrame, rep: Replicates, key: str, seed: int = 0) -> pd.DataFrame:
    """Per arm and N of the usable trials: the two-level bootstrap CI of the mean over seeds."""
    rows = []
    for arm in arm_order(t):
        for level in dict.fromkeys(t.loc[t["arm"] == arm, "n_label"]):
            g = _seed_trials(t, arm, level, rep)
            if g.empty:
                continue
            res = two_level_bootstrap(
                np.stack([rep.values[i] for i in g["id"]]), [rep.point[i] for i in g["id"]], seed=seed
            )
            rows.append({"arm": arm, "n_label": level, f"{key}_boot_lo": res.lo, f"{key}_boot_hi": res.hi})
    return pd.DataFrame(rows, columns=["arm", "n_label", f"{key}_boot_lo", f"{key}_boot_hi"])


SEED_LEVEL = "paired t across seeds (no per-image predictions: test-set noise not covered); Holm within family"


def _seed_level(t: pd.DataFrame, arm: str, ref: str, level: str, key: str) -> dict[str, Any] | None:
    """Δ = arm − ref from the per-seed scores alone, with a paired t-interval and test (a study without predictions)."""
    at = t[t["n_label"] == level]
    a = at[at["arm"] == arm].drop_duplicates("seed", keep="last")
    r = at[at["arm"] == ref].drop_duplicates("seed", keep="last")
    pairs = a.merge(r, on="seed", suffixes=("", "_ref"))
    if pairs.empty:
        return None
    d = pairs[key].to_numpy(float) - pairs[f"{key}_ref"].to_numpy(float)
    mean, _, lo, hi = mean_ci(d)
    n_img = [m.get("n") for m in pairs["metrics"] if isinstance(m, dict) and m.get("n")]
    return {
        "arm_mean": float(pairs[key].mean()),
        "reference_mean": float(pairs[f"{key}_ref"].mean()),
        "delta": mean,
        "ci_lo": lo,
        "ci_hi": hi,
        "p_value": paired_test(pairs[key].to_numpy(float), pairs[f"{key}_ref"].to_numpy(float))["p_value"],
        "n_seeds": len(pairs),
        "n_images": int(max(n_img)) if n_img else -1,
    }


def compare(
    t: pd.DataFrame, rep: Replicates, arm: str, ref: str, level: str, seed: int = 0, key: str | None = None
) -> dict[str, Any] | None:
    """Δ = arm − ref at one N over the seeds both have (two-level bootstrap), or None when no seed pairs up. A study
    with no per-image predictions at all (``rep`` empty) falls back to a paired t across seeds when ``key`` is given."""
    if not rep.values and key is not None:
        return _seed_level(t, arm, ref, level, key)
    a, r = _seed_trials(t, arm, level, rep), _seed_trials(t, ref, level, rep)
    pairs = a.merge(r, on="seed", suffixes=("", "_ref"))
    if pairs.empty:
        return None
    diffs = np.stack([rep.values[i] - rep.values[j] for i, j in zip(pairs["id"], pairs["id_ref"], strict=True)])
    point = [rep.point[i] - rep.point[j] for i, j in zip(pairs["id"], pairs["id_ref"], strict=True)]
    res = two_level_bootstrap(diffs, point, seed=seed)
    lo, hi = res.normal_ci()  # excludes 0 exactly when p < 0.05
    return {
        "arm_mean": float(np.mean([rep.point[i] for i in pairs["id"]])),
        "reference_mean": float(np.mean([rep.point[j] for j in pairs["id_ref"]])),
        "delta": res.estimate,
        "ci_lo": lo,
        "ci_hi": hi,
        "p_value": res.p_value,
        "n_seeds": res.n_seeds,
        "n_images": int(max(rep.n_images[i] for i in pairs["id"])),
    }


def _val_score(metrics: dict) -> float:
    val = (metrics or {}).get("val")
    if isinstance(val, dict):
        v = val.get("score")
        try:
            return float(v) if v is not None else math.nan
        except (TypeError, ValueError):
            return math.nan
    return math.nan


def rank_networks(t: pd.DataFrame, level: str, m: Metric) -> tuple[list[str], str]:
    """Network arms at one N, best first, by mean validation score (by test mean when no arm has one) and how."""
    nets = t[(t["n_label"] == level) & (t["kind"] != "baseline")]
    if nets.empty:
        return [], ""
    val = nets.assign(v=nets["metrics"].map(_val_score)).groupby("arm", sort=False)["v"].mean()
    by, scores = "validation", val
    if not np.isfinite(val.to_numpy(float)).any():
        by, scores = "test", nets.groupby("arm", sort=False)[m.key].mean()
    scores = scores[np.isfinite(scores.to_numpy(float))]
    order = scores.sort_values(ascending=not m.higher_is_better, kind="stable").index.tolist()
    return order, by


def design_pairs(t: pd.DataFrame, m: Metric, baselines: list[str]) -> list[tuple[str, str, str, str]]:
    """``(family, n_label, arm, reference)`` for every comparison the study's design contains."""
    arms = [a for a in arm_order(t) if a not in baselines and (t.loc[t["arm"] == a, "kind"] != "baseline").any()]
    info = t.drop_duplicates("arm").set_index("arm")
    src = {a: info.at[a, "source"] for a in arms}
    strat = {a: info.at[a, "strategy"] for a in arms}
    levels = n_levels(t)["n_label"].tolist()
    pairs = []
    for level in levels:
        here = set(t.loc[t["n_label"] == level, "arm"])
        ranked, _ = rank_networks(t, level, m)
        if len(ranked) >= 2:
            pairs.append(("best_vs_next", level, ranked[0], ranked[1]))
        for a in arms:
            ref = next((b for b in arms if src[b] == "scratch" and strat[b] == strat[a]), None)
            if src[a] != "scratch" and ref and {a, ref} <= here:
                pairs.append(("source_vs_scratch", level, a, ref))
        for i, a in enumerate(arms):
            for b in arms[i + 1 :]:
                if strat[a] == strat[b] and "scratch" not in (src[a], src[b]) and src[a] != src[b] and {a, b} <= here:
                    pairs.append(("source_vs_source", level, a, b))
        for a in arms:
            ref = next((b for b in arms if src[b] == src[a] and strat[b] == "finetune"), None)
            if strat[a] != "finetune" and ref and {a, ref} <= here:
                pairs.append(("strategy_vs_finetune", level, a, ref))
        if ranked:
            for base in baselines:
                if base in here:
                    pairs.append(("best_vs_baseline", level, ranked[0], base))
    return pairs


def verdict(row: dict[str, Any], m: Metric) -> str:
    """'better', 'worse' (Holm's p < 0.05, in the metric's direction) or 'no detectable difference'."""
    p, d = row.get("p_holm", math.nan), row.get("delta", math.nan)
    if not (math.isfinite(p) and p < ALPHA and math.isfinite(d) and d != 0):
        return "no detectable difference"
    return "better" if (d > 0) == m.higher_is_better else "worse"


def findings_table(
    t: pd.DataFrame,
    rep: Replicates,
    metric: str,
    baselines: list[str],
    *,
    keep_degenerate: bool = False,
    seed: int = 0,
) -> pd.DataFrame:
    """Every comparison of the design (:func:`design_pairs`) with Δ, CI, p, Holm and BH within its family."""
    m = metric_spec(metric)
    levels = n_levels(t).set_index("n_label")["n"]
    flags = convergence_flags(t)
    excluded = t[t["degenerate"].notna()] if "degenerate" in t.columns else t.iloc[0:0]
    rows = []
    u = usable(t, m.key, keep_degenerate)
    method = METHOD.format(by=", by patient" if rep.by_patient else "") if rep.values else SEED_LEVEL
    for family, level, arm, ref in design_pairs(u, m, baselines):
        res = compare(u, rep, arm, ref, level, seed=seed, key=m.key)
        if res is None:
            continue
        n_excl = int(((excluded["n_label"] == level) & excluded["arm"].isin([arm, ref])).sum())
        slow = [a for a in (arm, ref) if not_converged(flags, a, level)]
        rows.append(
            {
                "family": family,
                "n_label": level,
                "n": levels.get(level, math.nan),
                "arm": arm,
                "reference": ref,
                "metric": m.key,
                **res,
                "n_excluded": n_excl,
                "not_converged": ", ".join(slow),
                "method": method,
            }
        )
    df = pd.DataFrame(rows, columns=[c for c in FINDINGS_COLUMNS if c not in ("p_holm", "p_bh", "verdict")])
    df["p_holm"], df["p_bh"], df["family_size"] = math.nan, math.nan, 0
    for idx in df.groupby("family", sort=False).groups.values():
        p = df.loc[idx, "p_value"].to_numpy(float)
        df.loc[idx, "p_holm"] = holm(p)
        df.loc[idx, "p_bh"] = benjamini_hochberg(p)
        df.loc[idx, "family_size"] = int(np.isfinite(p).sum())
    df["verdict"] = [verdict(r, m) for r in df.to_dict("records")]
    return df[FINDINGS_COLUMNS]


def noninferiority(
    t: pd.DataFrame, rep: Replicates, metric: str, baseline: str, margin: float | None, *, seed: int = 0
) -> pd.DataFrame:
    """Per network arm and N: Δ = arm − baseline with its two-level CI, and whether the arm is non-inferior: the CI's
    worse end stays within ``margin`` of the baseline (None: the kind's default for the baseline's mean)."""
    m = metric_spec(metric)
    kind = kind_of_metric(m.key)
    sign = 1.0 if m.higher_is_better else -1.0
    rows = []
    for arm in arm_order(t):
        if arm == baseline or (t.loc[t["arm"] == arm, "kind"] == "baseline").all():
            continue
        for level in n_levels(t)["n_label"]:
            res = compare(usable(t, m.key), rep, arm, baseline, level, seed=seed, key=m.key)
            if res is None:
                continue
            mg = margin if margin is not None else kind.default_margin(res["reference_mean"])
            worse_end = res["ci_lo"] if m.higher_is_better else res["ci_hi"]
            ok = math.isfinite(worse_end) and sign * worse_end > -mg
            rows.append({"arm": arm, "n_label": level, **res, "margin": mg, "non_inferior": bool(ok)})
    cols = ["arm", "n_label", "arm_mean", "reference_mean", "delta", "ci_lo", "ci_hi", "p_value", "n_seeds"]
    return pd.DataFrame(rows, columns=[*cols, "n_images", "margin", "non_inferior"])


# --------------------------------------------------------------------------- sentences
def _num(x: float, digits: int = 3) -> str:
    return f"{x:.{digits}f}" if math.isfinite(x) else "—"


def _p(p: float) -> str:
    return "<0.001" if math.isfinite(p) and p < 0.001 else _num(p)


def _digits(m: Metric) -> int:
    return 3 if m.unit_interval else 2


def flip(row: dict[str, Any], m: Metric) -> dict[str, Any]:
    """The same comparison read the other way round (reference − arm): swapped names, negated Δ and CI."""
    out = dict(row)
    out["arm"], out["reference"] = row["reference"], row["arm"]
    out["arm_mean"], out["reference_mean"] = row["reference_mean"], row["arm_mean"]
    out["delta"], out["ci_lo"], out["ci_hi"] = -row["delta"], -row["ci_hi"], -row["ci_lo"]
    out["verdict"] = {"better": "worse", "worse": "better"}.get(row["verdict"], row["verdict"])
    return out


def describe(row: dict[str, Any], m: Metric, unit: str = "") -> str:
    """One comparison as a sentence: verdict, Δ with its CI, Holm's p, family size, seeds and images."""
    v = row["verdict"]
    head = (
        f"{row['arm']} vs {row['reference']}: no detectable difference"
        if v == "no detectable difference"
        else f"{row['arm']} is {v} than {row['reference']}"
    )
    return f"{head} ({effect(row, m, unit)})."


def effect(row: dict[str, Any], m: Metric, unit: str = "") -> str:
    """Δ with its CI, Holm's p of the family size, seeds and images, and what to be careful about."""
    d = _digits(m)
    u = f" {unit}" if unit else ""
    delta = f"Δ {m.name} = {row['delta']:+.{d}f}{u} [{_num(row['ci_lo'], d)}, {_num(row['ci_hi'], d)}]"
    p = f"Holm-adjusted p = {_p(row['p_holm'])} of {int(row['family_size'])}"
    images = f"{int(row['n_images'])} test images" if row["n_images"] > 0 else "test images not recorded"
    base = f"{row['n_seeds']} seed{'s' if row['n_seeds'] != 1 else ''} × {images}"
    tail = []
    if row.get("n_excluded", 0) > 0:
        tail.append(f"{row['n_excluded']} degenerate trial(s) excluded")
    slow = row.get("not_converged")
    if isinstance(slow, str) and slow:
        tail.append(f"may not have converged: {slow}")
    extra = f"; {'; '.join(tail)}" if tail else ""
    return f"{delta}, {p}; {base}{extra}"


@dataclass
class Findings:
    """The findings of a study: sentences (for the console and the report), the table, notes."""

    lines: list[str]
    table: pd.DataFrame
    notes: list[str]
    per_n: list[str] = field(default_factory=list)
    by_family: dict[str, list[str]] = field(default_factory=dict)
    counts: dict[str, dict[str, int]] = field(default_factory=dict)


def summarize_findings(
    t: pd.DataFrame,
    table: pd.DataFrame,
    metric: str,
    *,
    unit: str = "",
    keep_degenerate: bool = False,
    rep: Replicates | None = None,
    ranked_by: str | None = None,
) -> Findings:
    """The sentences: collapsed trials, per N the best network and whether it is separable from the next, per family
    the significant results (each a sentence) and how many comparisons showed no detectable difference.

    ``ranked_by``: ``table`` was computed earlier and ranked the networks by this score ('validation', 'test'); its
    ``best_vs_next`` row names the best network (a results folder kept the table but not the validation scores)."""
    m = metric_spec(metric)
    notes: list[str] = list(rep.notes) if rep is not None else []
    lines: list[str] = []
    degenerate = t[t["degenerate"].notna()] if "degenerate" in t.columns else t.iloc[0:0]
    done = t[t["status"] == "done"]
    if len(degenerate):
        what = "kept in" if keep_degenerate else "excluded from"
        per_cell = degenerate.groupby(["arm", "n_label"], sort=False).size()
        arms = ", ".join(
            f"{a} at N = {n} {k}/{int(((done['arm'] == a) & (done['n_label'] == n)).sum())}"
            for (a, n), k in per_cell.items()
        )
        lines.append(
            f"{len(degenerate)} of {len(done)} finished trials are degenerate (the model did not learn) and are {what} "
            f"means and tests (study.keep_degenerate: {str(keep_degenerate).lower()}; excluded by default because a "
            f"collapsed run measures an optimisation failure, not the arm; excluding them flatters the arm, so its "
            f"collapse rate is given): {arms}."
        )
    else:
        lines.append(f"No finished trial is degenerate ({len(done)} checked).")
    per_n: list[str] = []
    by_size = n_levels(t)
    for level in by_size.itertuples():
        ranked, by = rank_networks(usable(t, m.key, keep_degenerate), level.n_label, m)
        if not ranked:
            continue
        row = table[(table["family"] == "best_vs_next") & (table["n_label"] == level.n_label)]
        best = ranked[0]
        if ranked_by is not None and len(row):
            best, by = str(row.iloc[0]["arm"]), ranked_by
        test_mean = usable(t, m.key, keep_degenerate)
        test_mean = test_mean[(test_mean["arm"] == best) & (test_mean["n_label"] == level.n_label)][m.key].mean()
        text = f"N = {level.tick}: the best network by mean {by} {m.name} is {best} (test {m.name} {_num(test_mean)})"
        if len(row):
            r = row.iloc[0].to_dict()
            separable = "separable" if r["verdict"] != "no detectable difference" else "not separable"
            text += f"; it is {separable} from the next, {r['reference']} ({effect(r, m, unit)})"
        per_n.append(text + ".")
    lines += per_n
    by_family: dict[str, list[str]] = {}
    counts: dict[str, dict[str, int]] = {}
    for family, title in FAMILIES.items():
        rows = table[table["family"] == family]
        if family == "best_vs_next" or rows.empty:
            continue
        c = rows["verdict"].value_counts()
        counts[family] = {k: int(c.get(k, 0)) for k in ("better", "worse", "no detectable difference")}
        sig = rows[rows["verdict"] != "no detectable difference"]
        summary = (
            f"{title[0].upper()}{title[1:]} (Holm over {len(rows)} tests): {counts[family]['better']} better, "
            f"{counts[family]['worse']} worse, {counts[family]['no detectable difference']} no detectable difference."
        )
        sentences = [f"N = {r['n_label']}: {describe(r, m, unit)}" for r in sig.to_dict("records")]
        by_family[family] = [summary, *sentences]
        lines += [summary, *(f"  {s}" for s in sentences)]
    return Findings(lines, table, notes, per_n, by_family, counts)


# --------------------------------------------------------------------------- how many labels
CURVE_COLUMNS = [
    "arm",
    "n_levels",
    "a",
    "b",
    "c",
    "n_max",
    "pred_2x",
    "pred_2x_lo",
    "pred_2x_hi",
    "pred_4x",
    "pred_4x_lo",
    "pred_4x_hi",
    "target",
    "n_needed",
    "n_needed_lo",
    "n_needed_hi",
    "reachable",
    "n_boot",
    "n_failed",
]
BACKTEST_COLUMNS = ["arm", "n_held_out", "predicted", "observed", "error", "abs_error", "n_fit_levels"]


def _f(v: Any) -> float:
    return float(v) if isinstance(v, int | float) and v is not None else math.nan


def curve_fits(
    t: pd.DataFrame, metric: str, *, target: float | None = None, keep_degenerate: bool = False, seed: int = 0
) -> tuple[pd.DataFrame, pd.DataFrame, dict[str, dict]]:
    """Per arm with ≥ 3 sizes: the power-law learning curve (:func:`~medtransfer.evaluation.curves.learning_curve`),
    and with ≥ 4 the back-test (:func:`~medtransfer.evaluation.curves.back_test`). Returns the fits table, the
    back-test table and the raw curves by arm (for the figure)."""
    m = metric_spec(metric)
    bounds = (0.0, 1.0) if m.unit_interval else ((m.floor if m.floor is not None else -math.inf), math.inf)
    n_of = n_levels(t).set_index("n_label")["n"]
    u = usable(t, m.key, keep_degenerate)
    fits, tests, curves = [], [], {}
    for arm in arm_order(u):
        g = u[u["arm"] == arm]
        n = g["n_label"].map(n_of).to_numpy(float)
        y, seeds = g[m.key].to_numpy(float), g["seed"].to_numpy()
        ok = np.isfinite(n) & (n > 0) & np.isfinite(y)
        n, y, seeds = n[ok], y[ok], seeds[ok]
        if len(np.unique(n)) < 3:
            continue
        kw = {"higher_is_better": m.higher_is_better, "bounds": bounds}
        curve = learning_curve(n, y, seeds, target=target, seed=seed, **kw)
        if curve is None:
            continue
        curves[arm] = curve
        h = {round(float(x["factor"])): x for x in curve.get("horizons", [])}
        row = {"arm": arm, "n_levels": len(np.unique(n))}
        row.update({k: _f(curve.get(k)) for k in ("a", "b", "c", "n_max")})
        for f in (2, 4):
            x = h.get(f, {})
            row.update({f"pred_{f}x": _f(x.get("predicted")), f"pred_{f}x_lo": _f(x.get("lo")),
                        f"pred_{f}x_hi": _f(x.get("hi"))})  # fmt: skip
        row.update({k: _f(curve.get(k)) for k in ("n_needed", "n_needed_lo", "n_needed_hi")})
        row.update(target=target, reachable=curve.get("reachable"), n_boot=curve.get("n_boot"),
                   n_failed=curve.get("n_failed"))  # fmt: skip
        fits.append(row)
        bt = back_test(n, y, seeds, **kw)
        if bt is not None:
            tests.append({"arm": arm, **bt})
    return pd.DataFrame(fits, columns=CURVE_COLUMNS), pd.DataFrame(tests, columns=BACKTEST_COLUMNS), curves
