"""write_report end to end on the fixture study: files, report sections and numbers, and robustness."""

from __future__ import annotations

import html
import re
import subprocess
import sys
import warnings

import numpy as np
import pandas as pd
import pytest
from scipy import stats as sps

from medtransfer.evaluation.stats import delong_test
from medtransfer.reporting import write_report
from medtransfer.reporting.tables import normalise_trials, summary_table

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def _p(p: float) -> str:
    return "<0.001" if p < 0.001 else f"{p:.3f}"


@pytest.fixture(scope="module")
def md(report) -> str:
    return report["report_md"].read_text(encoding="utf-8")


def test_writes_every_output(report):
    assert set(report) == {
        "results",
        "summary",
        "delong",
        "paired",
        "learning_curves",
        "paired_differences",
        "report_md",
        "report_html",
        "findings",
        "findings_txt",
        "noninferiority",
        "curve_fits",
        "curve_fits_figure",
    }
    for key in ("learning_curves", "paired_differences"):
        assert report[key].parent.name == "figures" and report[key].read_bytes()[:8] == PNG_MAGIC
    assert not list(report["report_md"].parent.glob(".*.tmp"))  # atomic writes leave no temporaries


def test_header_command_counts_and_failures(md, study):
    assert md.startswith("# Fixture study\n")
    assert "```\nmedtransfer study run study.yaml --set seeds=2\n```" in md
    assert "18 trials: 16 done, 1 failed, 1 pending, 0 running." in md
    failures = md.split("### Failures")[1].split("###")[0]
    assert study.failed_id in failures and study.failed_error in failures  # verbatim inside a code span
    assert f"`{study.pending_id}` (cxr-ssl/recipe, N=all (40), seed 1): pending" in md


def test_auc_table_bolds_the_best_mean_per_n(md, study):
    summary = summary_table(normalise_trials(study.trials))
    table = md.split("## Mean test AUC by arm and N")[1].split("![")[0]
    assert "| arm | N=10 | N=20 | N=all (40) |" in table
    for _, g in summary.groupby("n_label"):
        best = g.loc[g["auc_mean"].idxmax()]
        assert f"**{best['auc_mean']:.3f}**" in table
        for other in g[g["arm"] != best["arm"]]["auc_mean"]:
            assert f"**{other:.3f}**" not in table
    assert "(1 pending)" in table and "†" in table
    assert "![Learning curves: mean AUC vs N](figures/learning_curves.png)" in md


def test_delong_numbers_in_report_match_delong_test(md, study):
    t = study.trials
    section = md.split("### (a) DeLong")[1].split("### (b)")[0]
    assert "Reference arm 'scratch/finetune': the first arm trained from scratch." in md
    for arm in ("cxr-ssl/recipe", "radiomics"):
        for n_label, tick in (("10", "10"), ("all", "all (40)")):
            cells, diffs, ps = [], [], []
            for seed in (0, 1):
                pick = (t["n_label"] == n_label) & (t["seed"] == seed) & (t["status"] == "done")
                ids = {a: t[pick & (t["arm"] == a)]["id"] for a in (arm, "scratch/finetune")}
                if any(v.empty for v in ids.values()):
                    continue
                a = study.preds[ids[arm].iloc[0]]
                b = study.preds[ids["scratch/finetune"].iloc[0]]
                j = a.merge(b, on="image_id", suffixes=("", "_ref"))
                res = delong_test(j["label:pneumonia"], j["score:pneumonia"], j["score:pneumonia_ref"])
                p_text = "p<0.001" if res["p_value"] < 0.001 else f"p={res['p_value']:.3f}"
                cells.append(f"s{seed}: {res['diff']:+.3f} ({p_text})")
                diffs.append(res["diff"])
                ps.append(res["p_value"])
            sig = sum(p < 0.05 for p in ps)
            summary = f"{np.mean(diffs):+.3f} | {sig}/{len(ps)} | {_p(np.median(ps))}"
            row = f"| {arm} | {tick} | {'; '.join(cells)} | {summary} |"
            assert row in section


