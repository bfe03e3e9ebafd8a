"""write_report for a 3-D segmentation study scored by Dice: results/summary columns, per-case Wilcoxon, wording.

The fixture: 3 arms (``scratch/finetune``, ``src/finetune``, ``src/decoder_finetune``) × N {2, 5, all=10} × 2 seeds,
every trial tested on the same 8 cases with 2 foreground classes. ``src/finetune`` is built to be better. One
class is absent from one case in every trial (NaN Dice), one trial failed, and the scratch trials at N=2 have no
HD95. Per-case tables are shuffled per trial, so a comparison that pairs cases by row position gets wrong answers.
"""

from __future__ import annotations

import math
import re
import warnings
import zlib
from dataclasses import dataclass

import numpy as np
import pandas as pd
import pytest
from scipy import stats as sps

from medtransfer.evaluation.stats import paired_test
from medtransfer.reporting import format_summary_table, write_report
from medtransfer.reporting.compare import case_comparisons
from medtransfer.reporting.tables import CI_BOOTSTRAP, CI_TWO_LEVEL, normalise_trials, result_columns, results_table
from medtransfer.segmentation.metrics import summarize_segmentation

CLASSES = ("Anterior", "Posterior")
CASES = [f"hippo_{i:03d}" for i in range(8)]
SIZES = (("2", 2), ("5", 5), ("all", 10))
SEEDS = (0, 1)
ARMS = {
    "scratch/finetune": ("scratch", "finetune"),
    "src/finetune": ("src", "finetune"),
    "src/decoder_finetune": ("src", "decoder_finetune"),
}
# Mean per-case Dice per arm and N: src/finetune is better than scratch at every N.
QUALITY = {
    ("scratch/finetune", "2"): 0.40,
    ("scratch/finetune", "5"): 0.55,
    ("scratch/finetune", "all"): 0.70,
    ("src/finetune", "2"): 0.65,
    ("src/finetune", "5"): 0.75,
    ("src/finetune", "all"): 0.82,
    ("src/decoder_finetune", "2"): 0.55,
    ("src/decoder_finetune", "5"): 0.62,
    ("src/decoder_finetune", "all"): 0.72,
}
FAILED_ID = "src-decoder_finetune-n5-s1"
REF = "scratch/finetune"
RANKING = {"method": "logme", "rows": [{"arm_source": "src", "score": 1.2}, {"arm_source": "scratch", "score": 0.1}]}


@dataclass
class SegStudy:
    trials: pd.DataFrame
    cases: dict[str, pd.DataFrame]

    def predictions(self, trial_id: str) -> pd.DataFrame | None:
        return self.cases.get(trial_id)


def make_seg_study(classes: tuple[str, ...] = CLASSES) -> SegStudy:
    rows, cases = [], {}
    for arm, (source, strategy) in ARMS.items():
        for n_label, n in SIZES:
            for seed in SEEDS:
                tid = f"{arm.replace('/', '-')}-n{n_label}-s{seed}"
                status = "failed" if tid == FAILED_ID else "done"
                row = {
                    "id": tid,
                    "arm": arm,
                    "kind": "net",
                    "source": source,
                    "strategy": strategy,
                    "n": n,
                    "n_label": n_label,
                    "seed": seed,
                    "status": status,
                    "seconds": np.nan,
                    "dice": np.nan,
                    "dice_ci_lo": np.nan,
                    "dice_ci_hi": np.nan,
                    "error": "RuntimeError: CUDA out of memory" if status == "failed" else None,
                    "metrics": {},
                }
                if status == "done":
                    rng = np.random.default_rng(zlib.crc32(tid.encode()))
                    dice = np.clip(QUALITY[arm, n_label] + rng.normal(0, 0.08, (len(CASES), len(classes))), 0, 1)
                    dice[3, -1] = np.nan  # the last class is absent from case 3 (ground truth and prediction)
                    hd95 = rng.uniform(1.0, 8.0, dice.shape) * (1.5 - QUALITY[arm, n_label])
                    hd95[np.isnan(dice)] = np.nan
                    metrics = summarize_segmentation(dice, list(classes), seed=seed, n_boot=200)
                    if not (arm == REF and n_label == "2"):  # these trials ran without HD95
                        for j, name in enumerate(classes):
                            metrics["per_label"][name]["hd95"] = float(np.nanmedian(hd95[:, j]))
                        metrics["hd95"] = float(np.mean([v["hd95"] for v in metrics["per_label"].values()]))
                    lo, hi = metrics["dice_ci"]
                    row.update(seconds=float(rng.uniform(5, 50)), dice=metrics["dice"], dice_ci_lo=lo, dice_ci_hi=hi)
                    row["metrics"] = metrics
                    table = pd.DataFrame({"case": CASES})
                    for j, name in enumerate(classes):
                        table[f"dice:{name}"] = dice[:, j]
                    for j, name in enumerate(classes):
                        table[f"hd95:{name}"] = hd95[:, j]
                    cases[tid] = table.sample(frac=1.0, random_state=seed + 3 * n).reset_index(drop=True)
                rows.append(row)
    return SegStudy(pd.DataFrame(rows), cases)


