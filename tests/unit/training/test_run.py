"""End-to-end training runs on tiny synthetic data: reproducibility, resume equivalence, failure handling."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pandas as pd
import pytest
import torch
from safetensors.torch import load_file

from medtransfer.config import Config, from_dict, replace
from medtransfer.errors import ConfigError, TrainingFailed
from medtransfer.training import loop
from medtransfer.training.fitting import step_budget
from medtransfer.training.run import train_run


def tiny_config(**train) -> Config:
    return from_dict(
        Config,
        {
            "task": "binary",
            "seed": 3,
            "data": {"path": "synthetic:chest,n=160,visibility=0.9,seed=1", "image_size": 32},
            "model": {"backbone": "tiny", "dropout": 0.2},
            "transfer": {
                "strategy": "gradual_unfreeze",
                "lr_policy": "one_cycle",
                "head_epochs": 1,
                "unfreeze_every": 1,
            },
            "train": {"epochs": 3, "batch_size": 32, "lr": 0.01, **train},
        },
    )


def weights(path) -> dict[str, torch.Tensor]:
    return load_file(str(path))


def test_run_writes_every_file_and_metrics_schema(tmp_path):
    m = train_run(tiny_config(), tmp_path / "run", progress=False)
    for name in (
        "config.yaml",
        "run_info.json",
        "split.csv",
        "model.safetensors",
        "history.csv",
        "metrics.json",
        "status.json",
        "checkpoint.pt",
        "predictions.csv",
    ):
        assert (tmp_path / "run" / name).is_file(), name
    saved = json.loads((tmp_path / "run" / "metrics.json").read_text())
    for key in ("auc", "auc_ci", "n", "per_label", "val"):
        assert key in saved
    assert set(saved["per_label"]["lesion"]) >= {"auc", "auc_ci", "n_pos", "n_neg"}
    assert len(pd.read_csv(tmp_path / "run" / "history.csv")) == 3
    assert json.loads((tmp_path / "run" / "status.json").read_text())["status"] == "done"
    assert 0.0 <= m["auc"] <= 1.0


def test_same_seed_same_result_and_other_seed_differs(tmp_path):
    cfg = tiny_config(epochs=2)
    a = train_run(cfg, tmp_path / "a", progress=False)
    b = train_run(cfg, tmp_path / "b", progress=False)
    wa, wb = weights(tmp_path / "a" / "model.safetensors"), weights(tmp_path / "b" / "model.safetensors")
    assert all(torch.equal(wa[k], wb[k]) for k in wa)
    assert a["auc"] == b["auc"] and a["val"]["auc"] == b["val"]["auc"]
    train_run(replace(cfg, seed=4), tmp_path / "c", progress=False)
    wc = weights(tmp_path / "c" / "model.safetensors")
    assert not all(torch.equal(wa[k], wc[k]) for k in wa)


def test_resume_equals_uninterrupted_run(tmp_path, monkeypatch):
    cfg = tiny_config(epochs=4)
    full = train_run(cfg, tmp_path / "full", progress=False)

    # Interrupt after epoch 2: make the 3rd epoch crash, as a killed process would stop.
    real = loop.train_one_epoch
    calls = {"n": 0}

    def crashing(*args, **kwargs):
        calls["n"] += 1
        if calls["n"] == 3:
            raise KeyboardInterrupt
        return real(*args, **kwargs)

    monkeypatch.setattr(loop, "train_one_epoch", crashing)
    with pytest.raises(KeyboardInterrupt):
        train_run(cfg, tmp_path / "part", progress=False)
    monkeypatch.setattr(loop, "train_one_epoch", real)
    with pytest.raises(ConfigError, match="--resume"):
        train_run(cfg, tmp_path / "part", progress=False)
    resumed = train_run(cfg, tmp_path / "part", resume=True, progress=False)

    wf, wr = weights(tmp_path / "full" / "model.safetensors"), weights(tmp_path / "part" / "model.safetensors")
    assert all(torch.equal(wf[k], wr[k]) for k in wf)
    assert resumed["auc"] == full["auc"]
    hf = pd.read_csv(tmp_path / "full" / "history.csv")
    hr = pd.read_csv(tmp_path / "part" / "history.csv")
    assert np.allclose(hf["train_loss"], hr["train_loss"]) and np.allclose(hf["val_auc"], hr["val_auc"])


def test_nan_loss_stops_the_run_and_marks_it_failed(tmp_path):
    cfg = tiny_config(lr=1e12, grad_clip=None, epochs=3)
    with pytest.raises(TrainingFailed, match="loss became"):
        train_run(cfg, tmp_path / "nan", progress=False)
    status = json.loads((tmp_path / "nan" / "status.json").read_text())
    assert status["status"] == "failed" and "loss became" in status["error"]


def test_predictions_are_the_test_scores_behind_the_auc(tmp_path):
    from sklearn.metrics import roc_auc_score

    m = train_run(tiny_config(epochs=1), tmp_path / "run", progress=False)
    pred = pd.read_csv(tmp_path / "run" / "predictions.csv")
    split = pd.read_csv(tmp_path / "run" / "split.csv")
    assert sorted(pred["image_id"].astype(str)) == sorted(split.loc[split["split"] == "test", "image_id"].astype(str))
    assert roc_auc_score(pred["label:lesion"], pred["score:lesion"]) == pytest.approx(m["auc"], abs=1e-9)


def test_max_steps_keeps_the_epochs_and_shortens_them(tmp_path):
    # 160 phantoms → 112 training images → 3 steps of 32 per epoch (drop_last); 5 epochs would be 15 steps, so a
    # budget of 7 gives 5 epochs of 7 // 5 = 1 step: the recipe's unfreezing schedule still runs all 5 epochs
    m = train_run(tiny_config(epochs=5, max_steps=7), tmp_path / "cap", progress=False)
    assert m["epochs_run"] == 5 and len(pd.read_csv(tmp_path / "cap" / "history.csv")) == 5
    state = torch.load(tmp_path / "cap" / "checkpoint.pt", weights_only=True)
    assert state["scheduler"]["last_epoch"] == 5  # 5 optimizer steps in all, the one-cycle schedule sized for them
    with pytest.raises(ConfigError, match="max_steps"):
        train_run(tiny_config(max_steps=0), tmp_path / "bad", progress=False)


def test_step_budget():
    assert step_budget(15, 600, 4) is None  # 60 steps fit
    assert step_budget(15, 600, 40) is None  # exactly 600
    assert step_budget(15, 600, 41) == 40
    assert step_budget(15, 10, 229) == 1  # never below one step
    assert step_budget(15, None, 229) is None


def test_nested_subset_is_used(tmp_path):
    m = train_run(tiny_config(n_train=20, epochs=1), tmp_path / "n20", progress=False)
    assert m["n_train"] == 20


def test_early_stopping(tmp_path):
    m = train_run(tiny_config(epochs=6, early_stop_patience=1, lr=1e-7), tmp_path / "es", progress=False)
    assert m["epochs_run"] < 6
    shutil.rmtree(tmp_path / "es")


def test_val_every_validates_every_kth_and_the_last_epoch(tmp_path):
    m = train_run(tiny_config(epochs=5, val_every=2), tmp_path / "v", progress=False)
    hist = pd.read_csv(tmp_path / "v" / "history.csv")
    assert hist["val_auc"].notna().tolist() == [False, True, False, True, True]
    assert m["best_epoch"] in (1, 3, 4)  # only a validated epoch can be the best checkpoint
    with pytest.raises(ConfigError, match="val_every"):
        train_run(tiny_config(val_every=0), tmp_path / "bad", progress=False)


def test_grad_accum_keeps_the_optimizer_steps_and_the_schedule(tmp_path):
    # batch_size stays the effective batch: 3 optimizer steps of 32 per epoch either way, 16 images per forward
    from medtransfer.training.checkpoint import load_checkpoint

    runs = {}
    for accum in (1, 2):
        m = train_run(tiny_config(epochs=2, grad_accum=accum), tmp_path / f"ga{accum}", progress=False)
        ckpt = load_checkpoint(tmp_path / f"ga{accum}" / "checkpoint.pt")
        steps = {int(s["step"]) for s in ckpt["optimizer"]["state"].values()}
        runs[accum] = (ckpt["scheduler"]["last_epoch"], steps, m["epochs_run"])
        assert 0.0 <= m["auc"] <= 1.0
    assert runs[1] == runs[2] == (6, {3, 6}, 2)  # the head trains 6 steps, the unfrozen group 3 (recipe)
    lr1 = pd.read_csv(tmp_path / "ga1" / "history.csv")["lr"]
    lr2 = pd.read_csv(tmp_path / "ga2" / "history.csv")["lr"]
    assert np.allclose(lr1, lr2)
    with pytest.raises(ConfigError, match="grad_accum"):
        train_run(tiny_config(grad_accum=3), tmp_path / "bad", progress=False)


def test_select_by_loss_keeps_the_epoch_with_the_lowest_validation_loss(tmp_path):
    m = train_run(tiny_config(epochs=4, select_by="loss"), tmp_path / "loss", progress=False)
    h = pd.read_csv(tmp_path / "loss" / "history.csv")
    assert {"val_auc", "val_loss"} <= set(h.columns)
    assert m["best_epoch"] == int(h["val_loss"].idxmin())
    assert m["strategy"]["select_by"] == "loss"
    m = train_run(tiny_config(epochs=4), tmp_path / "auc", progress=False)
    h = pd.read_csv(tmp_path / "auc" / "history.csv")
    assert m["best_epoch"] == int(h["val_auc"].idxmax()) and m["strategy"]["select_by"] == "auc"


def test_tta_averages_augmented_views_and_is_recorded(tmp_path):
    from medtransfer.training.inference import evaluate_run

    cfg = replace(tiny_config(epochs=2), **{"eval.tta": 3})
    m = train_run(cfg, tmp_path / "run", progress=False)
    assert m["tta"] == 3 and m["val"]["tta"] == 3
    data = cfg.data.path
    again = evaluate_run(
        tmp_path / "run", data, tmp_path / "again.json", split="test", predictions_out=tmp_path / "p.csv"
    )
    plain = evaluate_run(tmp_path / "run", data, tmp_path / "plain.json", split="test", tta=0)
    assert again["tta"] == 3 and plain["tta"] == 0
    assert again["auc"] == pytest.approx(m["auc"], abs=1e-12)  # the same views every time
    assert plain["auc"] != again["auc"]
    scores = pd.read_csv(tmp_path / "p.csv")["score:lesion"]
    trained = pd.read_csv(tmp_path / "run" / "predictions.csv")["score:lesion"]
    assert np.allclose(scores, trained)
