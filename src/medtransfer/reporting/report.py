"""The study report: CSV tables, figures, ``report.md`` and a self-contained ``report.html``.

Consumes plain data (a trials table and a function returning a trial's test predictions) so that the study
runner calls it, never the other way round. The report's sections are built once as document blocks
(:mod:`medtransfer.reporting.document`) and rendered to both Markdown and HTML. Classification studies are
scored by AUC, segmentation studies by Dice (``metric='dice'``); the report has the same sections either way.
"""

from __future__ import annotations

import datetime as dt
import logging
import math
import re
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from medtransfer.io import atomic_write
from medtransfer.reporting import figures, sections
from medtransfer.reporting.compare import (
    case_comparisons,
    choose_reference,
    delong_comparisons,
    paired_seed_tests,
    seed_differences,
)
from medtransfer.reporting.document import (
    Block,
    BulletList,
    CodeBlock,
    Heading,
    Image,
    Markdown,
    Paragraph,
    code,
    to_html,
    to_markdown,
)
from medtransfer.reporting.findings import (
    SEED_LEVEL,
    arm_intervals,
    curve_fits,
    degenerate_reasons,
    findings_table,
    noninferiority,
    summarize_findings,
    trial_replicates,
    usable,
)
from medtransfer.reporting.gallery import gallery_section
from medtransfer.reporting.tables import (
    CI_TWO_LEVEL,
    arm_order,
    calibration_table,
    format_summary_table,
    has_operating_points,
    label_names,
    metric_spec,
    n_levels,
    normalise_trials,
    operating_table,
    reliability_curves,
    results_table,
    roc_curves,
    summary_table,
    with_operating_means,
)
from medtransfer.tasks.base import kind_of_metric

__all__ = ["format_summary_table", "write_report"]  # format_summary_table re-exported for the CLI

log = logging.getLogger(__name__)


def _write_text(path: Path, text: str) -> Path:
    # Explicit UTF-8: the report has Δ, ρ, τ and dashes, and the locale of a batch job may be ASCII.
    return atomic_write(path, lambda p: p.write_text(text, encoding="utf-8"))


def _write_csv(df: pd.DataFrame, path: Path) -> Path:
    return _write_text(path, df.to_csv(index=False))


def with_two_level_ci(summary: pd.DataFrame, boot: pd.DataFrame, key: str) -> pd.DataFrame:
    """The summary with its CI columns replaced by the two-level bootstrap's where there is one (≥ 2 seeds; one seed
    keeps that trial's own bootstrap CI); the t-interval stays in ``<metric>_t_lo``/``_t_hi``."""
    if boot.empty:
        return summary
    out = summary.merge(boot, on=["arm", "n_label"], how="left")
    has = np.isfinite(out[f"{key}_boot_lo"]) & (out["n_seeds"] >= 2)
    out.loc[has, f"{key}_ci_lo"] = out.loc[has, f"{key}_boot_lo"]
    out.loc[has, f"{key}_ci_hi"] = out.loc[has, f"{key}_boot_hi"]
    out.loc[has, "ci_method"] = CI_TWO_LEVEL
    return out.drop(columns=[f"{key}_boot_lo", f"{key}_boot_hi"])


