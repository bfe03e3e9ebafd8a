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
from medtransfer.reporting.findings import FAMILIES
from medtransfer.reporting.tables import CI_BOOTSTRAP, OPERATING_METRICS, arm_order, cell_status, metric_spec

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
    blocks: list[Block] = [
        Heading(3, f"(a) {test} on the shared test set, per seed"),
        Paragraph(
            "Per seed, on the images both trials scored; where the predictions name patients with several images, "
            "the test treats a patient as one cluster ("
            + ("Obuchowski's 1997 clustered variance" if "DeLong" in test else "patients resampled")
            + "). These p-values are per seed and unadjusted: the Findings above are the tests to quote."
        ),
    ]
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
    # A two-sided Wilcoxon signed-rank p over k pairs cannot go below 2 / 2^k: with fewer than 6 seeds it can never
    # reach 0.05, so its column is left out rather than shown as a test that cannot find anything.
    wilcoxon = len(paired) > 0 and int(paired["n_pairs"].max()) >= WILCOXON_MIN_PAIRS
    most = int(paired["n_pairs"].max()) if len(paired) else 0
    why = (
        "Paired t-test and Wilcoxon signed-rank test"
        if wilcoxon
        else f"Paired t-test (no Wilcoxon column: with {most} seeds its smallest possible p is {2 / 2**most:.2f}"
        if most
        else "Paired t-test (no Wilcoxon column"
    )
    blocks: list[Block] = [
        Heading(3, f"(b) Paired test of per-seed {plural} across seeds"),
        Paragraph(
            f"Seeds pair up when both arms finished that (N, seed). {why}"
            + ("" if wilcoxon else "; use the per-image tests above or the Findings, which resample images too)")
            + f" on the per-seed test {plural} (Δ{name} = arm − reference), unadjusted for multiplicity; undefined "
            "(—) with fewer than two pairs."
        ),
    ]
    rows = []
    for r in paired.itertuples():
        row = [r.arm, tick.get(r.n_label, r.n_label), str(r.n_pairs)]
        row += [_signed(r.mean_diff) + (f" ± {r.sd_diff:.3f}" if math.isfinite(r.sd_diff) else ""), _p(r.p_value)]
        rows.append(row + ([_p(r.wilcoxon_p)] if wilcoxon else []))
    header = ["arm", "N", "pairs", f"mean Δ{name} ± sd", "paired t p"] + (["Wilcoxon p"] if wilcoxon else [])
    blocks.append(Table(header, rows, "lrrrr" + ("r" if wilcoxon else "")) if rows else Paragraph("No arm to compare."))
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
    """The transferability ranking next to the realised order per strategy, with rank correlations: per training-set
    size N where the ranking was computed at every N (``by_n`` in ``ranking.json``), else against the mean over N.

    The correlations carry exact permutation p-values and the smallest p the number of sources allows, in words.
    """
    m = metric_spec(metric)
    blocks: list[Block] = [Heading(2, "Transferability ranking vs realised order")]
    if ranking and ranking.get("error"):
        blocks.append(Paragraph(["The transferability ranking failed: ", code(_one_line(ranking["error"]))]))
    if not ranking or not ranking.get("rows"):
        return blocks + ([] if len(blocks) > 1 else [Paragraph("No transferability ranking was given.")])
    method = str(ranking.get("method", "ranking"))
    table, corr = ranking_vs_realised(summary, ranking, m.key)
    levels = [c.removeprefix("score@") for c in table.columns if c.startswith("score@")]
    strategies = [c.removeprefix("rank:") for c in table.columns if c.startswith("rank:")]
    if levels:
        pool = ranking.get("n_images")
        pool_text = f"the whole training pool ({pool} images)" if pool else "the whole training pool"
        blocks.append(
            Paragraph(
                f"Predicted: sources ordered by their {method} score on frozen features, computed before training "
                "(higher = predicted better), at each training-set size N on the N labelled images the arms of that "
                f"size train on (the first seed's subset), and on {pool_text}. Realised, per transfer strategy and N: "
                f"sources ordered by their arm's mean test {m.name} over seeds at that N. The first table orders the "
                f"sources by the pool's score next to the mean over N of their {m.name}, over the sizes at which "
                "every ranked source has a result for that strategy; the correlations compare the two orders at each "
                "N. Rank correlations (Spearman ρ, Kendall τ) need ≥ 3 sources."
            )
        )
    else:
        blocks.append(
            Paragraph(
                f"Predicted: sources ordered by their {method} score, computed before training (higher = predicted "
                "better). Realised, per transfer strategy: sources ordered by the mean over N of their arm's mean "
                f"test {m.name}, over the sizes at which every ranked source has a result for that strategy. Rank "
                "correlations (Spearman ρ, Kendall τ) need ≥ 3 sources."
            )
        )
    probe = table["probe_auc"].notna().any()  # shown when the ranker gave it
    score_head = f"{method} score, pool" if levels else f"{method} score"
    header = ["predicted rank", "source", score_head] + (["probe AUC"] if probe else []) + ["seconds"]
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
    if levels:
        blocks.append(Paragraph(f"The {method} score [predicted rank] at each N:"))
        rows = []
        for r in table.to_dict("records"):
            cells = [(r[f"score@{lab}"], r[f"predicted_rank@{lab}"]) for lab in levels]
            rows.append([str(r["arm_source"])] + [f"{_f3(v)} [{k}]" if math.isfinite(v) else "—" for v, k in cells])
        blocks.append(Table(["source"] + [f"N={lab}" for lab in levels], rows, "l" + "r" * len(levels)))
    if not strategies:
        return blocks + [Paragraph("None of the ranked sources has a network arm in this study.")]
    if corr.empty:
        return blocks + [Paragraph("No ranked source has a result at any N yet: there is nothing to correlate.")]

    def with_p(value: float, p: float, exact: bool) -> str:
        return f"{_f3(value)} ({_p_is(p)}{'' if exact else ', asymptotic'})" if math.isfinite(value) else "—"

    crow = [
        [
            r.strategy,
            str(r.n_label) if levels else f"mean over {r.n_labels or '—'}",
            str(r.n_sources),
            with_p(r.spearman, r.spearman_p, r.spearman_exact),
            with_p(r.kendall, r.kendall_p, r.kendall_exact),
            _p(r.min_p),
            "—" if r.best_predicted is None else ("yes" if r.best_predicted == r.best_realised else "no"),
        ]
        for r in corr.itertuples()
    ]
    header = ["strategy", "N", "sources", "Spearman ρ (exact p)", "Kendall τ (exact p)", "smallest possible p"]
    blocks.append(Table(header + ["predicted best = realised best"], crow, "llrrrrl"))
    small = corr.dropna(subset=["min_p"]).groupby("n_sources")["min_p"].first()
    if small.empty:
        return blocks
    notes = [
        "p is two-sided and exact: the share of all orderings of the sources whose correlation is at least as strong "
        "as the one seen, in either direction (beyond 8 sources Spearman's p, and Kendall's p with ties, are "
        "asymptotic and marked so)."
    ]
    for n, min_p in sorted(small.items()):
        if min_p >= 0.05:
            notes.append(
                f"With {n} sources the smallest possible two-sided p is {min_p:.3f}: no correlation here can be "
                "significant at 0.05."
            )
        else:
            notes.append(
                f"With {n} sources the smallest possible two-sided p is {_p(min_p)}: a perfect order arises by chance "
                f"in 1 of {math.factorial(int(n))} orderings."
            )
    return blocks + [Paragraph(" ".join(notes))]


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


