"""Figures of the study report: learning curves (mean AUC vs N), paired AUC differences vs a reference arm, and
reliability (calibration) diagrams.

A Dice study gets the same figures on Dice (``metric='dice'``).

Figures are drawn on a bare ``matplotlib.figure.Figure`` with an Agg canvas created here, never through
``pyplot``: no GUI backend is touched, no global backend is switched, and nothing happens at import.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from medtransfer.io import atomic_write
from medtransfer.reporting.tables import mean_ci, metric_spec
from medtransfer.tasks.base import kind_of_metric

_DPI = 110


def _new_figure(width: float = 7.5, height: float = 4.6) -> tuple[Any, Any]:
    # deferred: matplotlib (~1.5 s); every `import medtransfer.reporting` (the summary table) loads this module
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(width, height), dpi=_DPI, layout="constrained")
    FigureCanvasAgg(fig)  # the Agg canvas, set here and only for this figure
    return fig, fig.add_subplot()


def _log_n_axis(ax: Any, levels: pd.DataFrame, unit: str = "images") -> None:
    from matplotlib.ticker import FixedLocator, NullLocator  # deferred: matplotlib (see _new_figure)

    known = levels[np.isfinite(levels["n"]) & (levels["n"] > 0)]
    ax.set_xscale("log")
    ax.xaxis.set_major_locator(FixedLocator(known["n"].to_list()))
    ax.xaxis.set_minor_locator(NullLocator())
    ax.set_xticklabels(known["tick"].to_list())
    lo, hi = float(known["n"].min()), float(known["n"].max())
    ax.set_xlim(lo / 1.35, hi * 1.35)
    ax.set_xlabel(f"training {unit} (N, log scale)")
    ax.grid(True, which="major", alpha=0.3)


def _unit(metric: str) -> str:
    """What N counts: images for a classification (AUC) study, cases (volumes) for a segmentation (Dice) one."""
    return kind_of_metric(metric_spec(metric).key).unit


# Line style and marker per transfer strategy; baselines are dashed squares.
_STRATEGY_LINES = (("-", "o"), (":", "^"), ("-.", "D"), ((0, (6, 2)), "v"), ((0, (1, 3)), "P"))


def arm_styles(arms: Sequence[str], baselines: Sequence[str] = ()) -> dict[str, dict[str, Any]]:
    """Colour per source, line style and marker per strategy, for both figures of a report.

    A study of 4 sources × 3 strategies + a baseline has 13 arms, more than matplotlib's 10-colour cycle: one
    colour per arm would repeat colours, so arms are told apart along the two axes of the grid instead.

    Example:
        >>> st = arm_styles(["scratch/finetune", "scratch/recipe", "cxr/finetune", "radiomics"], ["radiomics"])
        >>> st["scratch/recipe"]["color"], st["cxr/finetune"]["linestyle"], st["radiomics"]["marker"]
        ('C0', '-', 's')
    """
    nets = [a for a in arms if "/" in a and a not in baselines]
    sources = list(dict.fromkeys(a.split("/", 1)[0] for a in nets))
    strategies = list(dict.fromkeys(a.split("/", 1)[1] for a in nets))
    styles: dict[str, dict[str, Any]] = {}
    extra = len(sources)
    for arm in arms:
        if arm in nets:
            source, strategy = arm.split("/", 1)
            line, marker = _STRATEGY_LINES[strategies.index(strategy) % len(_STRATEGY_LINES)]
            styles[arm] = {"color": f"C{sources.index(source) % 10}", "linestyle": line, "marker": marker}
        else:
            styles[arm] = {"color": f"C{extra % 10}", "linestyle": "--", "marker": "s"}
            extra += 1
    return styles


def _style(arm: str, i: int, styles: Mapping[str, Mapping[str, Any]] | None, is_base: bool) -> dict[str, Any]:
    if styles and arm in styles:
        return dict(styles[arm])
    return {"color": f"C{i % 10}", "linestyle": "--" if is_base else "-", "marker": "s" if is_base else "o"}


def _legend(ax: Any) -> None:
    """Inside the axes for a few arms; beside them for many, where it would hide the curves."""
    if len(ax.get_legend_handles_labels()[1]) > 6:
        ax.figure.set_figwidth(ax.figure.get_figwidth() + 2.6)
        ax.legend(fontsize=8, loc="center left", bbox_to_anchor=(1.01, 0.5))
    else:
        ax.legend(fontsize=8, loc="best")


def _save(fig: Any, path: Path) -> Path:
    return atomic_write(path, lambda p: fig.savefig(p, format="png", dpi=_DPI))


def learning_curves(
    summary: pd.DataFrame,
    trials: pd.DataFrame,
    levels: pd.DataFrame,
    path: str | Path,
    *,
    baselines: Sequence[str] = (),
    styles: Mapping[str, Mapping[str, Any]] | None = None,
    title: str = "",
    metric: str = "auc",
    axis: str | None = None,
) -> Path | None:
    """Mean AUC (or Dice) vs N per arm with CI bands and per-seed points; baseline arms dashed. None if nothing to draw.
    ``axis`` names the metric on the y axis (default: the metric and its direction; a regression names its target).

    Bands are clipped to [0, 1]: with two or three seeds a t-interval easily leaves the range an AUC (or a Dice)
    can take.

    Example:
        >>> # learning_curves(summary, trials, n_levels(trials), out / "figures/learning_curves.png",
        >>> #                 baselines=["radiomics"])
    """
    m = metric_spec(metric)
    mean_col, lo_col, hi_col = f"{m.key}_mean", f"{m.key}_ci_lo", f"{m.key}_ci_hi"
    data = summary[np.isfinite(summary[mean_col]) & np.isfinite(summary["n"]) & (summary["n"] > 0)]
    if data.empty:
        return None
    fig, ax = _new_figure()
    done = trials[(trials["status"] == "done") & np.isfinite(trials[m.key])]
    n_of = levels.set_index("n_label")["n"]
    for i, arm in enumerate(dict.fromkeys(data["arm"])):
        d = data[data["arm"] == arm].sort_values("n")
        is_base = arm in baselines or (d["kind"] == "baseline").all()
        style = _style(arm, i, styles, is_base)
        color = style["color"]
        ax.plot(d["n"], d[mean_col], label=arm, linewidth=1.8, markersize=5, **style)
        band = d[np.isfinite(d[lo_col]) & np.isfinite(d[hi_col])]
        if len(band):
            lo, hi = band[lo_col], band[hi_col]
            if m.unit_interval:
                lo, hi = lo.clip(0, 1), hi.clip(0, 1)
            elif m.floor is not None:
                lo = lo.clip(lower=m.floor)
            ax.fill_between(band["n"], lo, hi, color=color, alpha=0.15, linewidth=0)
        seeds = done[done["arm"] == arm]
        x = seeds["n_label"].map(n_of).to_numpy(float)
        keep = np.isfinite(x) & (x > 0)
        ax.scatter(x[keep], seeds[m.key].to_numpy(float)[keep], color=color, s=10, alpha=0.45, linewidths=0)
    _log_n_axis(ax, levels, _unit(m.key))
    ax.set_ylabel(f"test {axis or m.axis}: mean over seeds, 95% CI")
    ax.set_title(title or "Learning curves")
    _legend(ax)
    return _save(fig, Path(path))


def paired_differences(
    diffs: pd.DataFrame,
    levels: pd.DataFrame,
    reference: str,
    path: str | Path,
    *,
    baselines: Sequence[str] = (),
    styles: Mapping[str, Mapping[str, Any]] | None = None,
    title: str = "",
    metric: str = "auc",
) -> Path | None:
    """Per-seed AUC (or Dice) differences (arm minus ``reference``) vs N, with the mean and its t-interval per N.

    Intervals are clipped to [-1, 1], the range of an AUC (or Dice) difference.

    ``diffs`` has columns arm, n_label, seed, diff (see :func:`~medtransfer.reporting.compare.seed_differences`).
    Arms are offset slightly along x so their points do not overlap. None if nothing to draw.
    """
    m = metric_spec(metric)
    name = m.name
    bound = 1.0 if m.unit_interval else np.inf  # a difference of AUCs or Dice lies in [-1, 1]
    n_of = levels.set_index("n_label")["n"]
    d = diffs.assign(x=diffs["n_label"].map(n_of)).astype({"x": float})
    d = d[np.isfinite(d["x"]) & (d["x"] > 0) & np.isfinite(d["diff"])]
    if d.empty:
        return None
    fig, ax = _new_figure()
    arms = list(dict.fromkeys(d["arm"]))
    for i, arm in enumerate(arms):
        style = _style(arm, i + 1, styles, arm in baselines)
        color = style["color"]
        shift = 1.06 ** (i - (len(arms) - 1) / 2)  # multiplicative: an even offset on a log axis
        a = d[d["arm"] == arm]
        ax.scatter(a["x"] * shift, a["diff"], color=color, s=12, alpha=0.5, linewidths=0)
        stats = [(x, *mean_ci(g["diff"].to_numpy())) for x, g in a.groupby("x")]
        xs = np.array([s[0] for s in stats]) * shift
        mean = np.array([s[1] for s in stats])
        lo = np.clip([s[3] for s in stats], -bound, bound)
        hi = np.clip([s[4] for s in stats], -bound, bound)
        err = np.where(np.isfinite(lo), np.vstack([mean - lo, hi - mean]), 0.0)
        ax.errorbar(xs, mean, yerr=err, capsize=3, linewidth=1.5, label=arm, **style)
    ax.axhline(0.0, color="black", linewidth=0.8)
    _log_n_axis(ax, levels, _unit(metric))
    ax.set_ylabel(f"Δ{name} vs {reference} (paired by seed)")
    ax.set_title(title or f"{name} difference from {reference}")
    _legend(ax)
    return _save(fig, Path(path))


def reliability_diagram(
    curves: Mapping[str, Sequence[Mapping[str, Any]]], path: str | Path, title: str | None = None
) -> Path:
    """Reliability diagram: observed frequency vs mean predicted probability per bin, one curve per key.

    ``curves`` maps a curve name (a label, or an arm) to its reliability rows, e.g. the lists in
    ``calibration_metrics(...)["reliability"]`` (see :mod:`medtransfer.evaluation.calibration`): dicts with
    ``mean_predicted``, ``observed`` and ``n``. Marker area grows with the number of predictions in the bin; the
    dashed diagonal is perfect calibration (points below it: over-confident in the positive class). Rows with no
    predictions or non-finite values are skipped; an empty ``curves`` gives the diagonal alone.

    Example:
        >>> # reliability_diagram(calibration_metrics(y, p, names, "multilabel")["reliability"],
        >>> #                     out / "figures/reliability.png")
    """
    fig, ax = _new_figure(5.8, 5.2)
    ax.plot([0, 1], [0, 1], color="black", linestyle="--", linewidth=0.9, label="perfect calibration")
    rows = {name: [r for r in rs if float(r["n"]) > 0] for name, rs in curves.items()}
    n_max = max((float(r["n"]) for rs in rows.values() for r in rs), default=1.0)
    for i, (name, rs) in enumerate(rows.items()):
        x = np.array([float(r["mean_predicted"]) for r in rs])
        y = np.array([float(r["observed"]) for r in rs])
        n = np.array([float(r["n"]) for r in rs])
        keep = np.isfinite(x) & np.isfinite(y)
        x, y, n = x[keep], y[keep], n[keep]
        order = np.argsort(x)
        color = f"C{i % 10}"
        ax.plot(x[order], y[order], color=color, linewidth=1.5, label=f"{name} (n={int(n.sum())})")
        ax.scatter(x, y, s=12 + 160 * n / n_max, color=color, alpha=0.6, linewidths=0)
    ax.set_xlim(0, 1)
    ax.set_ylim(0, 1)
    ax.set_aspect("equal")
    ax.set_xlabel("mean predicted probability")
    ax.set_ylabel("observed frequency")
    ax.grid(True, alpha=0.3)
    ax.set_title(title or "Reliability diagram (marker area ∝ predictions in bin)", fontsize=10)
    _legend(ax)
    return _save(fig, Path(path))


def curve_fits(
    curves: Mapping[str, Mapping[str, Any]],
    summary: pd.DataFrame,
    path: str | Path,
    *,
    styles: Mapping[str, Mapping[str, Any]] | None = None,
    metric: str = "auc",
    target: float | None = None,
    axis: str | None = None,
) -> Path | None:
    """Each arm's fitted power law (solid up to its largest N, dashed beyond) with its bootstrap band, its observed
    means as points, one panel per transfer strategy (baselines in every panel), and the target as a line."""
    if not curves:
        return None
    m = metric_spec(metric)
    info = summary.drop_duplicates("arm").set_index("arm")
    strategies = list(dict.fromkeys(str(info.at[a, "strategy"]) if info.at[a, "kind"] != "baseline" else "" for a in
                                    curves))  # fmt: skip
    panels = [s for s in strategies if s] or [""]
    fig, _ = _new_figure(width=4.2 * min(len(panels), 2) + 1.5, height=3.4 * math.ceil(len(panels) / 2) + 0.6)
    fig.clear()
    axes = fig.subplots(math.ceil(len(panels) / 2), min(len(panels), 2), squeeze=False, sharey=True).ravel()
    for ax, strategy in zip(axes, panels, strict=False):
        for i, (arm, c) in enumerate(curves.items()):
            is_base = info.at[arm, "kind"] == "baseline" if arm in info.index else False
            if not is_base and strategy and str(info.at[arm, "strategy"]) != strategy:
                continue
            style = _style(arm, i, styles, is_base)
            grid, fit = np.asarray(c["grid"], float), np.asarray(c["fit"], float)
            lo = np.asarray([np.nan if v is None else v for v in c["lo"]], float)
            hi = np.asarray([np.nan if v is None else v for v in c["hi"]], float)
            inside = grid <= float(c["n_max"]) * 1.0001
            ax.plot(grid[inside], fit[inside], color=style["color"], linestyle="-", linewidth=1.5, label=arm)
            ax.plot(grid[~inside], fit[~inside], color=style["color"], linestyle="--", linewidth=1.2)
            ax.fill_between(grid, lo, hi, color=style["color"], alpha=0.12, linewidth=0)
            obs = summary[(summary["arm"] == arm) & np.isfinite(summary[f"{m.key}_mean"])]
            ax.scatter(obs["n"], obs[f"{m.key}_mean"], color=style["color"], marker=style["marker"], s=16, zorder=3)
        if target is not None:
            ax.axhline(target, color="black", linewidth=0.8, linestyle=":", label=f"target {target:g}")
        ax.set_xscale("log")
        ax.grid(True, alpha=0.3)
        ax.set_title(strategy or "all arms", fontsize=9)
        ax.set_xlabel("training images N (log); dashed: extrapolation", fontsize=8)
        ax.legend(fontsize=6, loc="best")
    for ax in axes[len(panels) :]:
        ax.set_visible(False)
    # The y range follows the observed means (and the target), not a bootstrap band that a poorly pinned refit sends
    # far outside the metric's range; a metric in [0, 1] stays there.
    seen = summary[f"{m.key}_mean"].to_numpy(float)
    seen = np.concatenate([seen[np.isfinite(seen)], [target] if target is not None else []])
    if seen.size:
        pad = 0.1 * max(float(np.ptp(seen)), 0.02)
        lo, hi = float(seen.min()) - pad, float(seen.max()) + pad
        if m.unit_interval:
            lo, hi = max(lo, 0.0), min(hi, 1.0)
        elif m.floor is not None:
            lo = max(lo, m.floor)
        for ax in axes[: len(panels)]:
            ax.set_ylim(lo, hi)
    axes[0].set_ylabel(f"test {axis or m.axis}", fontsize=8)
    return _save(fig, Path(path))


def roc_grid(
    curves: Mapping[str, Sequence[Mapping[str, Any]]], n_labels: Sequence[str], path: str | Path
) -> Path | None:
    """Small multiples, one panel per arm: the test ROC of each seed at each N in ``n_labels`` (one colour per N),
    with the operating point that arm's validation threshold gives on the test images marked (a dot per seed)."""
    arms = [a for a in curves if curves[a]]
    if not arms:
        return None
    cols = min(4, len(arms))
    rows = math.ceil(len(arms) / cols)
    # deferred: matplotlib (see _new_figure)
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure
    from matplotlib.lines import Line2D

    fig = Figure(figsize=(2.9 * cols, 2.9 * rows + 0.5))
    FigureCanvasAgg(fig)
    axes = fig.subplots(rows, cols, squeeze=False, sharex=True, sharey=True)
    colours = {n: f"C{i}" for i, n in enumerate(n_labels)}
    for ax, arm in zip(axes.ravel(), arms, strict=False):
        ax.plot([0, 1], [0, 1], color="grey", linestyle=":", linewidth=0.8)
        for c in curves[arm]:
            colour = colours.get(c["n_label"], "black")
            ax.plot(c["fpr"], c["tpr"], color=colour, linewidth=0.9, alpha=0.75)
            sens, spec = c.get("sensitivity"), c.get("specificity")
            if sens is not None and spec is not None and math.isfinite(sens) and math.isfinite(spec):
                ax.plot(1 - spec, sens, "o", color=colour, markersize=4.5, markeredgecolor="black", markeredgewidth=0.5)
        ax.set_title(arm, fontsize=8)
        ax.set_xlim(0, 1)
        ax.set_ylim(0, 1)
        ax.set_aspect("equal")
        ax.grid(True, alpha=0.3)
    for ax in axes.ravel()[len(arms) :]:
        ax.axis("off")
    for ax in axes[-1]:
        ax.set_xlabel("1 − specificity", fontsize=8)
    for ax in axes[:, 0]:
        ax.set_ylabel("sensitivity", fontsize=8)
    handles = [Line2D([], [], color=colours[n], marker="o", markeredgecolor="black", label=f"N={n}") for n in n_labels]
    fig.legend(handles=handles, loc="lower center", ncol=len(handles), fontsize=8, frameon=False)
    fig.suptitle("Test ROC per arm and seed; dot: the operating point of the validation threshold", fontsize=9)
    fig.tight_layout(rect=(0, 0.1 / rows, 1, 1 - 0.05 / rows), h_pad=1.6)
    return _save(fig, Path(path))