@dataclass
class KeptResults:
    """What an earlier render computed from per-image predictions that a committed results folder no longer has:
    ``summary.csv`` (its two-level bootstrap CIs), ``findings.csv`` (per-image Δ, CI, p), ``noninferiority.csv``
    and the per-seed tests (``delong.csv``, ``paired_images.csv``, ``paired_cases.csv``). :func:`write_report`
    reuses them when the trials are the same (every arm's mean matches), so re-rendering the folder does not replace
    them with seed-level numbers; otherwise it recomputes everything seed-level."""

    summary: pd.DataFrame
    findings: pd.DataFrame | None = None
    noninferiority: pd.DataFrame | None = None
    ranked_by: str = "validation"  # how the kept findings chose each N's best network (findings.txt says)
    per_seed: pd.DataFrame | None = None

    @classmethod
    def read(cls, folder: str | Path) -> KeptResults | None:
        """The folder's per-image results, or None where it has none (nothing to keep)."""
        out = Path(folder)
        if not (out / "summary.csv").is_file():
            return None
        summary = pd.read_csv(out / "summary.csv", dtype={"n_label": str})
        findings = ni = per_seed = None
        if (out / "findings.csv").is_file():
            findings = pd.read_csv(out / "findings.csv", dtype={"n_label": str})
            if findings.empty or (findings["method"] == SEED_LEVEL).any():
                findings = None
        if findings is not None and (out / "noninferiority.csv").is_file():
            ni = pd.read_csv(out / "noninferiority.csv", dtype={"n_label": str})
        for name in ("delong.csv", "paired_images.csv", "paired_cases.csv"):
            if (out / name).is_file():
                per_seed = pd.read_csv(out / name, dtype={"n_label": str, "label": str})
                break
        two_level = "ci_method" in summary.columns and (summary["ci_method"] == CI_TWO_LEVEL).any()
        if not two_level and findings is None and (per_seed is None or per_seed.empty):
            return None
        text = (out / "findings.txt").read_text(encoding="utf-8") if (out / "findings.txt").is_file() else ""
        by = re.search(r"the best network by mean (\w+) ", text)
        return cls(summary, findings, ni, by.group(1) if by else "validation", per_seed)

    def per_seed_against(self, reference: str) -> pd.DataFrame | None:
        """The kept per-seed tests against ``reference``, or None where there are none."""
        if self.per_seed is None or "reference" not in self.per_seed.columns:
            return None
        rows = self.per_seed[self.per_seed["reference"] == reference].reset_index(drop=True)
        return rows if len(rows) else None

    def note(self) -> str:
        """What the report says about the kept numbers."""
        what = []
        if "ci_method" in self.summary.columns and (self.summary["ci_method"] == CI_TWO_LEVEL).any():
            what.append("the two-level bootstrap CIs (summary.csv)")
        if self.findings is not None:
            what.append("the findings (findings.csv, noninferiority.csv)")
        if self.per_seed is not None:
            what.append("the per-seed tests")
        listed = " and ".join([", ".join(what[:-1]), what[-1]] if len(what) > 1 else what)
        return (
            f"This folder keeps no per-image predictions: {listed} are those of the render that had them, kept "
            "because the arm means in results.csv are unchanged; they are not recomputed."
        )

    def matches(self, summary: pd.DataFrame, key: str) -> bool:
        """Whether ``summary`` (recomputed from results.csv) has the same arms, N and means as the kept one."""
        cols = ["arm", "n_label", "n_seeds", f"{key}_mean"]
        if any(c not in self.summary.columns for c in cols):
            return False
        old = self.summary[cols].sort_values(["arm", "n_label"]).reset_index(drop=True)
        new = summary[cols].sort_values(["arm", "n_label"]).reset_index(drop=True)
        if len(old) != len(new) or not (old[["arm", "n_label"]] == new[["arm", "n_label"]]).all().all():
            return False
        a, b = old[cols[2:]].to_numpy(float), new[cols[2:]].to_numpy(float)
        return bool(np.allclose(a, b, rtol=1e-9, atol=1e-12, equal_nan=True))

    def apply_ci(self, summary: pd.DataFrame, key: str) -> pd.DataFrame:
        """``summary`` with the kept two-level CIs where the kept summary has one."""
        lo, hi = f"{key}_ci_lo", f"{key}_ci_hi"
        if any(c not in self.summary.columns for c in ("ci_method", lo, hi)):
            return summary
        kept = self.summary[self.summary["ci_method"] == CI_TWO_LEVEL][["arm", "n_label", lo, hi]]
        out = summary.merge(kept, on=["arm", "n_label"], how="left", suffixes=("", "_kept"))
        has = out[f"{lo}_kept"].notna()
        out.loc[has, lo], out.loc[has, hi] = out.loc[has, f"{lo}_kept"], out.loc[has, f"{hi}_kept"]
        out.loc[has, "ci_method"] = CI_TWO_LEVEL
        return out.drop(columns=[f"{lo}_kept", f"{hi}_kept"])

    def noninferiority_with(self, metric: str, margin: float | None) -> pd.DataFrame | None:
        """The kept non-inferiority table, its verdicts redone for ``margin`` (the study's config may have changed)."""
        if self.noninferiority is None:
            return None
        m = metric_spec(metric)
        kind = kind_of_metric(m.key)
        ni = self.noninferiority.copy()
        sign = 1.0 if m.higher_is_better else -1.0
        ni["margin"] = [margin if margin is not None else kind.default_margin(r) for r in ni["reference_mean"]]
        worse = ni["ci_lo"] if m.higher_is_better else ni["ci_hi"]
        ni["non_inferior"] = [
            bool(math.isfinite(w) and sign * w > -mg) for w, mg in zip(worse, ni["margin"], strict=True)
        ]
        return ni


