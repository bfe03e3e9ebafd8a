from __future__ import annotations

import pytest
import yaml

from medtransfer.config import load_config
from medtransfer.studies.config import StudyConfig


def tiny_study(tmp_path, **study) -> dict:
    """A study that runs in seconds: tiny backbone, 16 px phantoms, 2 epochs."""
    return {
        "seed": 0,
        "data": {
            "path": "synthetic:chest,n=120,visibility=0.8,size=32,seed=7",
            "image_size": 16,
            "cache_dir": str(tmp_path / "cache"),
        },
        "model": {"backbone": "tiny"},
        "train": {"epochs": 2, "batch_size": 8, "lr": 0.003},
        "study": {
            "n": [12, "all"],
            "sources": ["scratch"],
            "strategies": ["finetune", "recipe"],
            "seeds": [0, 1],
            "baselines": [],
            "rank": False,
            **study,
        },
    }


@pytest.fixture
def tiny():
    return tiny_study


@pytest.fixture
def study_config(tmp_path):
    def make(**study) -> StudyConfig:
        path = tmp_path / "study.yaml"
        path.write_text(yaml.safe_dump(tiny_study(tmp_path, **study)))
        return load_config(path, cls=StudyConfig)

    return make
