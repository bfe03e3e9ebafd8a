"""run_study end to end on tiny phantoms: every trial done, arms paired, failures recorded, resume rules."""

from __future__ import annotations

import json

import pandas as pd
import pytest

from medtransfer.cli import main
from medtransfer.config import replace
from medtransfer.errors import TrainingFailed, UserError
from medtransfer.pipelines import images as images_pipeline
from medtransfer.studies import trial as trial_mod
from medtransfer.studies.ledger import Ledger
from medtransfer.studies.runner import run_study


def test_every_trial_runs_on_paired_subsets(tmp_path, study_config, capsys):
    out = tmp_path / "s"
    counts = run_study(study_config(), out, progress=False)  # with the report, built from the ledger
    assert counts == {"pending": 0, "running": 0, "done": 8, "failed": 0}
    results = pd.read_csv(out / "results.csv")
    assert len(results) == 8 and set(results["status"]) == {"done"}
    assert {"source", "strategy", "n", "seed", "auc", "auc_ci_lo", "auc_ci_hi", "seconds"} <= set(results.columns)
    assert (out / "report.html").is_file() and "scratch/recipe" in (out / "report.md").read_text()
    md = (out / "report.md").read_text()  # calibration: Brier and ECE per arm and N, and a reliability diagram
    assert "## Calibration" in md and (out / "figures" / "reliability.png").is_file()
    assert set(pd.read_csv(out / "calibration.csv").columns) == {"arm", "n_label", "n_seeds", "brier_mean", "ece_mean"}
    # operating points: each trial's validation threshold on the test images, per arm at the smallest and largest N
    assert "## Operating points" in md and (out / "figures" / "roc_operating_points.png").is_file()
    ops = pd.read_csv(out / "operating_points.csv", dtype={"n_label": str})
    assert set(ops["n_label"]) == {"12", "all"} and set(ops["rule"]) == {"youden"}
    assert ((ops["sensitivity_ci_lo"] <= ops["sensitivity_mean"]) | ops["sensitivity_ci_lo"].isna()).all()
    assert {"threshold", "sensitivity", "specificity", "ppv", "npv", "f1", "sens_at_spec90"} <= set(results.columns)
    assert results["specificity"].between(0, 1).all() and results["threshold"].notna().all()
    assert "sensitivity_mean" in pd.read_csv(out / "summary.csv").columns
    rows = Ledger(out / "study.sqlite").rows()
    assert all(0.0 <= r["score"] <= 1.0 and r["seconds"] > 0 and r["peak_rss_mb"] > 0 for r in rows)
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
            for r in cells:  # a finished trial keeps its model, not its resume state
                folder = out / r["folder"]
                assert (folder / "model.safetensors").is_file()
                assert not (folder / "checkpoint.pt").exists() and not (folder / "best.safetensors").exists()
    # nested: the N=12 subset is the first 12 of 'all'; seeds draw different subsets, test images stay
    s0 = pd.read_csv(out / "splits" / "seed0.csv").sort_values("subset_rank")
    s1 = pd.read_csv(out / "splits" / "seed1.csv").sort_values("subset_rank")
    train0 = s0[s0["split"] == "train"]["image_id"].tolist()
    train1 = s1[s1["split"] == "train"]["image_id"].tolist()
    assert train0[:12] != train1[:12] and sorted(train0) == sorted(train1)
    assert (s0.sort_values("image_id")["split"].to_numpy() == s1.sort_values("image_id")["split"].to_numpy()).all()
    info = json.loads((out / "run_info.json").read_text())
    assert info["seed"] == 0 and "torch" in info["versions"]
    # a discussion written after the results: `medtransfer report DIR --notes FILE`
    notes = tmp_path / "discussion.md"
    notes.write_text("Scratch and the recipe tie on these phantoms.\n")
    with pytest.raises(SystemExit) as done:
        main(["report", str(out), "--notes", str(notes)])
    assert done.value.code in (0, None)
    assert "Scratch and the recipe tie on these phantoms." in (out / "report.md").read_text()
    with pytest.raises(SystemExit) as refused:
        main(["report", str(out), "--notes", str(tmp_path / "missing.md")])
    assert refused.value.code == 2 and "missing.md" in capsys.readouterr().err
    # any two arms compared at every N
    with pytest.raises(SystemExit) as done:
        main(["report", str(out), "--pair", "scratch/recipe:scratch/finetune"])
    assert done.value.code in (0, None)
    pairs = pd.read_csv(out / "pairs.csv", dtype={"n_label": str})
    assert list(pairs["n_label"]) == ["12", "all"] and set(pairs["arm"]) == {"scratch/recipe"}
    with pytest.raises(SystemExit) as refused:
        main(["report", str(out), "--pair", "scratch/recipe"])
    assert refused.value.code == 2 and "ARM:REFERENCE" in capsys.readouterr().err


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
    notes = {"study.notes": "discussion.md"}  # notes are not part of the study: they may come later
    assert run_study(replace(cfg, **notes), out, resume=True, progress=False, report=False)["done"] == 1