def write_report(
    trials: pd.DataFrame,
    out_dir: str | Path,
    *,
    predictions: Callable[[str], pd.DataFrame | None] | None = None,
    ranking: dict | None = None,
    reference: str | None = None,
    baseline: str | None = "radiomics",
    title: str = "medtransfer study",
    command: str | None = None,
    notes_md: str | None = None,
    metric: str = "auc",
    target: float | None = None,
    margin: float | None = None,
    unit: str | None = None,
    keep_degenerate: bool = False,
    kept: KeptResults | None = None,
) -> dict[str, Path]:
    """Write the study's tables, figures and report into ``out_dir``; return the written paths by name.

    Args:
        trials: one row per trial (id, arm, kind, source, strategy, n, n_label, seed, status, seconds, auc,
            auc_ci_lo, auc_ci_hi, error, metrics). For Dice: ``dice``, ``dice_ci_lo``, ``dice_ci_hi`` instead of
            the ``auc`` columns, and ``metrics`` with ``per_label: {class: {"dice", "dice_ci", "n", "hd95"}}``
            and ``hd95`` (mm).
        out_dir: output folder (created).
        predictions: ``trial_id -> DataFrame`` with ``image_id``, ``label:<L>``, ``score:<L>`` (or None when
            missing); without it the DeLong tests are skipped with a note. For Dice: the trial's per-case table,
            ``case`` and ``dice:<class>`` (NaN: class in neither prediction nor ground truth), used for the
            per-seed Wilcoxon signed-rank tests instead of DeLong.
        ranking: ``{"method", "rows": [{"arm_source", "score", "seconds"}]}`` from a transferability ranking.
        reference: arm the others are compared with (default: first 'scratch' arm, else the first arm).
        baseline: arm the 'matches the baseline' section compares with (None: skip).
        title: report title.
        command: the command that ran the study, shown verbatim.
        notes_md: discussion written by the caller (Markdown), appended under 'Discussion'.
        metric: the study's metric, a task kind's primary one ('auc', 'mae', 'dice'); anything else raises ValueError.
        target: the metric to reach (``study.target``): the learning-curve section says at which N.
        margin: the non-inferiority margin against the baseline (None: the kind's default).
        unit: the regression target's unit, named in tables and findings.
        keep_degenerate: count trials whose model did not learn in means and tests (default: exclude them).
        kept: without ``predictions``, the per-image results of an earlier render of the same trials
            (:class:`KeptResults`, a committed results folder): its two-level CIs, findings and non-inferiority
            are reused instead of seed-level ones. Ignored with ``predictions`` or when the arms' means differ.

    Returns:
        Paths keyed ``results``, ``summary``, ``delong`` (for Dice ``paired_cases``: ``paired_cases.csv``),
        ``paired``, ``learning_curves`` and ``paired_differences`` (when there was something to plot),
        ``report_md``, ``report_html``.

    Example:
        >>> paths = write_report(trials, "runs/study/report", predictions=load_predictions,
        ...                      command="medtransfer study run study.yaml")  # doctest: +SKIP
        >>> paths["report_html"]  # doctest: +SKIP
        PosixPath('runs/study/report/report.html')
    """
    m = metric_spec(metric)
    kind = kind_of_metric(m.key)
    dice = kind.unit == "cases"  # per-case tests (segmentation: Dice per case) rather than per-image ones
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    t = normalise_trials(trials, m.key)
    t["degenerate"] = degenerate_reasons(t)
    levels = n_levels(t)
    tick = levels.set_index("n_label")["tick"]
    unit = unit or ""
    baselines = [baseline] if baseline else []
    baselines += [a for a in arm_order(t) if (t.loc[t["arm"] == a, "kind"] == "baseline").all() and a != baseline]
    rep = trial_replicates(usable(t, m.key, keep_degenerate), predictions, m.key)
    summary = with_two_level_ci(summary_table(t, m.key, keep_degenerate), arm_intervals(t, rep, m.key), m.key)
    if kept is not None and (predictions is not None or not kept.matches(summary, m.key)):
        if predictions is None:
            log.warning("%s: its trial means differ from the summary.csv there; the per-image results are dropped", out)
        kept = None
    if kept is not None:
        summary = kept.apply_ci(summary, m.key)
        rep.notes = [kept.note(), *(n for n in rep.notes if kept.findings is None)]
    if kept is not None and kept.findings is not None:
        found_table = kept.findings
    else:
        found_table = findings_table(t, rep, m.key, baselines, keep_degenerate=keep_degenerate)
    ranked_by = kept.ranked_by if kept is not None and kept.findings is not None else None
    found = summarize_findings(
        t, found_table, m.key, unit=unit, keep_degenerate=keep_degenerate, rep=rep, ranked_by=ranked_by
    )
    ops = operating_table(t, keep_degenerate) if has_operating_points(t) else None  # the table, the summary's means
    if ops is not None:
        summary = with_operating_means(summary, ops)
    fits, backtest, curves = curve_fits(t, m.key, target=target, keep_degenerate=keep_degenerate)
    results = results_table(t, m.key)
    paths: dict[str, Path] = {
        "results": _write_csv(results, out / "results.csv"),
        "summary": _write_csv(summary, out / "summary.csv"),
        "findings": _write_csv(found_table, out / "findings.csv"),
        "findings_txt": _write_text(out / "findings.txt", "\n".join(found.lines) + "\n"),
    }
    if not fits.empty:
        paths["curve_fits"] = _write_csv(fits, out / "curve_fits.csv")
    if not backtest.empty:
        paths["backtest"] = _write_csv(backtest, out / "backtest.csv")
    t_all = t
    if not keep_degenerate:  # the per-seed tests below compare learned models only, like the findings
        t = t[t["degenerate"].isna()].reset_index(drop=True)
    ref, ref_note = choose_reference(t, reference)
    per_seed, per_seed_notes, paired, diffs = pd.DataFrame(), [], pd.DataFrame(), pd.DataFrame()
    if ref is not None:
        kept_tests = kept.per_seed_against(ref) if kept is not None else None
        if kept_tests is not None:  # a results folder's per-seed tests, from predictions it no longer has
            per_seed, per_seed_notes = kept_tests, []
        elif dice:
            per_seed, per_seed_notes = case_comparisons(t, ref, predictions)
            if predictions is not None:  # without them an empty table would replace one an earlier report wrote
                paths["paired_cases"] = _write_csv(per_seed, out / "paired_cases.csv")
        else:
            per_seed, per_seed_notes = delong_comparisons(t, ref, predictions, m.key)
            name = "delong.csv" if kind.paired_test == "DeLong test" else "paired_images.csv"
            if predictions is not None:
                paths["delong"] = _write_csv(per_seed, out / name)
        paired = paired_seed_tests(t, ref, m.key)
        diffs = seed_differences(t, ref, m.key)
        paths["paired"] = _write_csv(paired, out / "paired_tests.csv")

    fig_dir = out / "figures"
    styles = figures.arm_styles(arm_order(t), baselines)  # the same look per arm in both figures
    targets = label_names(t) if not m.unit_interval else []  # a regression's target(s), named with their unit
    axis = f"{m.name} of {', '.join(targets)}" + (f" in {unit}" if unit else "") if targets else m.name
    axis += f" ({'higher' if m.higher_is_better else 'lower'} is better)"
    curve = figures.learning_curves(
        summary, t, levels, fig_dir / "learning_curves.png", baselines=baselines, styles=styles, metric=m.key, axis=axis
    )
    diff_fig = None
    if ref is not None and not diffs.empty:
        diff_fig = figures.paired_differences(
            diffs, levels, ref, fig_dir / "paired_differences.png", baselines=baselines, styles=styles, metric=m.key
        )
    fit_fig = figures.curve_fits(
        curves, summary, fig_dir / "curve_fits.png", styles=styles, metric=m.key, target=target, axis=axis
    )
    if fit_fig:
        paths["curve_fits_figure"] = fit_fig
    if curve:
        paths["learning_curves"] = curve
    if diff_fig:
        paths["paired_differences"] = diff_fig

    now = dt.datetime.now(dt.UTC).strftime("%Y-%m-%d %H:%M UTC")
    blocks: list[Block] = [Heading(1, title), Paragraph(f"Generated {now} by medtransfer.")]
    blocks += sections.findings_section(found, m.key, unit)
    if command:
        blocks += [Heading(2, "Command"), CodeBlock(command)]
    test_set = sections.test_set_paragraph(t, m.key, unit)
    blocks += sections.trials_section(t_all, levels) + sections.degenerate_section(t_all, keep_degenerate)
    if test_set is not None:
        blocks.append(test_set)
    what = (
        "Mean test Dice over seeds (a seed's Dice: the mean over classes of each class's mean over test cases) "
        "[95% CI of the mean: t-interval across seeds, clipped to [0, 1], as in summary.csv and the console; "
        "† one seed, so that trial's bootstrap CI over cases]. Best mean per N in bold."
        if dice
        else f"Mean test {m.axis}{f' in {unit}' if unit else ''} over seeds [95% CI of the mean: two-level bootstrap, "
        "resampling seeds and then test images, so it covers both; where no predictions exist, the t-interval across "
        "seeds"
        + (", clipped to [0, 1]" if m.unit_interval else f", clipped at {m.floor:g}" if m.floor is not None else "")
        + "; summary.csv keeps the t-interval as a column; † one seed, so that trial's bootstrap CI]. Degenerate "
        + ("trials included. " if keep_degenerate else "trials excluded. ")
        + "Best mean per N in bold."
    )
    blocks += [
        Heading(2, f"Mean test {m.name} by arm and N"),
        Paragraph(what),
        sections.auc_table(summary, levels, m.key),
    ]
    if curve:
        blocks.append(Image(f"Learning curves: mean {m.name} vs N", "figures/learning_curves.png", curve))
    else:
        blocks.append(Paragraph(f"No finished trial with {m.a_name} yet: no learning curves."))
    blocks.append(Heading(2, f"Paired comparisons against {ref}" if ref else "Paired comparisons"))
    if ref is not None:
        blocks.append(Paragraph(ref_note))
        if dice:
            blocks += sections.wilcoxon_section(per_seed, per_seed_notes, tick)
        else:
            multi = "label" in per_seed.columns and per_seed["label"].nunique() > 1
            blocks += sections.delong_section(per_seed, per_seed_notes, multi, tick, m.key, kind.paired_test)
        blocks += sections.paired_section(paired, tick, m.key)
        if diff_fig:
            alt = f"Per-seed {m.name} difference vs {ref}"
            blocks.append(Image(alt, "figures/paired_differences.png", diff_fig))
    else:
        blocks.append(Paragraph(ref_note))
    if kind.probabilities:
        calibration = calibration_table(t)
        if not calibration.empty:
            paths["calibration"] = _write_csv(calibration, out / "calibration.csv")
            curves = reliability_curves(t)
            figure = figures.reliability_diagram(curves, fig_dir / "reliability.png") if curves else None
            if figure is not None:
                paths["reliability"] = figure
            blocks += sections.calibration_section(calibration, tick, figure)
    if ops is not None:
        paths["operating_points"] = _write_csv(ops, out / "operating_points.csv")
        shown = [n for n in (levels["n_label"].iloc[0], levels["n_label"].iloc[-1]) if n in set(ops["n_label"])]
        shown = list(dict.fromkeys(shown))
        roc = figures.roc_grid(
            roc_curves(t_all, predictions, shown, keep_degenerate), shown, fig_dir / "roc_operating_points.png"
        )
        if roc is not None:
            paths["roc_operating_points"] = roc
        blocks += sections.operating_section(ops, tick, shown, roc)
    blocks += sections.curves_section(fits, backtest, fit_fig, m.key, target, unit)
    if baseline is not None and baseline in set(t["arm"]):
        ni = kept.noninferiority_with(m.key, margin) if kept is not None else None
        if ni is None:
            ni = noninferiority(t, rep, m.key, baseline, margin)
        paths["noninferiority"] = _write_csv(ni, out / "noninferiority.csv")
        blocks += sections.noninferiority_section(ni, baseline, tick, m.key)
    else:
        blocks += sections.baseline_section(summary, baseline, tick, m.key)
    blocks += sections.ranking_section(summary, ranking, m.key)
    gallery, gallery_files = gallery_section(out)  # the saliency gallery a study drew, if any
    blocks += gallery
    paths.update(gallery_files)
    if notes_md and notes_md.strip():
        blocks += [Heading(2, "Discussion"), Markdown(notes_md)]
    files = [[code(p.relative_to(out).as_posix())] for p in paths.values()]
    blocks += [Heading(2, "Files"), BulletList(files)]

    paths["report_md"] = _write_text(out / "report.md", to_markdown(blocks))
    paths["report_html"] = _write_text(out / "report.html", to_html(blocks, title))
    log.info("wrote the study report to %s", paths["report_html"])
    return paths
