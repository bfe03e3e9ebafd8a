"""See before running, and exit codes a script can rely on: ``--dry-run`` writes nothing and prints the plan with an
estimate; ``--show-batch`` and ``lr-find --plot`` write one PNG; a diverging training exits 1, bad input 2."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

SPEC = "synthetic:chest,n=120,visibility=0.9,seed=2"


def write_config(path: Path, study: dict | None = None, **train) -> Path:
    cfg = {
        "task": "auto",
        "seed": 0,
        "data": {"format": "auto", "image_size": 32},
        "model": {"backbone": "tiny"},
        "train": {"epochs": 1, "batch_size": 16, "lr": 0.003, **train},
    }
    if study is not None:
        cfg["study"] = study
    path.write_text(yaml.safe_dump(cfg))
    return path


def tree(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


@pytest.fixture
def cache(tmp_path, monkeypatch) -> Path:
    folder = tmp_path / "cache"
    monkeypatch.setenv("MEDTRANSFER_CACHE", str(folder))
    return folder


def test_train_dry_run_writes_nothing_and_prints_the_plan(tmp_path, cache, capsys, cli):
    work = tmp_path / "work"
    work.mkdir()
    config = write_config(work / "train.yaml")
    before = tree(tmp_path)
    argv = ["train", str(config), "--data", SPEC, "--out", str(work / "run"), "--dry-run"]
    assert cli(argv) == 0
    out = capsys.readouterr().out
    assert tree(tmp_path) == before and not (work / "run").exists() and not cache.exists()  # no cache either
    assert "binary (detected)" in out and "format synthetic, detected" in out
    assert "train 84, val 12, test 24" in out and "ms per step" in out and "estimate" in out
    assert "nothing was written" in out


def test_show_batch_writes_one_png_and_refuses_to_overwrite(tmp_path, cache, capsys, cli):
    config = write_config(tmp_path / "train.yaml")
    png = tmp_path / "batch.png"
    assert cli(["train", str(config), "--data", SPEC, "--show-batch", str(png)]) == 0
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["batch.png", "train.yaml"]
    capsys.readouterr()
    assert cli(["train", str(config), "--data", SPEC, "--show-batch", str(png)]) == 2
    assert "--force" in capsys.readouterr().err


def test_study_dry_run_lists_trials_and_estimate_and_writes_nothing(tmp_path, cache, capsys, cli):
    study = {
        "n": [20, "all"],
        "sources": ["scratch"],
        "strategies": ["finetune", "romero"],
        "seeds": [0, 1],
        "strategy_settings": {"romero": ["train.lr=0.001"]},
    }
    config = write_config(tmp_path / "study.yaml", study=study)
    before = tree(tmp_path)
    assert cli(["study", str(config), "--data", SPEC, "--out", str(tmp_path / "st"), "--dry-run"]) == 0
    out = capsys.readouterr().out
    assert tree(tmp_path) == before and not (tmp_path / "st").exists() and not cache.exists()
    assert "trials     8 (2 arms × 2 sizes × 2 seeds)" in out
    assert "N =    20" in out and "N =   all" in out and "estimate" in out
    assert "romero: " in out and "finetune: " in out


def test_a_diverging_training_exits_1_and_bad_input_exits_2(tmp_path, cache, capsys, cli):
    config = write_config(tmp_path / "train.yaml", epochs=2)
    out = tmp_path / "run"
    assert cli(["train", str(config), "--data", SPEC, "--out", str(out), "--set", "train.lr=1e6"]) == 1
    err = capsys.readouterr().err
    assert "diverged" in err and "status.json" in err
    assert '"failed"' in (out / "status.json").read_text()
    # bad usage and bad input: exit 2, nothing written
    assert cli(["train", str(config), "--data", SPEC, "--out", str(tmp_path / "r2"), "--no-such-flag"]) == 2
    assert cli(["train", str(config), "--data", str(tmp_path / "missing"), "--out", str(tmp_path / "r2")]) == 2
    assert not (tmp_path / "r2").exists()


def test_lr_find_plots_the_curve(tmp_path, cache, capsys, cli):
    config = write_config(tmp_path / "train.yaml")
    png = tmp_path / "lr.png"
    assert cli(["lr-find", str(config), "--data", SPEC, "--iters", "12", "--plot", str(png)]) == 0
    assert "suggested train.lr" in capsys.readouterr().out
    assert png.read_bytes()[:4] == b"\x89PNG"


@pytest.mark.slow
def test_a_study_with_a_failed_trial_exits_1_after_its_report(tmp_path, cache, capsys, cli):
    study = {
        "n": [40],
        "sources": ["scratch"],
        "strategies": ["finetune", "fastai"],
        "seeds": [0],
        "strategy_settings": {"fastai": ["train.lr=1e6"]},
        "rank": False,
    }
    config = write_config(tmp_path / "study.yaml", study=study, epochs=2)
    out = tmp_path / "st"
    assert cli(["study", str(config), "--data", SPEC, "--out", str(out)]) == 1
    assert "1 trial(s) of the study failed" in capsys.readouterr().err
    assert (out / "report.md").is_file()
