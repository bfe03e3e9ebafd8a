"""The study's tables: one row per trial (``results.csv``) and per arm and N over seeds (``summary.csv``).

Pure pandas on the plain trials table the study runner hands over; nothing here knows how trials were run.
A training-set size is identified by its ``n_label`` ('50', 'all'); ``n`` is the actual image count, used to
order and plot the sizes ('all' is labelled with its count).

A study is scored by its task kind's primary metric (:func:`metric_spec`): AUC for classification, MAE for
regression, Dice for segmentation. Its key names the columns (``auc``, ``auc_ci_lo`` … or ``mae`` …, ``dice`` …);
everything else is the same.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd
from scipy import stats as sps

from medtransfer.evaluation.operating import SENS_AT_SPEC
from medtransfer.tasks.base import kind_of_metric

RESULT_COLUMNS = [
    "id",
    "arm",
    "source",
    "strategy",
    "n",
    "n_label",
    "seed",
    "auc",
    "auc_ci_lo",
    "auc_ci_hi",
    "seconds",
    "status",
    "error",
    "degenerate",
]
SUMMARY_COLUMNS = [
    "arm",
    "kind",
    "source",
    "strategy",
    "n_label",
    "n",
    "n_seeds",
    "auc_mean",
    "auc_sd",
    "auc_ci_lo",
    "auc_ci_hi",
    "ci_method",
    "auc_t_lo",
    "auc_t_hi",
    "seconds_mean",
    "n_done",
    "n_failed",
    "n_pending",
    "n_degenerate",
]
_REQUIRED = ("id", "arm", "n_label", "seed", "status")
_DEFAULTS: dict[str, Any] = {
    "kind": "net",
    "source": None,
    "strategy": None,
    "n": np.nan,
    "seconds": np.nan,
    "error": None,
    "metrics": None,
    "degenerate": None,
}
CI_T = "t across seeds"
CI_BOOTSTRAP = "bootstrap (1 seed)"
CI_TWO_LEVEL = "two-level bootstrap (seeds, then test images)"


@dataclass(frozen=True)
class Metric:
    """How a study is scored, as its task kind says: ``key`` prefixes the columns, ``name`` is what the report calls
    it, ``higher_is_better`` orders arms and ``unit_interval`` says whether CIs are clipped to [0, 1]."""

    key: str
    name: str
    a_name: str  # with its article, for sentences: 'an AUC', 'a Dice score'
    higher_is_better: bool = True
    unit_interval: bool = True
    floor: float | None = None  # the lowest possible value when not in [0, 1] (MAE: 0)

    @property
    def axis(self) -> str:
        return f"{self.name} ({'higher' if self.higher_is_better else 'lower'} is better)"

    def better(self, a: float, b: float) -> bool:
        """``a`` is at least as good as ``b``."""
        return a >= b if self.higher_is_better else a <= b

    def clip(self, lo: float, hi: float) -> tuple[float, float]:
        """A t-interval across seeds kept inside the metric's range ([0, 1]; MAE ≥ 0)."""
        if self.unit_interval:
            return max(lo, 0.0), min(hi, 1.0)
        return (max(lo, self.floor) if self.floor is not None else lo), hi


def metric_spec(metric: str | Metric) -> Metric:
    """The :class:`Metric` with key ``metric`` ('auc', 'dice', 'mae' ...), from the task kind whose primary metric it
    is; raises ValueError on any other name.

    Example:
        >>> metric_spec("dice").name, metric_spec("mae").higher_is_better
        ('Dice', False)
    """
    if isinstance(metric, Metric):
        return metric
    kind = kind_of_metric(metric)
    return Metric(
        kind.metric, kind.metric_label, kind.metric_phrase, kind.higher_is_better, kind.unit_interval, kind.metric_floor
    )


def result_columns(metric: str = "auc") -> list[str]:
    """``results.csv``'s fixed columns for ``metric`` (:data:`RESULT_COLUMNS` with ``auc`` renamed)."""
    key = metric_spec(metric).key
    return [c.replace("auc", key, 1) if c.startswith("auc") else c for c in RESULT_COLUMNS]


