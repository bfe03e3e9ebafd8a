"""A tiny segmentation study end to end on synthetic 3-D volumes: sparse source → study → ledger → Dice report."""

from __future__ import annotations

import pandas as pd
import pytest

from medtransfer.config import Config, from_dict, load_config
from medtransfer.studies.config import StudyConfig
from medtransfer.studies.ledger import Ledger
from medtransfer.studies.runner import run_study


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
def test_segmentation_study_with_a_sparse_source(tmp_path, synthetic_msd):
    from medtransfer.segmentation.train import train_segmentation

    src, _ = synthetic_msd(tmp_path / "src", 6, seed=0, num_objs=6, rad_max=7, noise_max=0.2)
    train_segmentation(
        from_dict(Config, {**base(src), "transfer": {"strategy": "scratch"}}), tmp_path / "source", progress=False
    )
    tgt, _ = synthetic_msd(tmp_path / "tgt", 8, seed=1, num_objs=6, rad_max=7, noise_max=0.2)
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
    assert all(0 <= r["score"] <= 1 and "dice_ci" in r["metrics"] for r in rows)  # the score column holds Dice
    results = pd.read_csv(tmp_path / "study" / "results.csv")
    assert {"source", "strategy", "n", "seed", "dice", "dice:blob", "dice:ball"} <= set(results.columns)
    assert set(results["arm"]) == {"scratch/finetune", "source/finetune", "source/decoder_finetune"}
    # paired: every arm at (N, seed) tested on the same cases
    cases = {r["id"]: tuple(pd.read_csv(tmp_path / "study" / r["folder"] / "cases.csv")["case"]) for r in rows}
    assert len(set(cases.values())) == 1
    assert "Dice" in (tmp_path / "study" / "report.md").read_text()