@pytest.fixture(scope="module")
def seg() -> SegStudy:
    return make_seg_study()


@pytest.fixture(scope="module")
def seg_report(seg, tmp_path_factory) -> dict:
    out = tmp_path_factory.mktemp("seg_report")
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no numpy, scipy or matplotlib warnings leak
        return write_report(
            seg.trials,
            out,
            predictions=seg.predictions,
            ranking=RANKING,
            baseline=None,
            title="Hippocampus study",
            metric="dice",
        )


@pytest.fixture(scope="module")
def seg_md(seg_report) -> str:
    return seg_report["report_md"].read_text(encoding="utf-8")


def _read(path) -> pd.DataFrame:
    return pd.read_csv(path, dtype={"n_label": str, "trial_arm": str, "trial_ref": str})


def _per_case_diffs(seg: SegStudy, arm: str, n_label: str, seed: int) -> np.ndarray:
    """arm − reference per shared case, each side the NaN-mean of its per-class Dice, joined on ``case``."""
    t = seg.trials

    def table(a: str) -> pd.DataFrame:
        tid = t[(t["arm"] == a) & (t["n_label"] == n_label) & (t["seed"] == seed)]["id"].iloc[0]
        df = seg.cases[tid]
        return pd.DataFrame({"case": df["case"], "d": df[[f"dice:{c}" for c in CLASSES]].mean(axis=1)})

    joined = table(arm).merge(table(REF), on="case", suffixes=("", "_ref"))
    return (joined["d"] - joined["d_ref"]).to_numpy()


def test_writes_dice_outputs(seg_report):
    assert set(seg_report) == {
        "results",
        "summary",
        "paired_cases",
        "paired",
        "learning_curves",
        "paired_differences",
        "report_md",
        "report_html",
        "findings",
        "findings_txt",
        "curve_fits",
        "curve_fits_figure",
    }
    assert seg_report["paired_cases"].name == "paired_cases.csv"
    assert not (seg_report["report_md"].parent / "delong.csv").exists()
    for key in ("learning_curves", "paired_differences"):
        assert seg_report[key].read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_results_csv_has_dice_per_class_and_hd95(seg, seg_report):
    res = _read(seg_report["results"]).set_index("id")
    classes = [f"dice:{c}" for c in CLASSES]
    hd = ["hd95"] + [f"hd95:{c}" for c in CLASSES]
    assert list(res.reset_index().columns) == result_columns("dice") + classes + hd
    assert "dice" in res.columns and not any(c.startswith("auc") for c in res.columns)
    assert len(res) == 18
    for r in seg.trials.itertuples():
        got = res.loc[r.id]
        if r.status == "failed":
            assert got["status"] == "failed" and math.isnan(got["dice"]) and "out of memory" in got["error"]
            assert got[classes + hd].isna().all()
            continue
        m = r.metrics
        assert got["dice"] == pytest.approx(m["dice"])
        assert (got["dice_ci_lo"], got["dice_ci_hi"]) == pytest.approx(tuple(m["dice_ci"]))
        for c in CLASSES:
            assert got[f"dice:{c}"] == pytest.approx(m["per_label"][c]["dice"])
            assert got[f"hd95:{c}"] == pytest.approx(m["per_label"][c].get("hd95", math.nan), nan_ok=True)
        assert got["hd95"] == pytest.approx(m.get("hd95", math.nan), nan_ok=True)
    assert res.loc["scratch-finetune-n2-s0", hd].isna().all()  # ran without HD95: NaN, not an error
    assert res.loc["src-finetune-n2-s0", "hd95"] > 0