def summary_columns(metric: str = "auc") -> list[str]:
    """``summary.csv``'s columns for ``metric`` (:data:`SUMMARY_COLUMNS` with ``auc`` renamed)."""
    key = metric_spec(metric).key
    return [c.replace("auc", key, 1) if c.startswith("auc") else c for c in SUMMARY_COLUMNS]


def _none_if_missing(v: Any) -> Any:
    return None if v is None or (isinstance(v, float) and math.isnan(v)) else v


def normalise_trials(trials: pd.DataFrame, metric: str = "auc") -> pd.DataFrame:
    """A copy of ``trials`` with every expected column present and typed; raises on missing key columns.

    The score columns are ``metric``'s (``auc``, ``auc_ci_lo``, ``auc_ci_hi`` or the same with ``dice``).

    Example:
        >>> t = normalise_trials(pd.DataFrame({"id": ["a"], "arm": ["x"], "n_label": [50], "seed": [0],
        ...                                    "status": ["DONE"]}))
        >>> t.loc[0, "n_label"], t.loc[0, "status"], t.loc[0, "metrics"]
        ('50', 'done', {})
    """
    missing = [c for c in _REQUIRED if c not in trials.columns]
    if missing:
        raise ValueError(f"trials table lacks columns {missing}; it has {list(trials.columns)}")
    key = metric_spec(metric).key
    scores = (key, f"{key}_ci_lo", f"{key}_ci_hi")
    t = trials.copy().reset_index(drop=True)
    for col, default in {**_DEFAULTS, **dict.fromkeys(scores, np.nan)}.items():
        if col not in t.columns:
            t[col] = default
    for col in ("n", "seconds", *scores):
        t[col] = pd.to_numeric(t[col], errors="coerce").astype(float)
    t["id"] = t["id"].astype(str)
    t["arm"] = t["arm"].astype(str)
    t["n_label"] = t["n_label"].astype(str)
    t["status"] = t["status"].astype(str).str.lower()
    t["kind"] = t["kind"].fillna("net").astype(str)
    for col in ("source", "strategy", "error", "degenerate"):
        t[col] = t[col].astype(object).map(_none_if_missing)
    t["metrics"] = t["metrics"].map(lambda m: m if isinstance(m, dict) else {})
    return t


def _label_number(n_label: str) -> float:
    try:
        return float(n_label)
    except ValueError:
        return math.nan


def n_levels(trials: pd.DataFrame) -> pd.DataFrame:
    """The training-set sizes of a (normalised) trials table, ordered: columns ``n_label``, ``n``, ``tick``.

    ``n`` is the median actual size over trials with one (else the number in the label); ``tick`` is how the
    size is written in tables and on axes: the number, or ``all (40)`` for 'all'.

    Example:
        >>> t = normalise_trials(pd.DataFrame({"id": list("abc"), "arm": "x", "n_label": ["all", "10", "20"],
        ...                                    "n": [40, 10, 20], "seed": 0, "status": "done"}))
        >>> n_levels(t)["tick"].tolist()
        ['10', '20', 'all (40)']
    """
    rows = []
    for label, g in trials.groupby("n_label", sort=False):
        finite = g["n"].dropna()
        n = float(finite.median()) if len(finite) else _label_number(label)
        if math.isfinite(n):
            n = float(round(n))
        number = _label_number(label)
        if math.isfinite(number) and (not math.isfinite(n) or n == number):
            tick = label
        else:
            tick = f"{label} ({int(n)})" if math.isfinite(n) else label
        rows.append({"n_label": label, "n": n, "tick": tick})
    # By size; sizes not known yet (all trials pending) go last, 'all' after the other unknowns.
    rows.sort(key=lambda r: (not math.isfinite(r["n"]), r["n"] if math.isfinite(r["n"]) else r["n_label"] == "all"))
    return pd.DataFrame(rows, columns=["n_label", "n", "tick"])


