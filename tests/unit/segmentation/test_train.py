"""A segmentation run end to end on tiny synthetic MSD folders: train, transfer with decoder_finetune, evaluate."""

from __future__ import annotations

import json

import nibabel as nib
import numpy as np
import pandas as pd
import pytest
from typer.testing import CliRunner

from medtransfer.config import Config, from_dict, replace
from medtransfer.segmentation.train import case_split, load_seg_data, train_segmentation


def write_msd(root, n=8, seed=0, classes=("background", "blob", "ball")):
    from monai.data import create_test_image_3d

    (root / "imagesTr").mkdir(parents=True)
    (root / "labelsTr").mkdir()
    entries, present = [], []
    for i in range(n):
        img, seg = create_test_image_3d(
            32,
            32,
            32,
            num_objs=3,
            rad_max=8,
            num_seg_classes=len(classes) - 1,
            noise_max=0.3,
            random_state=np.random.RandomState(seed * 100 + i),
        )
        name = f"case_{i:03d}.nii.gz"
        nib.save(nib.Nifti1Image(img.astype(np.float32), np.eye(4)), root / "imagesTr" / name)
        nib.save(nib.Nifti1Image(seg.astype(np.uint8), np.eye(4)), root / "labelsTr" / name)
        entries.append({"image": f"./imagesTr/{name}", "label": f"./labelsTr/{name}"})
        present.append([classes[k] for k in np.unique(seg).astype(int) if k > 0])
    meta = {
        "name": "toy",
        "modality": {"0": "MRI"},
        "labels": {str(i): c for i, c in enumerate(classes)},
        "training": entries,
    }
    (root / "dataset.json").write_text(json.dumps(meta))
    return root, present


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
def source_run(tmp_path_factory):
    root = tmp_path_factory.mktemp("seg")
    data, present = write_msd(root / "src", n=8, seed=0)
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
    ds = load_seg_data(cfg)
    assert [ds.case(f"case_{i:03d}").annotated for i in range(8)] == [(k,) for k in keep]
    assert {"blob", "ball"} <= set(keep)


def test_decoder_finetune_from_the_source_maps_the_head_by_name(source_run, tmp_path):
    root, _, _, _ = source_run
    target, _ = write_msd(tmp_path / "tgt", n=8, seed=1, classes=("background", "ball"))
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
    ds = load_seg_data(cfg)
    split = case_split(ds, cfg)
    assert split.counts() == {"train": 4, "val": 2, "test": 2}
    assert list(split.train_subset(2)) == list(split.train_subset(3)[:2])
    from medtransfer.errors import ConfigError

    with pytest.raises(ConfigError, match="--resume"):
        train_segmentation(cfg, root / "run", progress=False)


def test_cli_train_then_evaluate_on_an_msd_folder(source_run, tmp_path):
    from medtransfer.cli import _register_commands, app

    root, cfg, _, _ = source_run
    _register_commands()
    out = tmp_path / "metrics.json"
    result = CliRunner().invoke(
        app, ["evaluate", str(root / "run"), "--data", str(cfg.data.path), "--format", "msd", "--out", str(out)]
    )
    assert result.exit_code == 0, result.output
    m = json.loads(out.read_text())
    assert m["n"] == 8 and len(m["dice_ci"]) == 2 and set(m["per_label"]) == {"blob", "ball"}
    wrong, _ = write_msd(tmp_path / "other", n=2, seed=3, classes=("background", "liver"))
    bad = CliRunner().invoke(app, ["evaluate", str(root / "run"), "--data", str(wrong), "--out", str(out)])
    assert bad.exit_code != 0
    assert replace(cfg, seed=1).seed == 1