# --------------------------------------------------------------------------- conclusions (issue [1/4])
def findings_section(findings: Any, metric: str = "auc", unit: str = "") -> list[Block]:
    """The report's opening: collapsed trials, the best network per N, and per comparison family its significant
    results (a sentence each) and how many showed no detectable difference; every number traces to findings.csv."""
    m = metric_spec(metric)
    blocks: list[Block] = [Heading(2, "Findings")]
    if findings is None or findings.table.empty:
        text = "No comparison could be tested (no per-image predictions, or fewer than two arms with results)."
        blocks.append(Paragraph(text))
        if findings is not None:
            blocks.append(Paragraph(findings.lines[0]))
            if findings.notes:
                blocks.append(BulletList([[n] for n in findings.notes[:_MAX_LISTED]]))
        return blocks
    method = str(findings.table["method"].iloc[0])
    by = "by patient" if "by patient" in method else "by image"
    how = (
        f", 95% CI and p from a two-level bootstrap (seeds, then test images {by}, shared across seeds); "
        if method.startswith("two-level")
        else ", 95% CI and p from a paired t-test across seeds: this study has no per-image predictions, so the "
        "test-set noise is not in the CI and the tests are weaker than a rerun's; "
    )
    blocks.append(
        Paragraph(
            f"Generated from findings.csv: Δ{m.name} = arm − reference"
            + (f" ({unit})" if unit else "")
            + how
            + "p-values are adjusted with Holm's method within each family of comparisons (Benjamini–Hochberg in the "
            "CSV). 'Better' or 'worse' means Holm's p < 0.05; anything else reads 'no detectable difference'. "
            "The CIs are not adjusted for multiplicity, so a CI that excludes 0 can still read 'no detectable "
            f"difference'. {'Higher' if m.higher_is_better else 'Lower'} {m.name} is better."
        )
    )
    blocks.append(Paragraph(findings.lines[0]))
    if findings.per_n:
        blocks += [Heading(3, "Best network per N"), BulletList([[s] for s in findings.per_n])]
    for family, lines in findings.by_family.items():
        blocks += [Heading(3, FAMILIES[family][0].upper() + FAMILIES[family][1:]), Paragraph(lines[0])]
        if len(lines) > 1:
            blocks.append(BulletList([[s] for s in lines[1:]]))
    if findings.notes:
        blocks += [Paragraph("Notes:"), BulletList([[n] for n in findings.notes[:_MAX_LISTED]])]
    return blocks