def test_one_class_still_gets_its_dice_column():
    one = make_seg_study(classes=("Hippocampus",))
    res = results_table(normalise_trials(one.trials, "dice"), "dice")
    assert list(res.columns[-3:]) == ["dice:Hippocampus", "hd95", "hd95:Hippocampus"]
    np.testing.assert_allclose(res["dice:Hippocampus"], res["dice"])  # one class: its Dice is the trial's


def test_summary_matches_pandas(seg, seg_report):
    summary = _read(seg_report["summary"])
    assert {"dice_mean", "dice_sd", "dice_ci_lo", "dice_ci_hi"} <= set(summary.columns)
    assert not any(c.startswith("auc") for c in summary.columns)
    ok = seg.trials[(seg.trials["status"] == "done") & seg.trials["dice"].notna()]
    for (arm, n_label), g in ok.groupby(["arm", "n_label"]):
        row = summary[(summary["arm"] == arm) & (summary["n_label"] == n_label)].iloc[0]
        assert row["n_seeds"] == len(g)
        assert row["dice_mean"] == pytest.approx(g["dice"].mean())
        assert row["seconds_mean"] == pytest.approx(g["seconds"].mean())
        if len(g) >= 2:
            lo, hi = sps.t.interval(0.95, len(g) - 1, loc=g["dice"].mean(), scale=sps.sem(g["dice"]))
            assert row["dice_sd"] == pytest.approx(g["dice"].std(ddof=1))
            assert (row["dice_t_lo"], row["dice_t_hi"]) == pytest.approx(
                (max(lo, 0.0), min(hi, 1.0))
            )  # clipped to [0, 1]
            assert row["ci_method"] == CI_TWO_LEVEL
        else:
            assert (row["dice_ci_lo"], row["dice_ci_hi"]) == pytest.approx(
                (g["dice_ci_lo"].iloc[0], g["dice_ci_hi"].iloc[0])
            )
            assert row["ci_method"] == CI_BOOTSTRAP
    failed = summary.set_index(["arm", "n_label"]).loc[("src/decoder_finetune", "5")]
    assert (failed["n_failed"], failed["n_seeds"]) == (1, 1)
    means = summary.pivot(index="arm", columns="n_label", values="dice_mean")
    assert (means.loc["src/finetune"] > means.loc[REF]).all()  # the fixture's better arm


def test_wilcoxon_per_case_matches_scipy(seg, seg_report):
    rows = _read(seg_report["paired_cases"])
    assert len(rows) == 11  # 2 arms × 3 N × 2 seeds, less the failed trial
    assert set(rows["reference"]) == {REF}
    for r in rows.itertuples():
        d = _per_case_diffs(seg, r.arm, r.n_label, r.seed)
        want = sps.wilcoxon(d)
        assert r.n_cases == len(CASES) and r.n_zero == 0
        assert r.diff == pytest.approx(d.mean())
        assert (r.statistic, r.p_value) == pytest.approx((want.statistic, want.pvalue))
    better = rows[rows["arm"] == "src/finetune"]
    assert (better["diff"] > 0).all()


def test_wilcoxon_section_in_report(seg, seg_md):
    section = seg_md.split("### (a) Wilcoxon signed-rank test on per-case Dice, per seed")[1].split("### (b)")[0]
    assert "| arm | N | ΔDice per seed (p) | mean ΔDice | seeds p<0.05 | median p |" in section
    for arm in ("src/finetune", "src/decoder_finetune"):
        for n_label, tick in (("2", "2"), ("all", "all (10)")):
            cells, diffs, ps = [], [], []
            for seed in SEEDS:
                d = _per_case_diffs(seg, arm, n_label, seed)
                p = sps.wilcoxon(d).pvalue
                cells.append(f"s{seed}: {d.mean():+.3f} (" + ("p<0.001" if p < 0.001 else f"p={p:.3f}") + ")")
                diffs.append(d.mean())
                ps.append(p)
            med = np.median(ps)
            summary = f"{np.mean(diffs):+.3f} | {sum(p < 0.05 for p in ps)}/2 | " + (
                "<0.001" if med < 0.001 else f"{med:.3f}"
            )
            name = arm.replace("_", r"\_")  # Markdown-escaped
            assert f"| {name} | {tick} | {'; '.join(cells)} | {summary} |" in section
    failed_seed = [line for line in section.splitlines() if line.startswith(r"| src/decoder\_finetune | 5 |")]
    assert len(failed_seed) == 1 and "s0: " in failed_seed[0] and "s1:" not in failed_seed[0]  # s1 failed