def test_paired_across_seeds_section(md):
    section = md.split("### (b) Paired test")[1].split("## ")[0]
    assert re.search(r"\| cxr-ssl/recipe \| 10 \| 2 \| \+0\.\d{3} ± 0\.\d{3} \| [\d.<]+ \|\n", section)
    assert "Wilcoxon p" not in section and "smallest possible p is 0.50" in section  # 2 seeds: it could never be < 0.05
    assert "| cxr-ssl/recipe | 20 | 1 |" in section and "![Per-seed AUC difference" in section


def test_matches_baseline_is_non_inferiority_with_a_margin(md, report):
    """'Matches the baseline' is no longer 'mean ≥ the baseline's mean': the Δ CI must stay within the margin.
    cxr-ssl/recipe's mean beats radiomics' at N = 10 (0.793 vs 0.777) but its CI reaches far below −0.02."""
    section = md.split("## Smallest N that matches the baseline (non-inferiority)")[1].split("## ")[0]
    assert "non-inferiority, margin 0.02" in section
    ni = pd.read_csv(report["noninferiority"], dtype={"n_label": str})
    assert (ni["non_inferior"] == (ni["ci_lo"] > -ni["margin"])).all()
    for arm, g in ni.groupby("arm"):
        hit = g[g["non_inferior"]]
        where = "never" if hit.empty else hit["n_label"].iloc[0]
        assert re.search(rf"\| {re.escape(arm)} \| {re.escape(where)}", section), (arm, where)
    ten = ni[(ni["arm"] == "cxr-ssl/recipe") & (ni["n_label"] == "10")].iloc[0]
    assert ten["arm_mean"] > ten["reference_mean"] and not ten["non_inferior"]


def test_ranking_section(md, study):
    section = md.split("## Transferability ranking vs realised order")[1].split("## ")[0]
    summary = summary_table(normalise_trials(study.trials))
    realised = summary[summary["arm"] == "cxr-ssl/recipe"]["auc_mean"].mean()
    assert (
        "| predicted rank | source | logme score | seconds | AUC (finetune) [rank] | AUC (recipe) [rank] |" in section
    )
    assert f"| 1 | cxr-ssl | 1.300 | 4.0 | no result | {realised:.3f} [1] |" in section
    assert "| 2 | imagenet | 0.400 | 2.5 | no result | no result |" in section
    assert "| recipe | mean over 10, 20, all | 1 | — | — | — | yes |" in section  # no by_n: the mean over N


def test_discussion_and_html(report, md, study, notes_md):
    assert md.rstrip().split("## Discussion")[1].split("## Files")[0].strip() == notes_md
    page = report["report_html"].read_text(encoding="utf-8")
    assert page.count('<img alt="') == 3 and page.count('src="data:image/png;base64,') == 3  # + the curve fits
    assert not re.search(r"https?://|<script|<link|url\(", page)
    assert html.escape(study.failed_error) in page
    assert "<strong>helps</strong>" in page and "<li>scratch catches up at N=all</li>" in page
    assert re.search(r"<td class=\"r\"><strong>0\.\d{3}</strong> \[", page)


def test_robust_to_failed_arms_missing_baseline_nan_and_no_predictions(tmp_path):
    trials = pd.DataFrame(
        {
            "id": ["a0", "a1", "b0", "c0", "c1", "d0"],
            "arm": ["imagenet/probe", "imagenet/probe", "broken/ft", "odd/ft", "odd/ft", "later/ft"],
            "kind": "net",
            "source": ["imagenet", "imagenet", "broken", "odd", "odd", "later"],
            "strategy": ["probe", "probe", "ft", "ft", "ft", "ft"],
            "n": [50, 50, 50, 50, np.nan, np.nan],
            "n_label": ["50", "50", "50", "50", "all", "all"],
            "seed": [0, 1, 0, 0, 0, 0],
            "status": ["done", "done", "failed", "done", "running", "pending"],
            "seconds": [3.0, 4.0, np.nan, 2.0, np.nan, np.nan],
            "auc": [0.7, np.nan, np.nan, 0.6, np.nan, np.nan],
            "auc_ci_lo": [0.6, np.nan, np.nan, 0.5, np.nan, np.nan],
            "auc_ci_hi": [0.8, np.nan, np.nan, 0.7, np.nan, np.nan],
            "error": [None, None, "ValueError: bad | input\nsecond line", None, None, None],
            "metrics": [{}, None, {}, {}, {}, {}],
        }
    )
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no numpy empty-mean, scipy or matplotlib warnings leak
        paths = write_report(trials, tmp_path, predictions=lambda _: None, ranking={"method": "probe", "rows": []})
    md = paths["report_md"].read_text(encoding="utf-8")
    assert "The baseline arm `radiomics` is not part of this study." in md
    assert "Predictions of trial a0 are missing" in md and "No DeLong test could be run." in md
    assert "`ValueError: bad | input second line`" in md
    assert "| broken/ft | failed |" in md and "| later/ft |  | pending |" in md
    assert "No transferability ranking was given." in md
    # No 'scratch' arm: the first arm is the reference; only odd/ft pairs with it (N=50, seed 0).
    assert "Reference arm 'imagenet/probe': the first arm" in md and "paired_differences" in paths
    assert "| odd/ft | 50 | 1 | -0.100 | — |\n" in md  # one pair: no t-test, and no Wilcoxon column