def test_unknown_source_fails_before_any_training(tmp_path, study_config, monkeypatch):
    monkeypatch.setenv("MEDTRANSFER_SOURCES", str(tmp_path / "catalogue"))
    with pytest.raises(UserError, match="unknown source 'cxr-sll'"):
        run_study(study_config(sources=["scratch", "cxr-sll"]), tmp_path / "s", progress=False, report=False)
    assert not (tmp_path / "s").exists()  # no half-made folder that would refuse the corrected run
    with pytest.raises(UserError, match="did you mean"):
        run_study(study_config(reference="scratch/fine_tune"), tmp_path / "s", progress=False, report=False)
    assert not (tmp_path / "s").exists()


def test_out_and_resume_rules_and_a_damaged_ledger(tmp_path, study_config):
    from medtransfer.studies.report import report_study

    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "notes.txt").write_text("mine\n")
    with pytest.raises(UserError, match="other files in it"):
        run_study(study_config(), mine, progress=False, report=False)
    with pytest.raises(UserError, match="is not a medtransfer study"):
        run_study(study_config(), mine, resume=True, progress=False, report=False)
    assert sorted(p.name for p in mine.iterdir()) == ["notes.txt"]

    out = tmp_path / "s"
    run_study(study_config(n=[12], seeds=[0], strategies=["finetune"]), out, progress=False, report=False)
    ledger = out / "study.sqlite"
    good = ledger.read_bytes()
    for damage in (good[: len(good) // 2], b"this is not a database\n" * 100, b""):
        for side in out.glob("study.sqlite-*"):
            side.unlink()
        ledger.write_bytes(damage)
        with pytest.raises(UserError, match="ledger is damaged") as info:
            run_study(study_config(n=[12], seeds=[0], strategies=["finetune"]), out, resume=True, progress=False)
        assert "\n" not in str(info.value)
        with pytest.raises(UserError, match="ledger is damaged"):
            report_study(out)
        assert ledger.read_bytes() == damage  # never replaced by a new, empty ledger


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
            assert r["score"] == pytest.approx(rows[r["id"]]["score"], abs=0.02)


def test_out_of_memory_is_retried_once_with_half_the_micro_batch(tmp_path, study_config, monkeypatch):
    """A simulated OOM: retried with train.grad_accum=2 (same effective batch); an OOM that persists fails."""
    import torch
    import yaml

    from medtransfer.training import run as run_mod

    real = run_mod.train_run
    calls: list[tuple[str, int]] = []

    def oom(cfg, out, **kw):
        calls.append((str(out), cfg.train.grad_accum))
        if "recipe" in str(out) and cfg.train.grad_accum == 1:
            raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")
        if "finetune" in str(out) and "nall" in str(out):
            raise torch.OutOfMemoryError("CUDA out of memory, always")
        return real(cfg, out, **kw)

    monkeypatch.setattr(images_pipeline, "train_run", oom)  # the images pipeline trains a net trial
    out = tmp_path / "s"
    counts = run_study(study_config(seeds=[0]), out, progress=False, report=False)
    rows = {r["id"]: r for r in Ledger(out / "study.sqlite").rows()}
    retried = rows["scratch/recipe|n=12|seed=0"]
    assert retried["status"] == "done" and retried["metrics"]["oom_retry"] == {"grad_accum": 2}
    saved = yaml.safe_load((out / retried["folder"] / "config.yaml").read_text())
    assert saved["train"]["grad_accum"] == 2 and saved["train"]["batch_size"] == 8  # the effective batch is kept
    lost = rows["scratch/finetune|n=all|seed=0"]
    assert lost["status"] == "failed" and lost["error"].startswith("out of memory")
    assert counts == {"pending": 0, "running": 0, "done": 3, "failed": 1}
    assert sum(1 for c in calls if "finetune" in c[0] and "nall" in c[0]) == 2  # tried once more, not forever


def test_a_config_key_added_by_a_newer_version_does_not_block_resume():
    from medtransfer.studies.config import StudyConfig
    from medtransfer.studies.identity import diff_configs as _diff
    from medtransfer.studies.identity import fingerprint

    now = fingerprint(StudyConfig())
    stored = json.loads(json.dumps(now))
    del stored["train"]["max_steps"]  # a ledger written before train.max_steps existed
    assert _diff(stored, now, fingerprint(StudyConfig())) == []
    now["train"]["max_steps"] = 100  # the new key set to a non-default value is a different study
    assert _diff(stored, now, fingerprint(StudyConfig())) == ["train.max_steps: None → 100"]


def test_a_study_started_under_older_training_defaults_is_not_resumed(tmp_path):
    from medtransfer.errors import UserError
    from medtransfer.studies.config import StudyConfig
    from medtransfer.studies.identity import check_same_study, fingerprint

    old = fingerprint(StudyConfig())
    del old["defaults_revision"]  # a ledger written before the revision existed: revision 1
    ledger = Ledger(tmp_path / "study.sqlite", create=True)
    ledger.set_meta("config", json.dumps(old, sort_keys=True))
    with pytest.raises(UserError, match="defaults revision 1"):
        check_same_study(ledger, StudyConfig())
    ledger.set_meta("config", json.dumps(fingerprint(StudyConfig()), sort_keys=True))
    check_same_study(ledger, StudyConfig())  # the same revision and config: resumes


def test_a_trained_trial_whose_external_scoring_failed_is_scored_on_retry(tmp_path, study_config, monkeypatch):
    """The training finished (its folder says done), then scoring the study's test set failed: a retry scores the
    test set from the kept model instead of counting the trial's own split as its result."""
    from medtransfer.errors import DataError

    external = "synthetic:chest,n=40,visibility=0.8,size=32,seed=9"
    cfg = study_config(n=[12], strategies=["finetune"], seeds=[0], test={"path": external})
    out = tmp_path / "s"
    real = trial_mod.evaluate_run

    def interrupted(*args, **kwargs):
        raise DataError("scoring interrupted")

    monkeypatch.setattr(trial_mod, "evaluate_run", interrupted)  # a trial scores the study's test set
    assert run_study(cfg, out, progress=False, report=False)["failed"] == 1
    monkeypatch.setattr(trial_mod, "evaluate_run", real)
    counts = run_study(cfg, out, resume=True, retry_failed=True, progress=False, report=False)
    assert counts["done"] == 1
    (row,) = Ledger(out / "study.sqlite").rows()
    assert row["metrics"]["split"] == "external" and row["metrics"]["n"] == 40
    assert row["metrics"]["own_test"]["n"] < 40 and (out / row["folder"] / "predictions_external.csv").is_file()
