"""eval.calibrate: temperature is fitted on validation, stored with the model and used by evaluate and predict;
every classification run reports its Brier score and ECE."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
import yaml
from safetensors import safe_open

SPEC = "synthetic:chest,n=160,visibility=0.7,size=32,seed=4"


def test_temperature_scaling_is_fitted_stored_and_used(tmp_path, cli):
    cfg = {
        "data": {"path": SPEC, "image_size": 16},
        "model": {"backbone": "tiny"},
        "train": {"epochs": 2, "batch_size": 32, "lr": 0.003},
        "eval": {"calibrate": "temperature"},
    }
    (tmp_path / "c.yaml").write_text(yaml.safe_dump(cfg))
    assert cli(["train", str(tmp_path / "c.yaml"), "--out", str(tmp_path / "cal")]) == 0
    assert cli(["train", str(tmp_path / "c.yaml"), "--out", str(tmp_path / "raw"), "--set", "eval.calibrate=null"]) == 0
    cal = json.loads((tmp_path / "cal" / "metrics.json").read_text())
    raw = json.loads((tmp_path / "raw" / "metrics.json").read_text())
    t = cal["calibrated"]["temperature"]
    assert t > 0 and t != 1.0 and raw["calibrated"] is None and cal["calibration"]["ece_bins"] == 10
    with safe_open(str(tmp_path / "cal" / "model.safetensors"), "pt") as f:
        assert json.loads(f.metadata()["task_state"]) == {"temperature": t}
    # the same weights: a temperature keeps the ranking (AUC) and changes only the probabilities
    assert cal["auc"] == pytest.approx(raw["auc"], abs=1e-9)
    for m in (cal, raw):
        assert 0 <= m["brier"] <= 1 and 0 <= m["ece"] <= 1
    assert cal["brier"] != raw["brier"]

    # predict gives the calibrated probabilities: sigmoid(logit / T) of the raw model's
    for run in ("cal", "raw"):
        assert cli(["predict", str(tmp_path / run), "--data", SPEC, "--out", str(tmp_path / f"{run}.csv")]) == 0
    p_cal = pd.read_csv(tmp_path / "cal.csv")["prob_lesion"].to_numpy()
    p_raw = pd.read_csv(tmp_path / "raw.csv")["prob_lesion"].to_numpy()
    logit = np.log(p_raw / (1 - p_raw))
    np.testing.assert_allclose(p_cal, 1 / (1 + np.exp(-logit / t)), rtol=1e-4, atol=1e-6)

    out = tmp_path / "m.json"
    assert cli(["evaluate", str(tmp_path / "cal"), "--data", SPEC, "--split", "test", "--out", str(out)]) == 0
    m = json.loads(out.read_text())
    assert m["brier"] == pytest.approx(cal["brier"]) and m["calibration"]["ece_bins"] == 10


def test_calibrating_a_regression_is_refused_before_anything_is_written(tmp_path, capsys, cli):
    cfg = {
        "data": {"path": "synthetic:hand,labels=age,n=80,size=32", "image_size": 16},
        "model": {"backbone": "tiny"},
        "eval": {"calibrate": "temperature"},
    }
    (tmp_path / "c.yaml").write_text(yaml.safe_dump(cfg))
    assert cli(["train", str(tmp_path / "c.yaml"), "--out", str(tmp_path / "run")]) == 2
    assert "eval.calibrate" in capsys.readouterr().err and not (tmp_path / "run").exists()