def test_paired_across_seeds_uses_per_seed_dice(seg, seg_report, seg_md):
    paired = _read(seg_report["paired"]).set_index(["arm", "n_label"])
    t = seg.trials
    for arm in ("src/finetune", "src/decoder_finetune"):
        for n_label in ("2", "5", "all"):
            a = t[(t["arm"] == arm) & (t["n_label"] == n_label)].set_index("seed")["dice"]
            b = t[(t["arm"] == REF) & (t["n_label"] == n_label)].set_index("seed")["dice"]
            want = paired_test(a.to_numpy(), b.loc[a.index].to_numpy())
            got = paired.loc[(arm, n_label)]
            assert got["n_pairs"] == want["n"] and got["mean_diff"] == pytest.approx(want["mean_diff"])
            assert got["p_value"] == pytest.approx(want["p_value"], nan_ok=True)
    assert "### (b) Paired test of per-seed Dice across seeds" in seg_md
    assert "| arm | N | pairs | mean ΔDice ± sd | paired t p |" in seg_md  # 2 seeds: no Wilcoxon column
    assert "no Wilcoxon column: with 2 seeds its smallest possible p is 0.50" in seg_md


def test_report_says_dice_never_auc(seg_report, seg_md, seg):
    page = seg_report["report_html"].read_text(encoding="utf-8")
    text = re.sub(r'src="data:image/png;base64,[^"]*"', "", page)  # base64 may spell anything
    assert "AUC" not in seg_md and "AUC" not in text
    assert "## Mean test Dice by arm and N" in seg_md
    assert "| arm | N=2 | N=5 | N=all (10) |" in seg_md
    assert "![Learning curves: mean Dice vs N](figures/learning_curves.png)" in seg_md
    assert f"![Per-seed Dice difference vs {REF}](figures/paired_differences.png)" in seg_md
    assert f"Reference arm '{REF}': the first arm trained from scratch." in seg_md
    # Best mean per N in bold, as for AUC.
    table = seg_md.split("## Mean test Dice by arm and N")[1].split("![")[0]
    summary = _read(seg_report["summary"])
    for _, g in summary.groupby("n_label"):
        assert f"**{g['dice_mean'].max():.3f}**" in table
    baseline = seg_md.split("## Smallest N that matches the baseline")[1].split("## ")[0]
    assert "No baseline arm was named." in baseline
    ranking = seg_md.split("## Transferability ranking vs realised order")[1].split("## ")[0]
    assert "| predicted rank | source | logme score | seconds | Dice (finetune) [rank] |" in ranking
    assert "mean over N of their arm's mean test Dice" in ranking
    assert FAILED_ID in seg_md.split("### Failures")[1]


def test_format_summary_table_reads_a_dice_summary(seg_report):
    text = format_summary_table(pd.read_csv(seg_report["summary"]))
    summary = _read(seg_report["summary"]).set_index(["arm", "n_label"])
    r = summary.loc[("src/finetune", "2")]
    assert f"{r['dice_mean']:.3f} [{r['dice_ci_lo']:.3f}, {r['dice_ci_hi']:.3f}]" in text
    only_failed = pd.DataFrame({"id": ["a"], "arm": ["x"], "n_label": ["2"], "seed": [0], "status": ["done"]})
    from medtransfer.reporting.tables import summary_table

    assert "no Dice" in format_summary_table(summary_table(normalise_trials(only_failed, "dice"), "dice"))


def test_unknown_metric_is_rejected(seg, tmp_path):
    with pytest.raises(ValueError, match="metric must be one of"):
        write_report(seg.trials, tmp_path / "x", metric="f1")
    assert not (tmp_path / "x").exists()


def _pair(a: list[float], b: list[float]) -> tuple[pd.DataFrame, dict[str, pd.DataFrame]]:
    trials = pd.DataFrame(
        {"id": ["r", "a"], "arm": ["ref", "arm"], "n_label": "5", "n": 5.0, "seed": 0, "status": "done"}
    )
    cases = [f"c{i}" for i in range(len(a))]
    tables = {
        "a": pd.DataFrame({"case": cases, "dice:x": a}),
        "r": pd.DataFrame({"case": cases[::-1], "dice:x": b[::-1]}),
    }
    return normalise_trials(trials, "dice"), tables


