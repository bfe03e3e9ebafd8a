"""`medtransfer report` on a committed results folder (results.csv + config.yaml, no ledger, no trial folders): the
findings fall back to seed-level paired t-tests and say so, and per-image tables written before are kept."""

from __future__ import annotations

import numpy as np
import pandas as pd
import yaml

from medtransfer.reporting.findings import SEED_LEVEL


def _folder(tmp_path):
    rng = np.random.default_rng(0)
    rows = []
    for arm, source, strategy, shift in (("scratch/finetune", "scratch", "finetune", 0.0),
                                         ("cxr/finetune", "cxr", "finetune", 0.08),
                                         ("radiomics", None, "radiomics", -0.05)):  # fmt: skip
        for n in (50, 100, 200, 400):
            for seed in (0, 1, 2):
                auc = 0.7 + 0.05 * np.log2(n / 50) + shift + rng.normal(0, 0.005)
                rows.append({"id": f"{arm}|n={n}|seed={seed}", "arm": arm, "source": source, "strategy": strategy,
                             "n": n, "n_label": str(n), "seed": seed, "auc": auc, "auc_ci_lo": auc - 0.03,
                             "auc_ci_hi": auc + 0.03, "seconds": 1.0, "status": "done", "error": None})  # fmt: skip
    pd.DataFrame(rows).to_csv(tmp_path / "results.csv", index=False)
    (tmp_path / "config.yaml").write_text(yaml.safe_dump({"task": "binary", "study": {"baselines": ["radiomics"]}}))
    (tmp_path / "delong.csv").write_text("arm,reference\nkept,kept\n")
    return tmp_path


def test_report_rebuilds_a_results_folder_with_seed_level_findings(tmp_path, cli, capsys):
    folder = _folder(tmp_path)
    assert cli(["report", str(folder)]) == 0
    out = capsys.readouterr().out
    found = pd.read_csv(folder / "findings.csv", dtype={"n_label": str})
    assert (found["method"] == SEED_LEVEL).all()
    row = found[(found["family"] == "source_vs_scratch") & (found["n_label"] == "400")].iloc[0]
    assert row["arm"] == "cxr/finetune" and row["verdict"] == "better" and row["p_holm"] < 0.05
    assert (folder / "delong.csv").read_text() == "arm,reference\nkept,kept\n"  # not replaced by an empty table
    md = (folder / "report.md").read_text()
    assert "paired t-test across seeds: this study has no per-image predictions" in md
    assert "Findings" in out and "cxr/finetune is better than scratch/finetune" in out
