"""run_study end to end on tiny phantoms: every trial done, arms paired, failures recorded, resume rules."""

from __future__ import annotations

import json

import pandas as pd
import pytest

from medtransfer.config import replace
from medtransfer.errors import TrainingFailed, UserError
from medtransfer.studies import trial as trial_mod
from medtransfer.studies.ledger import Ledger
from medtransfer.studies.runner import run_study


def test_every_trial_runs_on_paired_subsets(tmp_path, study_config):
    out = tmp_path / "s"
    counts = run_study(study_config(), out, progress=False)  # with the report, built from the ledger
    assert counts == {"pending": 0, "running": 0, "done": 8, "failed": 0}
    results = pd.read_csv(out / "results.csv")
    assert len(results) == 8 and set(results["status"]) == {"done"}
    assert {"source", "strategy", "n", "seed", "auc", "auc_ci_lo", "auc_ci_hi", "seconds"} <= set(results.columns)
    assert (out / "report.html").is_file() and "scratch/recipe" in (out / "report.md").read_text()
    rows = Ledger(out / "study.sqlite").rows()
    assert all(0.0 <= r["auc"] <= 1.0 and r["seconds"] > 0 and r["peak_rss_mb"] > 0 for r in rows)
    # paired: at (N, seed) every arm trained on the same images and was tested on the same images
    for n_label in ("12", "all"):
        for seed in (0, 1):
            cells = [r for r in rows if r["n_label"] == n_label and r["seed"] == seed]
            subsets, tests = set(), set()
            for r in cells:
                folder = out / r["folder"]
                split = pd.read_csv(folder / "split.csv", dtype={"image_id": str})
                train = split[split["split"] == "train"].sort_values("subset_rank")
                n = r["metrics"]["n_train"]
                subsets.add(tuple(train["image_id"].head(n)))
                tests.add(tuple(pd.read_csv(folder / "predictions.csv", dtype={"image_id": str})["image_id"]))
            assert len(cells) == 2 and len(subsets) == 1 and len(tests) == 1
    # nested: the N=12 subset is the first 12 of 'all'; seeds draw different subsets, test images stay
    s0 = pd.read_csv(out / "splits" / "seed0.csv").sort_values("subset_rank")
    s1 = pd.read_csv(out / "splits" / "seed1.csv").sort_values("subset_rank")
    train0 = s0[s0["split"] == "train"]["image_id"].tolist()
    train1 = s1[s1["split"] == "train"]["image_id"].tolist()
    assert train0[:12] != train1[:12] and sorted(train0) == sorted(train1)
    assert (s0.sort_values("image_id")["split"].to_numpy() == s1.sort_values("image_id")["split"].to_numpy()).all()
    info = json.loads((out / "run_info.json").read_text())
    assert info["seed"] == 0 and "torch" in info["versions"]


def test_a_failed_trial_is_recorded_and_the_others_finish(tmp_path, study_config, monkeypatch):
    real = trial_mod._net_trial

    def flaky(ctx, trial, folder, progress):
        if trial.arm == "scratch/recipe" and trial.n_label == "12" and trial.seed == 1:
            raise TrainingFailed("loss became nan at epoch 1, step 2")
        return real(ctx, trial, folder, progress)

    monkeypatch.setattr(trial_mod, "_net_trial", flaky)
    out = tmp_path / "s"
    counts = run_study(study_config(), out, progress=False, report=False)
    assert counts["done"] == 7 and counts["failed"] == 1
    failed = Ledger(out / "study.sqlite").rows("failed")[0]
    assert failed["id"] == "scratch/recipe|n=12|seed=1" and "nan" in failed["error"]
    # --resume --retry-failed runs only that trial again
    monkeypatch.setattr(trial_mod, "_net_trial", real)
    counts = run_study(study_config(), out, resume=True, retry_failed=True, progress=False, report=False)
    assert counts["done"] == 8
    assert Ledger(out / "study.sqlite").get("scratch/recipe|n=12|seed=1")["attempts"] == 2


def test_existing_study_needs_resume_and_the_same_config(tmp_path, study_config):
    out = tmp_path / "s"
    cfg = study_config(strategies=["finetune"], seeds=[0], n=["all"])
    run_study(cfg, out, progress=False, report=False)
    with pytest.raises(UserError, match="--resume"):
        run_study(cfg, out, progress=False, report=False)
    with pytest.raises(UserError, match=r"train\.lr: 0\.003 → 0\.01"):
        run_study(replace(cfg, **{"train.lr": 0.01}), out, resume=True, progress=False, report=False)
    # workers may change on resume; nothing is run again
    assert run_study(replace(cfg, **{"study.workers": 2}), out, resume=True, progress=False, report=False)["done"] == 1


def test_unknown_source_fails_before_any_training(tmp_path, study_config, monkeypatch):
    monkeypatch.setenv("MEDTRANSFER_SOURCES", str(tmp_path / "catalogue"))
    with pytest.raises(UserError, match="unknown source 'cxr-sll'"):
        run_study(study_config(sources=["scratch", "cxr-sll"]), tmp_path / "s", progress=False, report=False)
    assert not list((tmp_path / "s").glob("trials/*"))


def test_worker_pool_runs_trials_and_survives_a_dying_worker(tmp_path, study_config, monkeypatch):
    """K=2 worker processes; one trial's worker dies every time: it is tried twice, then failed; none lost."""
    monkeypatch.setenv(trial_mod.CRASH_ENV, "scratch/recipe|n=12|seed=0")
    out = tmp_path / "s"
    cfg = study_config(seeds=[0])
    counts = run_study(cfg, out, workers=2, progress=False, report=False)
    assert counts == {"pending": 0, "running": 0, "done": 3, "failed": 1}
    rows = {r["id"]: r for r in Ledger(out / "study.sqlite").rows()}
    dead = rows["scratch/recipe|n=12|seed=0"]
    assert dead["status"] == "failed" and "worker process died" in dead["error"] and dead["attempts"] == 2
    assert all(r["attempts"] == 1 for i, r in rows.items() if i != dead["id"])
    # the same trials run one at a time in the driver give the same AUCs up to thread-count float noise
    monkeypatch.delenv(trial_mod.CRASH_ENV)
    seq = tmp_path / "seq"
    run_study(cfg, seq, workers=1, progress=False, report=False)
    for r in Ledger(seq / "study.sqlite").rows():
        if r["id"] != dead["id"]:
            assert r["auc"] == pytest.approx(rows[r["id"]]["auc"], abs=0.02)
