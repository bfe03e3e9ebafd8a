"""A tiny segmentation study end to end on synthetic 3-D volumes: sparse source → study → ledger → Dice report."""

from __future__ import annotations

import json

import nibabel as nib
import numpy as np
import pandas as pd
import pytest

from medtransfer.config import Config, from_dict, load_config
from medtransfer.studies.config import StudyConfig
from medtransfer.studies.ledger import Ledger
from medtransfer.studies.runner import run_study


def write_msd(root, n, seed, classes=("background", "blob", "ball")):
    from monai.data import create_test_image_3d

    (root / "imagesTr").mkdir(parents=True)
    (root / "labelsTr").mkdir()
    entries = []
    for i in range(n):
        img, seg = create_test_image_3d(
            32,
            32,
            32,
            num_objs=6,
            rad_max=7,
            num_seg_classes=len(classes) - 1,
            noise_max=0.2,
            random_state=np.random.RandomState(seed * 100 + i),
        )
        name = f"case_{i:03d}.nii.gz"
        nib.save(nib.Nifti1Image(img.astype(np.float32), np.eye(4)), root / "imagesTr" / name)
        nib.save(nib.Nifti1Image(seg.astype(np.uint8), np.eye(4)), root / "labelsTr" / name)
        entries.append({"image": f"./imagesTr/{name}", "label": f"./labelsTr/{name}"})
    meta = {
        "name": "toy",
        "modality": {"0": "MRI"},
        "labels": {str(i): c for i, c in enumerate(classes)},
        "training": entries,
    }
    (root / "dataset.json").write_text(json.dumps(meta))
    return root


def base(path) -> dict:
    return {
        "task": "segmentation",
        "seed": 0,
        "data": {"path": str(path), "split_fractions": [0.5, 0.25, 0.25]},
        "model": {"backbone": "tiny_unet"},
        "train": {"epochs": 1, "batch_size": 2, "lr": 0.01},
        "seg": {"patch_size": [32, 32, 32], "patches_per_volume": 2, "hd95": True},
    }


@pytest.mark.slow
def test_segmentation_study_with_a_sparse_source(tmp_path):
    from medtransfer.segmentation.train import train_segmentation

    src = write_msd(tmp_path / "src", 6, seed=0)
    train_segmentation(
        from_dict(Config, {**base(src), "transfer": {"strategy": "scratch"}}), tmp_path / "source", progress=False
    )
    tgt = write_msd(tmp_path / "tgt", 8, seed=1)
    cfg_path = tmp_path / "study.yaml"
    import yaml

    cfg_path.write_text(
        yaml.safe_dump(
            {
                **base(tgt),
                "study": {
                    "n": [2, "all"],
                    "sources": ["scratch", str(tmp_path / "source")],
                    "strategies": ["finetune", "decoder_finetune"],
                    "exclude": ["scratch/decoder_finetune"],
                    "seeds": [0],
                    "rank": False,
                },
            }
        )
    )
    cfg = load_config(cfg_path, cls=StudyConfig)
    counts = run_study(cfg, tmp_path / "study", progress=False)
    assert counts["done"] == 6 and counts["failed"] == 0
    rows = Ledger(tmp_path / "study" / "study.sqlite").rows()
    assert all(0 <= r["auc"] <= 1 and "dice_ci" in r["metrics"] for r in rows)  # the score column holds Dice
    results = pd.read_csv(tmp_path / "study" / "results.csv")
    assert {"source", "strategy", "n", "seed", "dice", "dice:blob", "dice:ball"} <= set(results.columns)
    assert set(results["arm"]) == {"scratch/finetune", "source/finetune", "source/decoder_finetune"}
    # paired: every arm at (N, seed) tested on the same cases
    cases = {r["id"]: tuple(pd.read_csv(tmp_path / "study" / r["folder"] / "cases.csv")["case"]) for r in rows}
    assert len(set(cases.values())) == 1
    assert "Dice" in (tmp_path / "study" / "report.md").read_text()