def degenerate_section(t: pd.DataFrame, keep: bool) -> list[Block]:
    """Every degenerate trial (its model did not learn) with its reason, and what the means did with it."""
    if "degenerate" not in t.columns:
        return []
    bad = t[t["degenerate"].notna()]
    blocks: list[Block] = [Heading(3, "Degenerate trials")]
    if bad.empty:
        return blocks + [Paragraph("None: every finished trial learned more than a constant predictor.")]
    blocks.append(
        Paragraph(
            f"{len(bad)} finished trial(s) did not learn; they are {'kept in' if keep else 'excluded from'} every "
            "mean, CI and test (study.keep_degenerate). Per arm:"
        )
    )
    rows = [[r.arm, str(r.n_label), str(r.seed), _one_line(str(r.degenerate), 200)] for r in bad.itertuples()]
    return blocks + [Table(["arm", "N", "seed", "reason"], rows, "lrrl")]


def test_set_paragraph(t: pd.DataFrame, metric: str = "auc", unit: str = "") -> Paragraph | None:
    """What the test set is: its size, and its prevalence (classification) or the target and unit (regression)."""
    done = t[t["status"] == "done"]
    ms = [m for m in done["metrics"] if isinstance(m, dict) and m.get("n")]
    if not ms:
        return None
    m0 = ms[0]
    split = {"external": "the study's external test set (study.test)", "test": "the test split", "val": "validation"}
    where = split.get(str(m0.get("split")), str(m0.get("split") or "the test split"))
    text = f"Test set: {where}, {int(m0['n'])} images"
    if m0.get("n_pos") is not None and m0.get("n_neg") is not None:
        pos, neg = int(m0["n_pos"]), int(m0["n_neg"])
        text += f", {pos} positive and {neg} negative (prevalence {pos / max(pos + neg, 1):.1%})"
    targets = list((m0.get("per_target") or {}).keys())
    if targets:
        text += f"; target {', '.join(targets)}" + (f" in {unit}" if unit else " (unit not given: set study.unit)")
    return Paragraph(text + ".")


