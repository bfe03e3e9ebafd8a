"""The report's sections as document blocks, one function per section; :func:`write_report` puts them in order.

Each function takes the tables computed in :mod:`~medtransfer.reporting.tables` and
:mod:`~medtransfer.reporting.compare` and returns blocks; numbers are formatted here and only here. Sections that
name the study's score take ``metric`` ('auc' or 'dice') and say 'AUC' or 'Dice' accordingly.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from medtransfer.reporting.compare import WILCOXON_MIN_PAIRS, matches_baseline, ranking_vs_realised
from medtransfer.reporting.document import Block, BulletList, Heading, Image, Paragraph, Span, Table, bold, code
from medtransfer.reporting.tables import CI_BOOTSTRAP, arm_order, cell_status, metric_spec

_MAX_LISTED = 50  # failures/pending trials listed one by one before the rest is counted


def _f3(x: float) -> str:
    return f"{x:.3f}" if math.isfinite(x) else "—"


def _signed(x: float) -> str:
    return f"{x:+.3f}" if math.isfinite(x) else "—"


def _p(p: float) -> str:
    if not math.isfinite(p):
        return "—"
    return "<0.001" if p < 0.001 else f"{p:.3f}"


def _p_is(p: float) -> str:
    """'p=0.012', or 'p<0.001' rather than 'p=<0.001'."""
    text = _p(p)
    return f"p{text}" if text.startswith("<") else f"p={text}"


def _one_line(text: str, limit: int = 400) -> str:
    flat = " ".join(str(text).split())
    return flat if len(flat) <= limit else flat[: limit - 1] + "…"


def trials_section(t: pd.DataFrame, levels: pd.DataFrame) -> list[Block]:
    """Trial counts, per-arm status table, failures with their error, unfinished trials."""
    counts = t["status"].value_counts()
    total = len(t)
    parts = [f"{int(counts.get(s, 0))} {s}" for s in ("done", "failed", "pending", "running")]
    other = total - sum(int(counts.get(s, 0)) for s in ("done", "failed", "pending", "running"))
    if other:
        parts.append(f"{other} with another status")
    blocks: list[Block] = [Heading(2, "Trials"), Paragraph(f"{total} trials: " + ", ".join(parts) + ".")]
    if not total:
        return blocks
    rows = []
    for arm in arm_order(t):
        a = t[t["arm"] == arm]
        secs = a.loc[a["status"] == "done", "seconds"].dropna()
        rows.append(
            [arm, a["kind"].iloc[0]]
            + [str(int((a["status"] == s).sum())) for s in ("done", "failed", "pending", "running")]
            + [f"{secs.mean():.1f}" if len(secs) else "—"]
        )
    header = ["arm", "kind", "done", "failed", "pending", "running", "mean seconds"]
    blocks.append(Table(header, rows, "llrrrrr"))
    tick = levels.set_index("n_label")["tick"]

    def where(r: Any) -> str:
        return f"{r['arm']}, N={tick.get(r['n_label'], r['n_label'])}, seed {r['seed']}"

    failed = t[t["status"] == "failed"]
    if len(failed):
        blocks.append(Heading(3, "Failures"))
        items = [
            [code(r["id"]), f" ({where(r)}): ", code(_one_line(r["error"] or "no error recorded"))]
            for _, r in failed.head(_MAX_LISTED).iterrows()
        ]
        if len(failed) > _MAX_LISTED:
            items.append(f"… and {len(failed) - _MAX_LISTED} more (see results.csv).")
        blocks.append(BulletList(items))
    waiting = t[t["status"].isin(["pending", "running"])]
    if len(waiting):
        blocks.append(Heading(3, "Not finished"))
        items = [[code(r["id"]), f" ({where(r)}): {r['status']}"] for _, r in waiting.head(_MAX_LISTED).iterrows()]
        if len(waiting) > _MAX_LISTED:
            items.append(f"… and {len(waiting) - _MAX_LISTED} more (see results.csv).")
        blocks.append(BulletList(items))
    return blocks


def auc_table(summary: pd.DataFrame, levels: pd.DataFrame, metric: str = "auc") -> Table | Paragraph:
    """Mean AUC (or Dice) [CI] per arm (rows) and N (columns), best mean per N in bold; status words where no mean."""
    if summary.empty:
        return Paragraph("No trials yet.")
    m = metric_spec(metric)
    key = m.key
    mean_col, lo_col, hi_col = f"{key}_mean", f"{key}_ci_lo", f"{key}_ci_hi"
    finite = summary[np.isfinite(summary[mean_col])].groupby("n_label")[mean_col]
    best = finite.max() if m.higher_is_better else finite.min()  # the best mean: highest AUC, lowest MAE
    rows = []
    for arm in dict.fromkeys(summary["arm"]):
        row: list[Any] = [arm]
        for level in levels.itertuples():
            hit = summary[(summary["arm"] == arm) & (summary["n_label"] == level.n_label)]
            if hit.empty:
                row.append("")
                continue
            r = hit.iloc[0]
            if not math.isfinite(r[mean_col]):
                row.append(cell_status(r, key))
                continue
            mean = _f3(r[mean_col])
            cell: list[str | Span] = [bold(mean) if r[mean_col] == best.get(level.n_label) else mean]
            if math.isfinite(r[lo_col]) and math.isfinite(r[hi_col]):
                lo, hi = m.clip(r[lo_col], r[hi_col])
                cell.append(f" [{_f3(lo)}, {_f3(hi)}]")
            if r["ci_method"] == CI_BOOTSTRAP:
                cell.append(" †")
            if r["n_pending"]:
                cell.append(f" ({r['n_pending']} pending)")
            row.append(cell)
        rows.append(row)
    return Table(["arm"] + [f"N={tick}" for tick in levels["tick"]], rows, "l" + "r" * len(levels))


def delong_section(
    delong: pd.DataFrame, notes: list[str], multi_label: bool, tick: pd.Series, metric: str = "auc", test: str = ""
) -> list[Block]:
    """Per (arm, N): the per-image paired test's Δ and p per seed (DeLong's ΔAUC; for a regression the Wilcoxon
    signed-rank test of absolute errors, ΔMAE), mean Δ, how many p<0.05, median p; then skip notes."""
    name = metric_spec(metric).name
    test = test or "DeLong test"
    blocks: list[Block] = [Heading(3, f"(a) {test} on the shared test set, per seed")]
    if multi_label:
        blocks.append(
            Paragraph(
                f"One {test} per label and seed; Δ{name} per seed is the mean over labels. "
                "'p<0.05' counts label × seed tests."
            )
        )
    table = _per_seed_table(delong, tick, name, multi_label)
    blocks.append(table if table is not None else Paragraph(f"No {test} could be run."))
    return blocks + _notes(notes)


def _per_seed_table(tests: pd.DataFrame, tick: pd.Series, name: str, multi_label: bool = False) -> Table | None:
    """Per (arm, N): Δ and p per seed, mean Δ over seeds, how many p<0.05, median p. None without rows."""
    rows = []
    for (arm, n_label), g in tests.groupby(["arm", "n_label"], sort=False):
        per_seed = []
        for seed, s in g.groupby("seed", sort=False):
            diff = s["diff"].mean() if s["diff"].notna().any() else math.nan
            if multi_label:
                sig = int((s["p_value"] < 0.05).sum())
                per_seed.append(f"s{seed}: {_signed(diff)} ({sig}/{len(s)} labels p<0.05)")
            else:
                per_seed.append(f"s{seed}: {_signed(diff)} ({_p_is(s['p_value'].iloc[0])})")
        seed_means = g.groupby("seed", sort=False)["diff"].mean().dropna()
        finite_p = g["p_value"].dropna()
        rows.append(
            [
                arm,
                tick.get(n_label, n_label),
                "; ".join(per_seed),
                _signed(seed_means.mean()) if len(seed_means) else "—",
                f"{int((finite_p < 0.05).sum())}/{len(g)}",
                _p(float(finite_p.median())) if len(finite_p) else "—",
            ]
        )
    if not rows:
        return None
    unit = "tests" if multi_label else "seeds"
    header = ["arm", "N", f"Δ{name} per seed (p)", f"mean Δ{name}", f"{unit} p<0.05", "median p"]
    return Table(header, rows, "lrlrrr")


def _notes(notes: list[str]) -> list[Block]:
    if not notes:
        return []
    shown = notes[:_MAX_LISTED]
    if len(notes) > _MAX_LISTED:
        shown.append(f"… and {len(notes) - _MAX_LISTED} more notes.")
    return [Paragraph("Notes:"), BulletList(shown)]


def wilcoxon_section(cases: pd.DataFrame, notes: list[str], tick: pd.Series) -> list[Block]:
    """Per (arm, N): Wilcoxon signed-rank test on per-case Dice per seed, mean ΔDice, how many p<0.05, median p."""
    blocks: list[Block] = [
        Heading(3, "(a) Wilcoxon signed-rank test on per-case Dice, per seed"),
        Paragraph(
            [
                "At each (N, seed) both arms are tested on the same cases. A case's Dice is the mean over its "
                "classes (classes in neither prediction nor ground truth left out); ΔDice per seed is the mean over "
                "shared cases of arm − reference, and p is the two-sided Wilcoxon signed-rank test on those per-case "
                f"differences (zero differences dropped). With fewer than {WILCOXON_MIN_PAIRS} non-zero differences "
                "p cannot be below 0.05. Case counts per test are in ",
                code("paired_cases.csv"),
                ".",
            ]
        ),
    ]
    table = _per_seed_table(cases, tick, "Dice")
    blocks.append(table if table is not None else Paragraph("No Wilcoxon test could be run."))
    return blocks + _notes(notes)


def paired_section(paired: pd.DataFrame, tick: pd.Series, metric: str = "auc") -> list[Block]:
    """Paired t / Wilcoxon tests of per-seed AUCs (or Dice) against the reference, per arm and N."""
    name = metric_spec(metric).name
    plural = name if name == "Dice" else f"{name}s"  # 'per-seed AUCs', 'per-seed MAEs', 'per-seed Dice'
    blocks: list[Block] = [
        Heading(3, f"(b) Paired test of per-seed {plural} across seeds"),
        Paragraph(
            "Seeds pair up when both arms finished that (N, seed). Paired t-test and Wilcoxon signed-rank test "
            f"on the per-seed test {plural} (Δ{name} = arm − reference); both are undefined (—) with fewer than "
            "two pairs."
        ),
    ]
    rows = [
        [
            r.arm,
            tick.get(r.n_label, r.n_label),
            str(r.n_pairs),
            _signed(r.mean_diff) + (f" ± {r.sd_diff:.3f}" if math.isfinite(r.sd_diff) else ""),
            _p(r.p_value),
            _p(r.wilcoxon_p),
        ]
        for r in paired.itertuples()
    ]
    header = ["arm", "N", "pairs", f"mean Δ{name} ± sd", "paired t p", "Wilcoxon p"]
    blocks.append(Table(header, rows, "lrrrrr") if rows else Paragraph("No arm to compare."))
    return blocks


def baseline_section(summary: pd.DataFrame, baseline: str | None, tick: pd.Series, metric: str = "auc") -> list[Block]:
    """The definition of matching the baseline and the smallest matching N per arm."""
    m = metric_spec(metric)
    blocks: list[Block] = [Heading(2, "Smallest N that matches the baseline")]
    if baseline is None:
        return blocks + [Paragraph("No baseline arm was named.")]
    base = summary[summary["arm"] == baseline]
    if base.empty:
        return blocks + [Paragraph(["The baseline arm ", code(baseline), " is not part of this study."])]
    if not np.isfinite(base[f"{m.key}_mean"]).any():
        return blocks + [
            Paragraph(["The baseline arm ", code(baseline), f" has no finished trial with {m.a_name} yet."])
        ]
    blocks.append(
        Paragraph(
            [
                "An arm ",
                bold("matches"),
                " the baseline ",
                code(baseline),
                f" at N when its mean test {m.name} over seeds at N is {'≥' if m.higher_is_better else '≤'} the "
                f"baseline's mean {m.name} at the same N. "
                "Only sizes where both have a mean count; 'never' means no such size among those compared.",
            ]
        )
    )
    rows = []
    for r in matches_baseline(summary, baseline, m.key).to_dict("records"):
        # with numeric size labels pandas stores 'no match' (None) as NaN
        where = "never" if pd.isna(r["n_label"]) else str(tick.get(r["n_label"], r["n_label"]))
        rows.append([r["arm"], where, _f3(r[f"{m.key}_arm"]), _f3(r[f"{m.key}_baseline"]), str(r["n_compared"])])
    header = ["arm", "smallest N matching", f"arm mean {m.name}", f"baseline mean {m.name}", "sizes compared"]
    return blocks + [Table(header, rows, "lrrrr")]


def ranking_section(summary: pd.DataFrame, ranking: dict | None, metric: str = "auc") -> list[Block]:
    """The transferability ranking next to the realised order per strategy, with rank correlations."""
    m = metric_spec(metric)
    blocks: list[Block] = [Heading(2, "Transferability ranking vs realised order")]
    if ranking and ranking.get("error"):
        blocks.append(Paragraph(["The transferability ranking failed: ", code(_one_line(ranking["error"]))]))
    if not ranking or not ranking.get("rows"):
        return blocks + ([] if len(blocks) > 1 else [Paragraph("No transferability ranking was given.")])
    method = str(ranking.get("method", "ranking"))
    table, corr = ranking_vs_realised(summary, ranking, m.key)
    blocks.append(
        Paragraph(
            f"Predicted: sources ordered by their {method} score, computed before training (higher = predicted "
            "better). Realised, per transfer strategy: sources ordered by the mean over N of their arm's mean "
            f"test {m.name}, over the sizes at which every ranked source has a result for that strategy. Rank "
            "correlations (Spearman ρ, Kendall τ) need ≥ 3 sources."
        )
    )
    strategies = list(corr["strategy"])
    probe = "probe_auc" in table.columns and table["probe_auc"].notna().any()  # shown when the ranker gave it
    header = ["predicted rank", "source", f"{method} score"] + (["probe AUC"] if probe else []) + ["seconds"]
    header += [f"{m.name} ({s}) [rank]" for s in strategies]
    rows = []
    for r in table.to_dict("records"):
        secs = f"{r['seconds']:.1f}" if math.isfinite(r["seconds"]) else "—"
        row = [str(r["predicted_rank"]), str(r["arm_source"]), _f3(r["score"])]
        row += [_f3(float(r["probe_auc"]))] if probe else []
        row.append(secs)
        for s in strategies:
            score, rank = r[f"{m.key}:{s}"], r[f"rank:{s}"]
            row.append(f"{_f3(score)} [{rank}]" if math.isfinite(score) else "no result")
        rows.append(row)
    blocks.append(Table(header, rows, "rl" + "r" * (len(header) - 2)))
    if len(corr):
        crow = [
            [
                r.strategy,
                str(r.n_sources),
                r.n_labels or "—",
                f"{_f3(r.spearman)} ({_p_is(r.spearman_p)})" if math.isfinite(r.spearman) else "—",
                f"{_f3(r.kendall)} ({_p_is(r.kendall_p)})" if math.isfinite(r.kendall) else "—",
                "—" if r.best_predicted is None else ("yes" if r.best_predicted == r.best_realised else "no"),
            ]
            for r in corr.itertuples()
        ]
        header = ["strategy", "sources", "N averaged", "Spearman ρ", "Kendall τ", "predicted best = realised best"]
        blocks.append(Table(header, crow, "lrlrrl"))
    else:
        blocks.append(Paragraph("None of the ranked sources has a network arm in this study."))
    return blocks


def calibration_section(table: pd.DataFrame, tick: pd.Series, figure: Path | None) -> list[Block]:
    """Mean Brier score and ECE per arm and N, and the reliability diagram, for a classification study."""
    blocks: list[Block] = [
        Heading(2, "Calibration"),
        Paragraph(
            "Are the probabilities right as probabilities? Brier score (mean squared error of the probability, lower "
            "is better) and expected calibration error (ECE: 10 equal-width bins of the predicted probability, the "
            "mean |observed rate − mean prediction| weighted by the bin's share; lower is better), on the test "
            "images, mean over seeds. With several labels, the mean over labels. `eval.calibrate: temperature` fits "
            "temperature scaling on validation."
        ),
    ]
    rows = [
        [r.arm, tick.get(r.n_label, r.n_label), str(r.n_seeds), _f3(r.brier_mean), _f3(r.ece_mean)]
        for r in table.itertuples()
    ]
    blocks.append(Table(["arm", "N", "seeds", "Brier", "ECE"], rows, "lrrrr"))
    if figure is not None:
        blocks.append(
            Image("Reliability diagram at the largest N (first seed, first label)", "figures/reliability.png", figure)
        )
    return blocks
