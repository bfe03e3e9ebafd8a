"""A folder + CSV whose label column holds a continuous target: inspect shows its distribution, train / evaluate /
predict work in the target's unit (MAE with a CI), and bad regression input is one line before anything is written."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml
from PIL import Image

from medtransfer.data.sources.synthetic import SyntheticArchive, SyntheticSpec


@pytest.fixture(scope="module")
def hand_ages(tmp_path_factory) -> Path:
    """200 phantom hand films as PNGs with their age in months (a bone-age-like CSV)."""
    root = tmp_path_factory.mktemp("bone_age")
    ds = SyntheticArchive(SyntheticSpec.parse("synthetic:hand,labels=age,n=200,size=48")).dataset()
    (root / "images").mkdir()
    rows = []
    for i in range(len(ds)):
        Image.fromarray(ds.images.load(i)[0]).save(root / "images" / f"{i:03d}.png")
        rows.append({"file": f"images/{i:03d}.png", "months": round(12 * float(ds.labels[i, 0]), 1),
                     "patient": ds.meta["patient_id"][i]})  # fmt: skip
    pd.DataFrame(rows).to_csv(root / "labels.csv", index=False)
    return root


def test_inspect_shows_a_regression_target(hand_ages, capsys, cli):
    assert cli(["data", "inspect", str(hand_ages), "--labels", "months", "--patient-column", "patient"]) == 0
    out = capsys.readouterr().out
    assert "task=regression" in out and "mean" in out and "histogram" in out and "positive" not in out


def test_train_evaluate_predict_in_the_targets_unit(hand_ages, tmp_path, capsys, cli):
    cfg = {
        "data": {"path": str(hand_ages), "labels": ["months"], "patient_column": "patient", "image_size": 32},
        "model": {"backbone": "tiny"},
        "train": {"epochs": 3, "batch_size": 32, "lr": 0.003, "loss": "huber"},
    }
    (tmp_path / "age.yaml").write_text(yaml.safe_dump(cfg))
    run = tmp_path / "run"
    assert cli(["train", str(tmp_path / "age.yaml"), "--out", str(run)]) == 0
    assert "validation MAE" in capsys.readouterr().out
    m = json.loads((run / "metrics.json").read_text())
    assert m["task"] == "regression" and m["metric"] == "mae" and m["thresholds"] is None
    assert m["mae_ci"][0] <= m["mae"] <= m["mae_ci"][1] and {"rmse", "r2"} <= set(m)
    assert m["mae"] < 12 * 17 / 3  # better than a constant guess's MAE for ages spread over 1-18 years
    assert "val_mae" in pd.read_csv(run / "history.csv").columns

    out = tmp_path / "m.json"
    assert cli(["evaluate", str(run), "--data", str(hand_ages), "--split", "test", "--out", str(out)]) == 0
    assert json.loads(out.read_text())["mae"] == pytest.approx(m["mae"])  # the same images, the same model
    pred = tmp_path / "p.csv"
    assert cli(["predict", str(run), "--data", str(hand_ages), "--out", str(pred)]) == 0
    table = pd.read_csv(pred)
    assert list(table.columns) == ["image_id", "patient_id", "pred_months"] and len(table) == 200
    assert 0 < table["pred_months"].median() < 12 * 18  # months, not standardised units


@pytest.mark.parametrize(
    ("edit", "task", "match"),
    [
        (lambda df: df.assign(months=df["months"].astype(object).where(df.index != 4, "ten")), None, "row 6"),
        (lambda df: df.assign(months=60.0), "regression", "constant"),
        (lambda df: df, "binary", "needs 0/1 values"),
    ],
)
def test_bad_regression_input_is_one_line_and_writes_nothing(hand_ages, tmp_path, capsys, edit, task, match, cli):
    data = tmp_path / "data"
    data.mkdir()
    (data / "images").symlink_to(hand_ages / "images")
    df = pd.read_csv(hand_ages / "labels.csv")
    df.loc[np.arange(len(df)) == 4, "months"] = df.loc[4, "months"]
    edit(df).to_csv(data / "labels.csv", index=False)
    cfg = {"data": {"path": str(data), "labels": ["months"], "image_size": 32}, "model": {"backbone": "tiny"}}
    if task:
        cfg["task"] = task
    (tmp_path / "c.yaml").write_text(yaml.safe_dump(cfg))
    assert cli(["train", str(tmp_path / "c.yaml"), "--out", str(tmp_path / "run")]) == 2
    err = [line for line in capsys.readouterr().err.splitlines() if line.startswith("error:")]
    assert len(err) == 1 and match in err[0] and not (tmp_path / "run").exists()