def noninferiority_section(
    table: pd.DataFrame, baseline: str | None, tick: pd.Series, metric: str = "auc"
) -> list[Block]:
    """'Matches the baseline' as non-inferiority: the smallest N at which an arm's Δ CI stays within the margin."""
    m = metric_spec(metric)
    blocks: list[Block] = [Heading(2, "Smallest N that matches the baseline (non-inferiority)")]
    if baseline is None:
        return blocks + [Paragraph("No baseline arm was named.")]
    if table.empty:
        return blocks + [Paragraph(["No network arm could be compared with ", code(baseline), "."])]
    margin = table["margin"].iloc[0]
    blocks.append(
        Paragraph(
            [
                "An arm ",
                bold("matches"),
                " the baseline ",
                code(baseline),
                f" at N when the 95% CI of Δ{m.name} = arm − baseline (two-level bootstrap) excludes being worse by "
                f"the margin or more (non-inferiority, margin {margin:.3g}"
                + (" in the metric's unit; study.margin)." if table["margin"].nunique() == 1 else ", varies by N).")
                + " A CI that crosses the margin does not show a match, whatever the means.",
            ]
        )
    )
    rows = []
    for arm, g in table.groupby("arm", sort=False):
        hit = g[g["non_inferior"]]
        first = hit.iloc[0] if len(hit) else None
        where = "never" if first is None else str(tick.get(first["n_label"], first["n_label"]))
        ci = "—" if first is None else f"{first['delta']:+.3f} [{_f3(first['ci_lo'])}, {_f3(first['ci_hi'])}]"
        rows.append([arm, where, ci, str(len(g))])
    header = ["arm", "smallest non-inferior N", f"Δ{m.name} there [95% CI]", "sizes compared"]
    return blocks + [Table(header, rows, "lrrr")]


def curves_section(fits: pd.DataFrame, backtest: pd.DataFrame, figure: Path | None, metric: str = "auc",
                   target: float | None = None, unit: str = "") -> list[Block]:  # fmt: skip
    """How many labels: each arm's fitted learning curve, its extrapolation, the N to reach the target, back-test."""
    m = metric_spec(metric)
    u = f" {unit}" if unit else ""
    blocks: list[Block] = [Heading(2, "How many labelled images?")]
    if fits.empty:
        return blocks + [Paragraph("No arm has results at 3 or more sizes N: no learning curve was fitted.")]
    blocks.append(
        Paragraph(
            f"Per arm with ≥ 3 sizes: an inverse power law {m.name}(N) = a {'−' if m.higher_is_better else '+'} "
            "b·N^(−c) (Figueroa et al. 2012) fitted to every seed's test score with weights growing with N "
            "(σ ∝ 1/√N); bands and intervals from refitting on seeds resampled with replacement. Extrapolation "
            "beyond the largest N assumes the curve keeps its shape: read it as a forecast, and see the back-test."
            + (
                f" Target: {m.name} {'≥' if m.higher_is_better else '≤'} {target:g}{u} (study.target)."
                if target
                else " No target was set (study.target, e.g. {auc: 0.95})."
            )  # fmt: skip
        )
    )
    rows = []
    for r in fits.to_dict("records"):

        def cell(v: float, lo: float, hi: float) -> str:
            return f"{_f3(v)} [{_f3(lo)}, {_f3(hi)}]" if math.isfinite(v) else "—"

        if target is None:
            need = "—"
        elif r["reachable"] is False or r["reachable"] is None and not math.isfinite(r["n_needed"]):
            need = "not reachable within 10× the data"
        else:
            lo = "?" if not math.isfinite(r["n_needed_lo"]) else f"{r['n_needed_lo']:.0f}"
            hi = "> 10× the data" if not math.isfinite(r["n_needed_hi"]) else f"{r['n_needed_hi']:.0f}"
            need = f"{r['n_needed']:.0f} [{lo}, {hi}]"
        rows.append(
            [
                r["arm"],
                str(int(r["n_levels"])),
                _f3(r["a"]),
                f"{r['n_max']:.0f}",
                cell(r["pred_2x"], r["pred_2x_lo"], r["pred_2x_hi"]),
                cell(r["pred_4x"], r["pred_4x_lo"], r["pred_4x_hi"]),
                need,
            ]
        )
    header = ["arm", "sizes", f"plateau a ({m.name})", "largest N", f"{m.name} at 2×N [95%]", "at 4×N [95%]"]
    blocks.append(Table([*header, "N to reach the target [95%]"], rows, "lrrrrrr"))
    if figure is not None:
        blocks.append(Image("Learning curves with fitted power laws and extrapolation bands", "figures/curve_fits.png",
                            figure))  # fmt: skip
    blocks.append(Heading(3, "Back-test: predicting the largest N from the others"))
    if backtest.empty:
        return blocks + [Paragraph("Needs ≥ 4 sizes N per arm: no back-test.")]
    err = backtest["abs_error"].to_numpy(float)
    blocks.append(
        Paragraph(
            f"Each arm's curve refitted without its largest N, then asked for it: mean absolute error "
            f"{np.nanmean(err):.3f}{u} over {int(np.isfinite(err).sum())} arms (median {np.nanmedian(err):.3f}, "
            f"largest {np.nanmax(err):.3f}). This is how far to trust the extrapolations above."
        )
    )
    rows = [
        [r["arm"], f"{r['n_held_out']:.0f}", _f3(r["predicted"]), _f3(r["observed"]), _signed(r["error"])]
        for r in backtest.to_dict("records")
    ]
    return blocks + [Table(["arm", "held-out N", "predicted", "observed (mean)", "error"], rows, "lrrrr")]