def test_ranking_failure_probe_column_and_correlations(tmp_path):
    t = pd.DataFrame(
        {"id": list("abc"), "arm": ["s1/ft", "s2/ft", "s3/ft"], "source": ["s1", "s2", "s3"], "strategy": "ft"}
    ).assign(n_label="10", n=10, seed=0, status="done", auc=[0.7, 0.6, 0.5])
    failed = {"method": "logme", "error": "RuntimeError: no features\ntraceback", "rows": []}
    md = write_report(t, tmp_path / "a", ranking=failed)["report_md"].read_text(encoding="utf-8")
    assert "The transferability ranking failed: `RuntimeError: no features traceback`" in md
    rows = [
        {"arm_source": "s1", "score": 0.5, "probe_auc": 0.81, "seconds": 1.0},
        {"arm_source": "s2", "score": 0.9},
        {"arm_source": "s3", "score": 0.1},
    ]
    md = write_report(t, tmp_path / "b", ranking={"method": "logme", "rows": rows})["report_md"].read_text("utf-8")
    assert "| predicted rank | source | logme score | probe AUC | seconds | AUC (ft) [rank] |" in md
    assert "| 1 | s2 | 0.900 | — | — | 0.600 [2] |" in md and "| 2 | s1 | 0.500 | 0.810 | 1.0 | 0.700 [1] |" in md
    rho = sps.spearmanr([0.9, 0.5, 0.1], [0.6, 0.7, 0.5]).statistic
    tau = sps.kendalltau([0.9, 0.5, 0.1], [0.6, 0.7, 0.5]).statistic
    # 3 sources: 6 orderings, ρ = 0.5 is reached or beaten by 3 of them, ρ ≤ 0.5 by 5, so p = 2 × 3/6 = 1
    want = f"| ft | mean over 10 | 3 | {rho:.3f} (p=1.000) | {tau:.3f} (p=1.000) | 0.333 | no |"
    assert want in md
    assert "With 3 sources the smallest possible two-sided p is 0.333: no correlation here can be significant" in md


