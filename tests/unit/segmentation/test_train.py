"""A segmentation run end to end on tiny synthetic MSD folders: train, transfer with decoder_finetune, evaluate."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
import torch
from typer.testing import CliRunner

from medtransfer.config import Config, from_dict, replace
from medtransfer.data.cases import case_split, load_cases
from medtransfer.segmentation.train import train_segmentation


def seg_config(path, **kw) -> Config:
    base = {
        "task": "segmentation",
        "seed": 0,
        "data": {"path": str(path), "split_fractions": [0.5, 0.25, 0.25]},
        "model": {"backbone": "tiny_unet"},
        "transfer": {"strategy": "scratch"},
        "train": {"epochs": 2, "batch_size": 2, "lr": 0.01},
        "seg": {"patch_size": [32, 32, 32], "patches_per_volume": 2},
    }
    for key, value in kw.items():
        section, _, name = key.partition("__")
        base.setdefault(section, {})[name] = value
    return from_dict(Config, base)


@pytest.fixture(scope="module")
def source_run(tmp_path_factory, synthetic_msd):
    root = tmp_path_factory.mktemp("seg")
    data, present = synthetic_msd(root / "src", n=8, seed=0)
    ann = root / "annotated.csv"  # a sparse source: each case labels one structure, alternating where it can
    keep = [p[i % len(p)] for i, p in enumerate(present)]
    pd.DataFrame({"case": [f"case_{i:03d}" for i in range(8)], "annotated": keep}).to_csv(ann, index=False)
    cfg = seg_config(data, seg__annotated_file=str(ann))
    metrics = train_segmentation(cfg, root / "run", progress=False)
    return root, cfg, metrics, keep


def test_run_writes_metrics_and_a_reusable_source(source_run):
    root, cfg, m, keep = source_run
    run = root / "run"
    for name in ("config.yaml", "split.csv", "model.safetensors", "history.csv", "metrics.json", "cases.csv"):
        assert (run / name).is_file(), name
    saved = json.loads((run / "metrics.json").read_text())
    assert set(saved) >= {"dice", "dice_ci", "per_label", "hd95", "n"} and 0 <= saved["dice"] <= 1
    assert set(saved["per_label"]) == {"blob", "ball"}
    cases = pd.read_csv(run / "cases.csv")
    assert len(cases) == saved["n"] == 2 and {"dice:blob", "hd95:ball"} <= set(cases.columns)
    ds = load_cases(cfg)
    assert [ds.case(f"case_{i:03d}").annotated for i in range(8)] == [(k,) for k in keep]
    assert {"blob", "ball"} <= set(keep)


def test_decoder_finetune_from_the_source_maps_the_head_by_name(source_run, tmp_path, synthetic_msd):
    root, _, _, _ = source_run
    target, _ = synthetic_msd(tmp_path / "tgt", n=8, seed=1, classes=("background", "ball"))
    cfg = seg_config(target, model__source=str(root / "run"), transfer__strategy="decoder_finetune", train__n_train=2)
    from safetensors.torch import load_file

    src = load_file(str(root / "run" / "model.safetensors"))
    m = train_segmentation(cfg, tmp_path / "ft", progress=False)
    assert m["n_train"] == 2 and set(m["per_label"]) == {"ball"}
    tuned = load_file(str(tmp_path / "ft" / "model.safetensors"))
    enc = [k for k in src if k.startswith(("conv_0.", "down_")) and "weight" in k]
    dec = [k for k in src if k.startswith("upcat_") and "weight" in k]
    assert all((tuned[k] == src[k]).all() for k in enc)  # the encoder stayed frozen
    assert any(not (tuned[k] == src[k]).all() for k in dec)  # the decoder trained


def test_nested_case_subsets_and_resume_refusal(source_run, tmp_path):
    root, cfg, _, _ = source_run
    ds = load_cases(cfg)
    split = case_split(ds, cfg)
    assert split.counts() == {"train": 4, "val": 2, "test": 2}
    assert list(split.train_subset(2)) == list(split.train_subset(3)[:2])
    from medtransfer.errors import ConfigError

    with pytest.raises(ConfigError, match="--resume"):
        train_segmentation(cfg, root / "run", progress=False)


def test_cli_train_then_evaluate_on_an_msd_folder(source_run, tmp_path, synthetic_msd):
    from medtransfer.cli import _register_commands, app

    root, cfg, _, _ = source_run
    _register_commands()
    out = tmp_path / "metrics.json"
    base = ["evaluate", str(root / "run"), "--data", str(cfg.data.path), "--format", "msd", "--out", str(out)]
    result = CliRunner().invoke(app, base)  # the run's own data, no --split: its test cases, said so
    assert result.exit_code == 0, result.output
    m = json.loads(out.read_text())
    assert m["split"] == "test" and m["n"] == 2 and "test cases" in result.output
    result = CliRunner().invoke(app, [*base, "--split", "all", "--force"])
    assert result.exit_code == 0, result.output
    m = json.loads(out.read_text())
    assert m["n"] == 8 and len(m["dice_ci"]) == 2 and set(m["per_label"]) == {"blob", "ball"}
    assert "optimistic" in m["split_note"]
    # a study's split file: score the model on just the cases that file puts in 'test'
    split = pd.read_csv(root / "run" / "split.csv", dtype={"image_id": str})
    split["split"] = ["test" if i < 3 else "train" for i in range(len(split))]
    split.to_csv(tmp_path / "base.csv", index=False)
    argv = [
        "evaluate",
        str(root / "run"),
        "--data",
        str(cfg.data.path),
        "--out",
        str(out),
        "--split",
        "test",
        "--force",
    ]
    result = CliRunner().invoke(app, [*argv, "--split-file", str(tmp_path / "base.csv")])
    assert result.exit_code == 0, result.output
    m = json.loads(out.read_text())
    assert m["n"] == 3 and m["split_file"] == str(tmp_path / "base.csv")
    missing = CliRunner().invoke(app, [*argv, "--split-file", str(tmp_path / "nope.csv")])
    assert missing.exit_code != 0 and "does not exist" in str(missing.exception)
    wrong, _ = synthetic_msd(tmp_path / "other", n=2, seed=3, classes=("background", "liver"))
    bad = CliRunner().invoke(app, ["evaluate", str(root / "run"), "--data", str(wrong), "--out", str(out)])
    assert bad.exit_code != 0
    assert replace(cfg, seed=1).seed == 1


class _Oracle(torch.nn.Module):
    """Segments perfectly: the image holds the full label map, returned as one-hot logits."""

    def forward(self, x):
        return torch.nn.functional.one_hot(x[:, 0].round().long(), 3).movedim(-1, 1).float() * 10


def test_unannotated_classes_score_nan_not_zero():
    from medtransfer.data.volumes import Volume
    from medtransfer.segmentation.train import score_cases

    full = np.zeros((16, 16, 16), dtype=np.int64)
    full[2:6, 2:6, 2:6], full[9:14, 9:14, 9:14] = 1, 2
    read_as = np.where(full == 2, 0, full)  # class 2 not annotated: its voxels were read as background
    vol = Volume("c", full[None].astype(np.float32), read_as, (1.0, 1.0, 1.0), (0, 1), np.eye(4))
    cfg = seg_config("unused", seg__patch_size=[16, 16, 16])
    table = score_cases(_Oracle(), [vol], cfg, 3, hd95=True)
    assert table.loc[0, "dice:1"] == pytest.approx(1.0)
    assert np.isnan(table.loc[0, "dice:2"]) and np.isnan(table.loc[0, "hd95:2"])
    assert table.loc[0, "hd95:1"] == pytest.approx(0.0)


def test_max_steps_caps_the_patch_batches_of_an_epoch(tmp_path, synthetic_msd):
    # 4 training cases × 2 patches / batch 2 = 4 steps per epoch; 3 epochs within 6 steps → 2 steps per epoch
    data, _ = synthetic_msd(tmp_path / "d", n=8, seed=2)
    cfg = seg_config(data, train__epochs=3, train__max_steps=6)
    train_segmentation(cfg, tmp_path / "run", progress=False)
    state = torch.load(tmp_path / "run" / "checkpoint.pt", weights_only=True)
    assert state["scheduler"]["last_epoch"] == 6 and len(pd.read_csv(tmp_path / "run" / "history.csv")) == 3