def arm_order(trials: pd.DataFrame) -> list[str]:
    """Arms in order of first appearance (the study's own order)."""
    return list(dict.fromkeys(trials["arm"]))


def label_names(trials: pd.DataFrame) -> list[str]:
    """Label (or regression target) names found in the trials' ``metrics['per_label']`` (``per_target``), in
    first-seen order."""
    names: dict[str, None] = {}
    for m in trials["metrics"]:
        per_label = _per_output(m) if isinstance(m, dict) else None
        if isinstance(per_label, dict):
            names.update(dict.fromkeys(map(str, per_label)))
    return list(names)


def _metric_value(m: dict, name: str | None, field: str) -> float:
    """``m['per_label'][name][field]`` (or ``m[field]`` when ``name`` is None) as a float; NaN when absent."""
    if name is not None:
        m = (m.get("per_label") or {}).get(name) or {}
    value = m.get(field) if isinstance(m, dict) else None
    try:
        return float(value) if value is not None else math.nan
    except (TypeError, ValueError):
        return math.nan


def results_table(trials: pd.DataFrame, metric: str = "auc") -> pd.DataFrame:
    """One row per trial; per-label AUC columns ``auc:<label>`` when the trials have more than one label.

    For Dice: one ``dice:<class>`` column per class (even for one class), then ``hd95`` (mm, the trial's
    ``metrics['hd95']``) and ``hd95:<class>``, NaN where the trial has none.

    Example:
        >>> t = normalise_trials(pd.DataFrame({"id": ["a"], "arm": ["x"], "n_label": ["10"], "seed": [0],
        ...     "status": ["done"], "metrics": [{"per_label": {"p": {"auc": 0.7}, "q": {"auc": 0.8}}}]}))
        >>> results_table(t).columns[-2:].tolist()
        ['auc:p', 'auc:q']
    """
    key = metric_spec(metric).key
    out = trials[result_columns(key)].copy()
    out["n"] = out["n"].astype("Int64")
    labels = label_names(trials)
    metrics = trials["metrics"]
    volumetric = kind_of_metric(key).unit == "cases"  # per-class Dice and HD95 of a segmentation
    if volumetric:
        for name in labels:
            out[f"dice:{name}"] = [_metric_value(m, name, "dice") for m in metrics]
        out["hd95"] = [_metric_value(m, None, "hd95") for m in metrics]
        for name in labels:
            out[f"hd95:{name}"] = [_metric_value(m, name, "hd95") for m in metrics]
    elif len(labels) > 1:
        for name in labels:
            out[f"{key}:{name}"] = [
                pd.to_numeric((_per_output(m).get(name) or {}).get(key), errors="coerce") for m in trials["metrics"]
            ]
    for extra in () if volumetric else kind_of_metric(key).secondary_metrics:
        out[extra] = [pd.to_numeric((m or {}).get(extra), errors="coerce") for m in metrics]
    if has_operating_points(trials):  # the test operating point at the validation threshold (metrics.json has CIs)
        out = pd.concat([out, operating_results(trials)], axis=1)
    return out


def _per_output(m: Any) -> dict:
    """A trial's per-label (classification) or per-target (regression) metrics."""
    m = m or {}
    return m.get("per_label") or m.get("per_target") or {}


def mean_ci(values: np.ndarray, alpha: float = 0.05) -> tuple[float, float, float, float]:
    """``(mean, sd, lo, hi)`` of finite ``values`` with a t-interval for the mean; NaN where undefined.

    Written out by hand so that empty or one-value inputs give NaN without numpy's empty-slice warnings.

    Example:
        >>> [round(v, 4) for v in mean_ci(np.array([0.8, 0.82, 0.84]))]
        [0.82, 0.02, 0.7703, 0.8697]
    """
    x = np.asarray(values, dtype=float)
    x = x[np.isfinite(x)]
    k = x.size
    if k == 0:
        return (math.nan, math.nan, math.nan, math.nan)
    mean = float(x.sum() / k)
    if k == 1:
        return (mean, math.nan, math.nan, math.nan)
    sd = float(np.sqrt(((x - mean) ** 2).sum() / (k - 1)))
    half = float(sps.t.ppf(1 - alpha / 2, k - 1)) * sd / math.sqrt(k)
    return (mean, sd, mean - half, mean + half)