def test_ranking_section_per_n(tmp_path):
    """A ranking.json with by_n: correlations per strategy and N, with exact p and what 4 sources allow."""
    aucs = {"10": [0.70, 0.65, 0.60, 0.55], "20": [0.80, 0.85, 0.75, 0.70]}  # s1..s4
    t = pd.DataFrame(
        [
            {"arm": f"s{i + 1}/ft", "source": f"s{i + 1}", "strategy": "ft", "n_label": lab, "n": int(lab), "auc": v}
            for lab, values in aucs.items()
            for i, v in enumerate(values)
        ]
    )
    t = t.assign(id=[f"t{i}" for i in range(len(t))], seed=0, status="done")

    def rows(scores, probe=None):
        return [
            {"arm_source": f"s{i + 1}", "source": f"s{i + 1}", "score": v, "probe_auc": probe}
            for i, v in enumerate(scores)
        ]

    ranking = {
        "method": "logme",
        "n_images": 20,
        "rows": [r | {"seconds": 1.0} for r in rows([1.0, 3.0, 2.0, 0.0], 0.75)],
        "by_n": [
            {"n_label": "10", "n": 10, "n_images": 10, "rows": rows([4.0, 3.0, 2.0, 1.0])},
            {"n_label": "20", "n": 20, "n_images": 20, "rows": rows([1.0, 3.0, 2.0, 0.0], 0.75)},
        ],
    }
    md = write_report(t, tmp_path, ranking=ranking)["report_md"].read_text(encoding="utf-8")
    section = md.split("## Transferability ranking vs realised order")[1].split("\n## ")[0]
    assert "on the N labelled images the arms of that size train on" in section
    assert "| predicted rank | source | logme score, pool | probe AUC | seconds | AUC (ft) [rank] |" in section
    assert "| source | N=10 | N=20 |" in section and "| s1 | 4.000 [1] | 1.000 [3] |" in section
    header = "| strategy | N | sources | Spearman ρ (exact p) | Kendall τ (exact p) | smallest possible p |"
    assert header + " predicted best = realised best |" in section
    assert "| ft | 10 | 4 | 1.000 (p=0.083) | 1.000 (p=0.083) | 0.083 | yes |" in section  # not p<0.001
    assert "| ft | 20 | 4 | 0.800 (p=0.333) | 0.667 (p=0.333) | 0.083 | yes |" in section
    assert "| ft | mean over" not in section
    assert "With 4 sources the smallest possible two-sided p is 0.083: no correlation here can be significant" in md


def test_multi_label_report(study_factory, tmp_path):
    multi = study_factory(labels=("effusion", "nodule"))
    paths = write_report(multi.trials, tmp_path, predictions=multi.predictions)
    md = paths["report_md"].read_text(encoding="utf-8")
    assert "One DeLong test per label and seed" in md and "| tests p<0.05 |" in md
    assert re.search(r"s0: [+-]0\.\d{3} \(\d/2 labels p<0\.05\)", md)
    assert {"auc:effusion", "auc:nodule"} <= set(pd.read_csv(paths["results"]).columns)


def test_cli_import_path():
    from medtransfer.reporting.report import format_summary_table, write_report  # noqa: F401 - as the CLI does


def test_all_pending_and_empty_studies(tmp_path):
    pending = pd.DataFrame({"id": ["x"], "arm": ["a/b"], "n_label": ["all"], "seed": [0], "status": ["pending"]})
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        paths = write_report(pending, tmp_path / "pending", baseline=None)
        empty = write_report(pending.iloc[:0], tmp_path / "empty")
    md = paths["report_md"].read_text(encoding="utf-8")
    assert "learning_curves" not in paths and "no learning curves" in md and "| a/b | pending |" in md
    assert "0 trials" in empty["report_md"].read_text(encoding="utf-8")


def test_reporting_does_not_import_studies_or_training():
    code = (
        "import sys, medtransfer.reporting; "
        "bad = [m for m in sys.modules if m.startswith(('medtransfer.studies', 'medtransfer.training', 'torch', "
        "'matplotlib.pyplot'))]; print(bad); sys.exit(bool(bad))"
    )
    run = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert run.returncode == 0, run.stdout + run.stderr


def test_arm_styles_tell_thirteen_arms_apart():
    from medtransfer.reporting.figures import arm_styles

    sources = ["scratch", "a", "b", "c"]
    arms = [f"{s}/{t}" for s in sources for t in ("finetune", "linear_probe", "recipe")] + ["radiomics"]
    styles = arm_styles(arms, ["radiomics"])
    looks = {(st["color"], str(st["linestyle"]), st["marker"]) for st in styles.values()}
    assert len(looks) == len(arms)  # no two arms look alike, though there are more arms than colours
    assert len({styles[f"{s}/finetune"]["color"] for s in sources}) == 4  # one colour per source
    assert len({styles[f"a/{t}"]["marker"] for t in ("finetune", "linear_probe", "recipe")}) == 3
    assert styles["radiomics"]["linestyle"] == "--" and styles["radiomics"]["color"] not in {
        styles[f"{s}/finetune"]["color"] for s in sources
    }