# --------------------------------------------------------------------------- operating points (issue [3/4])
def operating_section(table: pd.DataFrame, tick: pd.Series, n_shown: list[str], figure: Path | None) -> list[Block]:
    """What each arm does at its operating point, at the smallest and the largest N: the clinical reader's table."""
    rules = sorted(set(table["rule"]))
    blocks: list[Block] = [
        Heading(2, "Operating points"),
        Paragraph(
            [
                "What a model would do in use: each trial's threshold is chosen on its validation split (",
                code("eval.threshold"),
                f": {', '.join(rules)}), then applied to the test images. Sensitivity, specificity, positive and "
                "negative predictive value (PPV, NPV: at the test set's prevalence, which may not be a clinic's) and "
                "F1 at that threshold, and the sensitivity at specificity 0.90 and 0.95 read off the test ROC (the "
                "best sensitivity of a threshold reaching that specificity on the test images, i.e. chosen with "
                "hindsight: an upper bound of what a validation threshold delivers). Mean over seeds [95% CI: "
                "t-interval across seeds, clipped to [0, 1]; with one seed, that trial's patient bootstrap]. "
                "Degenerate trials excluded. Every N is in ",
                code("operating_points.csv"),
                "; each trial's point in ",
                code("results.csv"),
                ", with its CIs in the trial's ",
                code("metrics.json"),
                ".",
            ]
        ),
    ]
    heads = ["sensitivity", "specificity", "PPV", "NPV", "F1", "sens @ spec 0.90", "sens @ spec 0.95"]
    for n_label in n_shown:
        rows = []
        part = table[table["n_label"] == n_label]
        order = {a: i for i, a in enumerate(arm_order(table))}
        for r in sorted(part.to_dict("records"), key=lambda r: order.get(r["arm"], 0)):
            cells = [
                f"{_f3(r[f'{k}_mean'])} [{_f3(r[f'{k}_ci_lo'])}, {_f3(r[f'{k}_ci_hi'])}]" for k in OPERATING_METRICS
            ]
            rows.append([r["arm"], str(r["n_seeds"]), _f3(r["threshold_mean"]), *cells])
        if rows:
            blocks.append(Paragraph([bold(f"N = {tick.get(n_label, n_label)}")]))
            blocks.append(Table(["arm", "seeds", "threshold", *heads], rows, "lrr" + "r" * len(heads)))
    if figure is not None:
        label = " and ".join(f"N = {tick.get(n, n)}" for n in n_shown)
        blocks.append(
            Image(
                f"Test ROC per arm at {label} (one line per seed; dot: the validation threshold's point)",
                "figures/roc_operating_points.png",
                figure,
            )
        )
    return blocks