def summary_table(trials: pd.DataFrame, metric: str = "auc", keep_degenerate: bool = True) -> pd.DataFrame:
    """Per arm and N: seeds done, mean/sd AUC, 95% CI of the mean, mean seconds, failed and pending counts.

    ``n_seeds`` counts done trials with a finite AUC. The CI is a t-interval across seeds (``ci_method`` =
    't across seeds'); with one seed it is that trial's bootstrap CI ('bootstrap (1 seed)'); with none it is
    NaN (''). ``n_pending`` counts pending and running trials. With ``metric='dice'`` the same on the trials'
    Dice, in columns ``dice_mean``, ``dice_sd``, ``dice_ci_lo``, ``dice_ci_hi``.

    Example:
        >>> t = normalise_trials(pd.DataFrame({"id": ["a", "b"], "arm": "x", "n_label": "10", "n": 10,
        ...     "seed": [0, 1], "status": "done", "auc": [0.7, 0.8]}))
        >>> s = summary_table(t)
        >>> round(float(s.loc[0, "auc_mean"]), 3), s.loc[0, "ci_method"]
        (0.75, 't across seeds')
    """
    key = metric_spec(metric).key
    levels = n_levels(trials)
    rows = []
    for arm in arm_order(trials):
        a = trials[trials["arm"] == arm]
        first = a.iloc[0]
        for level in levels.itertuples():
            g = a[a["n_label"] == level.n_label]
            if g.empty:
                continue
            done = g[g["status"] == "done"]
            ok = done[np.isfinite(done[key])]
            degenerate = ok["degenerate"].notna() if "degenerate" in ok.columns else pd.Series(False, index=ok.index)
            if not keep_degenerate:
                ok = ok[~degenerate]
            mean, sd, lo, hi = mean_ci(ok[key].to_numpy())
            lo, hi = metric_spec(metric).clip(lo, hi)  # AUC and Dice live in [0, 1]; the t-interval does not know
            method = CI_T if len(ok) >= 2 else ""
            if len(ok) == 1:
                lo, hi, method = float(ok[f"{key}_ci_lo"].iloc[0]), float(ok[f"{key}_ci_hi"].iloc[0]), CI_BOOTSTRAP
            secs = done["seconds"].dropna()
            rows.append(
                {
                    "arm": arm,
                    "kind": first["kind"],
                    "source": first["source"],
                    "strategy": first["strategy"],
                    "n_label": level.n_label,
                    "n": level.n,
                    "n_seeds": len(ok),
                    f"{key}_mean": mean,
                    f"{key}_sd": sd,
                    f"{key}_ci_lo": lo,
                    f"{key}_ci_hi": hi,
                    "ci_method": method,
                    f"{key}_t_lo": lo if method == CI_T else math.nan,
                    f"{key}_t_hi": hi if method == CI_T else math.nan,
                    "seconds_mean": float(secs.mean()) if len(secs) else math.nan,
                    "n_done": len(done),
                    "n_failed": int((g["status"] == "failed").sum()),
                    "n_pending": int(g["status"].isin(["pending", "running"]).sum()),
                    "n_degenerate": int(degenerate.sum()),
                }
            )
    out = pd.DataFrame(rows, columns=summary_columns(key))
    # Typed even when empty, so callers can use numeric operations on a study with no trials.
    floats = ["n", f"{key}_mean", f"{key}_sd", f"{key}_ci_lo", f"{key}_ci_hi", f"{key}_t_lo", f"{key}_t_hi"]
    floats.append("seconds_mean")
    ints = ["n_seeds", "n_done", "n_failed", "n_pending", "n_degenerate"]
    return out.astype({**dict.fromkeys(floats, float), **dict.fromkeys(ints, int)})