def test_wilcoxon_zero_differences_and_few_pairs():
    # Two of eight cases tie: scipy's default drops the zero differences.
    a = [0.8, 0.7, 0.9, 0.6, 0.75, 0.85, 0.5, 0.65]
    b = [0.7, 0.7, 0.8, 0.6, 0.70, 0.80, 0.45, 0.55]
    trials, tables = _pair(a, b)
    rows, notes = case_comparisons(trials, "ref", tables.get)
    d = np.array(a) - np.array(b)
    assert rows.loc[0, "n_zero"] == 2 and rows.loc[0, "n_cases"] == 8
    assert rows.loc[0, "p_value"] == pytest.approx(sps.wilcoxon(d).pvalue)
    assert not any("non-zero" in n for n in notes)
    # All differences zero: no p (undefined), with a note rather than scipy's warning.
    trials, tables = _pair(a, a)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        rows, notes = case_comparisons(trials, "ref", tables.get)
    assert math.isnan(rows.loc[0, "p_value"]) and rows.loc[0, "diff"] == 0.0
    assert any("every per-case Dice difference is zero" in n for n in notes)
    # Four cases: the test runs but cannot reach p<0.05; noted.
    trials, tables = _pair(a[:4], b[:4])
    rows, notes = case_comparisons(trials, "ref", tables.get)
    assert rows.loc[0, "n_cases"] == 4 and any("uninformative" in n for n in notes)


def test_wilcoxon_notes_missing_and_unshared_cases(seg):
    t = normalise_trials(seg.trials, "dice")
    missing = t[(t["arm"] == "src/finetune") & (t["n_label"] == "2") & (t["seed"] == 0)]["id"].iloc[0]
    partial = t[(t["arm"] == "src/finetune") & (t["n_label"] == "5") & (t["seed"] == 0)]["id"].iloc[0]

    def predictions(trial_id: str) -> pd.DataFrame | None:
        if trial_id == missing:
            return None
        if trial_id == partial:
            return seg.cases[trial_id].iloc[:6]
        return seg.cases.get(trial_id)

    rows, notes = case_comparisons(t, REF, predictions)
    assert len(rows) == 10
    assert any(missing in n and "missing" in n for n in notes)
    assert any("only 6 of 6/8 test cases are shared" in n for n in notes)
    assert rows.set_index(["arm", "n_label", "seed"]).loc[("src/finetune", "5", 0), "n_cases"] == 6
    _, none_notes = case_comparisons(t, REF, None)
    assert "Wilcoxon tests were skipped" in none_notes[0]
    bad = {k: v.rename(columns={"case": "image_id"}) for k, v in seg.cases.items()}
    rows, notes = case_comparisons(t, REF, bad.get)
    assert rows.empty and any("lack 'case' or 'dice:<class>' columns" in n for n in notes)


def test_dice_report_without_per_case_tables(seg, tmp_path):
    paths = write_report(seg.trials, tmp_path, metric="dice")  # default baseline 'radiomics' is not an arm
    md = paths["report_md"].read_text(encoding="utf-8")
    assert "No per-case results were given, so the Wilcoxon tests were skipped." in md
    assert "No Wilcoxon test could be run." in md
    assert "The baseline arm `radiomics` is not part of this study." in md
    assert "AUC" not in md and re.search(r"\| src/finetune \| 2 \| 2 \| \+0\.\d{3} ± 0\.\d{3} \|", md)


def test_matching_a_baseline_arm_on_dice(seg):
    """When a Dice study does have a baseline arm, the section compares mean Dice (the scratch arm stands in)."""
    from medtransfer.reporting.compare import matches_baseline
    from medtransfer.reporting.document import to_markdown
    from medtransfer.reporting.sections import baseline_section
    from medtransfer.reporting.tables import n_levels, summary_table

    t = normalise_trials(seg.trials, "dice")
    summary = summary_table(t, "dice")
    got = matches_baseline(summary, REF, "dice").set_index("arm")
    assert list(got.columns) == ["n_label", "n", "dice_arm", "dice_baseline", "n_compared"]
    assert got.loc["src/finetune", "n_label"] == "2"  # better at every N, so from the smallest
    tick = n_levels(t).set_index("n_label")["tick"]
    text = to_markdown(baseline_section(summary, REF, tick, "dice"))
    assert "its mean test Dice over seeds at N is ≥ the baseline's mean Dice" in text
    assert "| arm | smallest N matching | arm mean Dice | baseline mean Dice | sizes compared |" in text
    assert "AUC" not in text
