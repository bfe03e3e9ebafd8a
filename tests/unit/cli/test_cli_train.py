"""train → evaluate → predict through the command line on a tiny synthetic set."""

from __future__ import annotations

import json

import pandas as pd
import pytest
import yaml

from medtransfer.cli import main

SPEC = "synthetic:chest,n=120,visibility=0.9,seed=2"


def run(argv: list[str]) -> int:
    try:
        main(argv)
    except SystemExit as e:
        return int(e.code or 0)
    return 0


@pytest.fixture
def config(tmp_path):
    cfg = {
        "task": "binary",
        "seed": 0,
        "data": {"path": SPEC, "image_size": 32},
        "model": {"backbone": "tiny"},
        "transfer": {"strategy": "finetune"},
        "train": {"epochs": 2, "batch_size": 32, "lr": 0.003},
    }
    path = tmp_path / "train.yaml"
    path.write_text(yaml.safe_dump(cfg))
    return path


def test_train_evaluate_predict_round_trip(tmp_path, config, capsys):
    run_dir = tmp_path / "run"
    assert run(["train", str(config), "--out", str(run_dir), "--set", "train.epochs=1"]) == 0
    assert "validation AUC" in capsys.readouterr().out
    assert yaml.safe_load((run_dir / "config.yaml").read_text())["train"]["epochs"] == 1

    out = tmp_path / "metrics.json"
    # another draw of the same generator: an "external" test set with the same label
    other = "synthetic:chest,n=60,visibility=0.9,seed=9"
    assert run(["evaluate", str(run_dir), "--data", other, "--out", str(out)]) == 0
    m = json.loads(out.read_text())
    assert m["n"] == 60 and set(m["per_label"]) == {"lesion"} and len(m["auc_ci"]) == 2

    capsys.readouterr()
    # an existing --out is never replaced without --force (exit 2, the file untouched)
    before = out.read_bytes()
    assert run(["evaluate", str(run_dir), "--data", SPEC, "--split", "test", "--out", str(out)]) == 2
    assert "--force" in capsys.readouterr().err and out.read_bytes() == before
    assert run(["evaluate", str(run_dir), "--data", SPEC, "--split", "test", "--out", str(out), "--force"]) == 0
    run_metrics = json.loads((run_dir / "metrics.json").read_text())
    assert json.loads(out.read_text())["auc"] == pytest.approx(run_metrics["auc"])  # same model, same test split

    # no --split on the run's own data: its test split, said so; never silently the training images
    capsys.readouterr()
    assert run(["evaluate", str(run_dir), "--data", SPEC, "--out", str(out), "--force"]) == 0
    said = capsys.readouterr().out
    default = json.loads(out.read_text())
    assert default["split"] == "test" and default["n"] == run_metrics["n"] and "test split" in said
    assert default["auc"] == pytest.approx(run_metrics["auc"])
    # the operating point: the run's validation threshold on these images, with CIs, printed and in the file
    point, threshold = default["operating_point"], run_metrics["thresholds"]["lesion"]
    assert point["threshold"] == pytest.approx(threshold) and default["threshold_rule"] == "youden"
    assert point["sensitivity"] == pytest.approx(run_metrics["operating_point"]["sensitivity"])
    assert f"threshold {threshold:.4g} (youden on the validation split)" in said
    assert "PPV" in said and "NPV" in said and "sensitivity at specificity 0.90" in said
    assert point["sensitivity_ci"][0] <= point["sensitivity"] <= point["sensitivity_ci"][1]
    assert run(["evaluate", str(run_dir), "--data", SPEC, "--split", "all", "--out", str(out), "--force"]) == 0
    every = json.loads(out.read_text())
    assert every["split"] == "all" and every["n"] == 120 and "trained on" in every["split_note"]

    # --split-file: another run's (or a study's) split; a copy whose test half is relabelled 'val' scores fewer images
    split = pd.read_csv(run_dir / "split.csv", dtype={"image_id": str})
    test_ids = split.index[split["split"] == "test"]
    split.loc[test_ids[: len(test_ids) // 2], "split"] = "val"
    other_split = tmp_path / "other_split.csv"
    split.to_csv(other_split, index=False)
    argv = ["evaluate", str(run_dir), "--data", SPEC, "--split", "test", "--out", str(out), "--force"]
    assert run([*argv, "--split-file", str(other_split)]) == 0
    assert json.loads(out.read_text())["n"] == len(test_ids) - len(test_ids) // 2 < run_metrics["n"]
    assert run([*argv[:4], "--out", str(out), "--force", "--split-file", str(other_split)]) == 2  # needs --split

    pred = tmp_path / "pred.csv"
    assert run(["predict", str(run_dir), "--data", other, "--out", str(pred)]) == 0
    table = pd.read_csv(pred)
    assert list(table.columns) == ["image_id", "patient_id", "prob_lesion"] and len(table) == 60
    assert table["prob_lesion"].between(0, 1).all()


def test_evaluate_refuses_data_with_other_labels(tmp_path, config, capsys):
    run_dir = tmp_path / "run"
    assert run(["train", str(config), "--out", str(run_dir), "--set", "train.epochs=1"]) == 0
    capsys.readouterr()
    code = run(["evaluate", str(run_dir), "--data", "synthetic:both,n=40", "--out", str(tmp_path / "m.json")])
    err = capsys.readouterr().err.strip()
    assert code == 2 and err.startswith("error:") and len(err.splitlines()) == 1 and "labels" in err


def test_train_errors_are_one_line(tmp_path, config, capsys):
    code = run(["train", str(config), "--out", str(tmp_path / "r"), "--set", "train.epoch=3"])
    err = capsys.readouterr().err.strip()
    assert code == 2 and "did you mean 'epochs'" in err and len(err.splitlines()) == 1
    code = run(["train", str(config), "--out", str(tmp_path / "r"), "--set", "model.backbone=resnet19"])
    err = capsys.readouterr().err.strip()
    assert code == 2 and "resnet18" in err and "Traceback" not in err