def summary_metric(summary: pd.DataFrame) -> Metric:
    """The metric a summary table is in, read from its ``<metric>_mean`` column (AUC when there is none)."""
    key = next((c.removesuffix("_mean") for c in summary.columns if c.endswith("_mean") and c != "seconds_mean"), "auc")
    return metric_spec(key)


def cell_status(row: Any, metric: str = "auc") -> str:
    """What an arm × N cell without a mean shows: 'pending', 'failed', 'no AUC' (or 'no Dice') or '—'."""
    if row["n_pending"] > 0:
        return "pending"
    if row["n_failed"] > 0 and row["n_done"] == 0:
        return "failed"
    return f"no {metric_spec(metric).name}" if row["n_done"] > 0 else "—"


def _tick(summary: pd.DataFrame, n_label: str) -> str:
    n = summary.loc[summary["n_label"] == n_label, "n"].dropna()
    number = _label_number(n_label)
    if len(n) and (not math.isfinite(number) or float(n.iloc[0]) != number):
        return f"{n_label} ({int(n.iloc[0])})"
    return n_label


def format_summary_table(summary: pd.DataFrame) -> str:
    """A plain-text table of arms (rows) × N (columns) with ``mean [lo, hi]``, the report's 95 % CI, for the CLI.

    A Dice study's summary (``dice_mean`` … columns) gives the same table on mean Dice; the metric is read
    from the columns, so the CLI can pass ``summary.csv`` as it is.

    Example:
        >>> t = normalise_trials(pd.DataFrame({"id": ["a", "b"], "arm": "x", "n_label": "10", "n": 10,
        ...     "seed": [0, 1], "status": "done", "auc": [0.7, 0.8]}))
        >>> print(format_summary_table(summary_table(t)))
        arm  N=10
        ---  --------------------
        x    0.750 [0.115, 1.000]
    """
    if summary.empty:
        return "(no trials)"
    metric = summary_metric(summary)
    mean_col, lo_col, hi_col = (f"{metric.key}_{c}" for c in ("mean", "ci_lo", "ci_hi"))
    # A summary read back with pd.read_csv has integer n_labels when every size is a number.
    summary = summary.assign(n_label=summary["n_label"].astype(str))
    order = summary.assign(_n=summary["n"].fillna(np.inf))
    labels = list(dict.fromkeys(order.sort_values("_n", kind="stable")["n_label"]))
    arms = list(dict.fromkeys(summary["arm"]))
    header = ["arm"] + [f"N={_tick(summary, lab)}" for lab in labels]
    body = []
    for arm in arms:
        cells = [arm]
        for lab in labels:
            hit = summary[(summary["arm"] == arm) & (summary["n_label"] == lab)]
            if hit.empty:
                cells.append("")
                continue
            r = hit.iloc[0]
            if not math.isfinite(r[mean_col]):
                cells.append(cell_status(r, metric.key))
                continue
            lo, hi = r[lo_col], r[hi_col]
            ci = f" [{lo:.3f}, {hi:.3f}]" if math.isfinite(lo) and math.isfinite(hi) else ""
            cells.append(f"{r[mean_col]:.3f}{ci}")
        body.append(cells)
    widths = [max(len(row[j]) for row in [header, *body]) for j in range(len(header))]
    lines = [header, ["-" * w for w in widths], *body]
    return "\n".join("  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)).rstrip() for row in lines)


def calibration_table(trials: pd.DataFrame) -> pd.DataFrame:
    """Per arm and N: mean Brier score and mean ECE over the done seeds that report them (classification trials
    write ``brier`` and ``ece`` into their metrics); empty when no trial has them."""
    rows = []
    done = trials[trials["status"] == "done"]
    for (arm, n_label), g in done.groupby(["arm", "n_label"], sort=False):
        brier = [float(m["brier"]) for m in g["metrics"] if isinstance(m, dict) and _finite(m.get("brier"))]
        ece = [float(m["ece"]) for m in g["metrics"] if isinstance(m, dict) and _finite(m.get("ece"))]
        if brier or ece:
            rows.append(
                {
                    "arm": arm,
                    "n_label": n_label,
                    "n_seeds": max(len(brier), len(ece)),
                    "brier_mean": float(np.mean(brier)) if brier else math.nan,
                    "ece_mean": float(np.mean(ece)) if ece else math.nan,
                }
            )
    return pd.DataFrame(rows, columns=["arm", "n_label", "n_seeds", "brier_mean", "ece_mean"])


def reliability_curves(trials: pd.DataFrame) -> dict[str, list[dict]]:
    """Per arm, the reliability bins of its first label at its largest N (its first done seed there)."""
    curves: dict[str, list[dict]] = {}
    done = trials[trials["status"] == "done"].sort_values("n", kind="stable", na_position="first")
    for arm, g in done.groupby("arm", sort=False):
        last = g[g["n_label"] == g["n_label"].iloc[-1]]
        for m in last["metrics"]:
            bins = ((m or {}).get("calibration") or {}).get("reliability") or {}
            if bins:
                curves[f"{arm} (N={last['n_label'].iloc[0]})"] = next(iter(bins.values()))
                break
    return curves


def _finite(v: Any) -> bool:
    try:
        return v is not None and math.isfinite(float(v))
    except (TypeError, ValueError):
        return False


# --------------------------------------------------------------------------- operating points (issue [3/4])
OPERATING_METRICS = ("sensitivity", "specificity", "ppv", "npv", "f1", *SENS_AT_SPEC)
OPERATING_COLUMNS = ("threshold", *OPERATING_METRICS)  # results.csv's, from each trial's metrics["operating_point"]


def _operating(m: Any) -> dict:
    return ((m or {}).get("operating_point") or {}) if isinstance(m, dict) else {}


def has_operating_points(trials: pd.DataFrame) -> bool:
    """Whether any trial recorded an operating point (binary and multi-label classification since issue [3/4])."""
    return any(_finite(_operating(m).get(k)) for m in trials["metrics"] for k in OPERATING_METRICS)


def operating_results(trials: pd.DataFrame) -> pd.DataFrame:
    """Per trial, the :data:`OPERATING_COLUMNS` of its test operating point (NaN where it has none; ``threshold`` is
    NaN for several labels, each of which has its own)."""
    return pd.DataFrame(
        {
            c: [pd.to_numeric(_operating(m).get(c), errors="coerce") for m in trials["metrics"]]
            for c in OPERATING_COLUMNS
        },
        index=trials.index,
    )


def operating_table(trials: pd.DataFrame, keep_degenerate: bool = False) -> pd.DataFrame:
    """Per arm and N: the mean over seeds of each operating-point metric with its 95 % CI (a t-interval across seeds,
    clipped to [0, 1]; with one seed, that trial's patient-bootstrap CI), the mean threshold and the rule.

    Columns: ``arm, n_label, n, n_seeds, rule, threshold_mean, <metric>_mean, <metric>_ci_lo, <metric>_ci_hi`` for
    each of :data:`OPERATING_METRICS`; empty when no trial has an operating point.
    """
    columns = ["arm", "n_label", "n", "n_seeds", "rule", "threshold_mean"]
    columns += [f"{k}_{s}" for k in OPERATING_METRICS for s in ("mean", "ci_lo", "ci_hi")]
    has = np.array([bool(_operating(m)) for m in trials["metrics"]], dtype=bool)
    done = trials[(trials["status"] == "done").to_numpy() & has]
    if not keep_degenerate and "degenerate" in done.columns:
        done = done[done["degenerate"].isna()]
    rows = []
    for (arm, n_label), g in done.groupby(["arm", "n_label"], sort=False):
        points = [_operating(m) for m in g["metrics"]]
        rules = {str((m or {}).get("threshold_rule") or "youden") for m in g["metrics"]}
        n = g["n"].max()
        row: dict[str, Any] = {"arm": arm, "n_label": n_label, "n": int(n) if _finite(n) else None}
        row["n_seeds"] = len(points)
        row["rule"] = ", ".join(sorted(rules))
        row["threshold_mean"] = _nanmean([p.get("threshold") for p in points])
        for k in OPERATING_METRICS:
            values = np.array([float(p[k]) if _finite(p.get(k)) else math.nan for p in points])
            mean, _, lo, hi = mean_ci(values)
            if np.isfinite(values).sum() == 1:  # one seed: its own bootstrap CI over test patients
                lo, hi = (float(v) if _finite(v) else math.nan for v in points[int(np.nanargmax(values))][f"{k}_ci"])
            row[f"{k}_mean"], row[f"{k}_ci_lo"], row[f"{k}_ci_hi"] = mean, *_clip01(lo, hi)
        rows.append(row)
    return pd.DataFrame(rows, columns=columns)


def _clip01(lo: float, hi: float) -> tuple[float, float]:
    return (max(lo, 0.0) if math.isfinite(lo) else lo), (min(hi, 1.0) if math.isfinite(hi) else hi)


def _nanmean(values: list[Any]) -> float:
    finite = [float(v) for v in values if _finite(v)]
    return float(np.mean(finite)) if finite else math.nan


def roc_curves(
    trials: pd.DataFrame, predictions: Any, n_labels: list[str], keep_degenerate: bool = False
) -> dict[str, list[dict[str, Any]]]:
    """Per arm, the test ROC of each done seed at each of ``n_labels`` with its operating point: dicts with
    ``n_label, seed, fpr, tpr, sensitivity, specificity`` (the first label's, for several labels). Read from the
    trials' per-image predictions (``label:<L>``, ``score:<L>``); arms without predictions are left out."""
    # deferred: scikit-learn (~0.5 s over scipy); `import medtransfer.reporting` (the summary table) needs none
    from sklearn.metrics import roc_curve

    out: dict[str, list[dict[str, Any]]] = {}
    if predictions is None:
        return out
    done = trials[(trials["status"] == "done") & trials["n_label"].isin(n_labels)]
    if not keep_degenerate and "degenerate" in done.columns:
        done = done[done["degenerate"].isna()]
    for r in done.itertuples():
        pred = predictions(r.id)
        labels = [c for c in pred.columns if c.startswith("label:")] if pred is not None else []
        if not labels or f"score:{labels[0][6:]}" not in pred.columns:
            continue
        y, s = pred[labels[0]].to_numpy(float), pred[f"score:{labels[0][6:]}"].to_numpy(float)
        keep = np.isfinite(y) & np.isfinite(s)
        if len(np.unique(y[keep])) < 2:
            continue
        fpr, tpr, _ = roc_curve(y[keep], s[keep])
        point = _operating(r.metrics)
        per_label = ((r.metrics or {}).get("per_label") or {}) if isinstance(r.metrics, dict) else {}
        if len(per_label) > 1:  # several labels: the first label's own point, as its curve
            point = (per_label.get(labels[0][6:]) or {}).get("operating_point") or {}
        out.setdefault(r.arm, []).append(
            {
                "n_label": r.n_label,
                "seed": r.seed,
                "fpr": fpr,
                "tpr": tpr,
                "sensitivity": point.get("sensitivity"),
                "specificity": point.get("specificity"),
            }
        )
    return out


def with_operating_means(summary: pd.DataFrame, operating: pd.DataFrame) -> pd.DataFrame:
    """``summary.csv`` with each arm and N's mean operating point (``sensitivity_mean`` … ``sens_at_spec95_mean``;
    their CIs are in ``operating_points.csv``)."""
    if operating.empty:
        return summary
    means = operating[["arm", "n_label", "threshold_mean", *(f"{k}_mean" for k in OPERATING_METRICS)]]
    return summary.merge(means, on=["arm", "n_label"], how="left")
