"""The data families' pipelines: reached through the task kind, and a new volumetric kind is one module."""

from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path

import pytest
import yaml

from medtransfer.config import load_config
from medtransfer.errors import UserError
from medtransfer.pipelines.base import PIPELINES, pipeline_for, pipeline_of_run
from medtransfer.studies.config import StudyConfig
from medtransfer.studies.ledger import Ledger
from medtransfer.studies.runner import run_study
from medtransfer.tasks.base import TASK_KINDS


def test_each_kind_reaches_its_family_pipeline():
    assert pipeline_for(None).name == "images"  # the kind is read from the data: 2-D sources only
    for name in ("binary", "multiclass", "multilabel", "regression"):
        assert pipeline_for(name) is PIPELINES.get("images")
    assert pipeline_for("segmentation") is PIPELINES.get("volumes")
    with pytest.raises(UserError, match="did you mean"):
        pipeline_for("segmentaton")


def test_volumes_refuse_what_a_volume_study_cannot_do_before_any_data_is_read(tmp_path):
    cfg = load_config(_study_file(tmp_path, tmp_path / "missing", baselines=["radiomics"]), cls=StudyConfig)
    with pytest.raises(UserError, match="classification baselines"):
        pipeline_for("segmentation").check_study(cfg)


@pytest.fixture
def toy_kind(monkeypatch):
    """Register the one-module toy kind for this test only (the registry has no unregister)."""
    monkeypatch.setattr(TASK_KINDS, "_items", dict(TASK_KINDS._items))
    TASK_KINDS.names()  # the built-ins first, into the copy
    spec = importlib.util.spec_from_file_location("toy_volume_kind", Path(__file__).with_name("toy_volume_kind.py"))
    module = importlib.util.module_from_spec(spec)
    monkeypatch.setitem(sys.modules, "toy_volume_kind", module)
    spec.loader.exec_module(module)
    yield "toy_volumes"


def test_a_toy_volumetric_kind_in_one_module_runs_a_study_and_evaluate(toy_kind, tmp_path, synthetic_msd, cli):
    data, _ = synthetic_msd(tmp_path / "data", 6, seed=0)
    assert pipeline_for(toy_kind) is PIPELINES.get("volumes")
    cfg = load_config(_study_file(tmp_path, data, task=toy_kind), cls=StudyConfig)
    counts = run_study(cfg, tmp_path / "study", progress=False, report=False)
    assert counts["done"] == 2 and counts["failed"] == 0
    rows = Ledger(tmp_path / "study" / "study.sqlite").rows()
    for r in rows:  # trained by the volumes pipeline, recorded with the kind's own ledger keys
        assert r["metrics"]["task"] == toy_kind and {"dice", "dice_ci", "val_dice"} <= set(r["metrics"])
    folder = tmp_path / "study" / rows[0]["folder"]
    assert (folder / "cases.csv").is_file() and pipeline_of_run(folder).name == "volumes"
    out = tmp_path / "eval.json"
    assert cli(["evaluate", str(folder), "--data", str(data), "--split", "test", "--out", str(out)]) == 0
    assert 0 <= json.loads(out.read_text())["dice"] <= 1


def _study_file(tmp_path, data, task="segmentation", baselines=()):
    path = tmp_path / "study.yaml"
    study = {"n": ["all"], "sources": ["scratch"], "strategies": ["scratch", "finetune"], "seeds": [0], "rank": False}
    if baselines:
        study["baselines"] = list(baselines)
    config = {
        "task": task,
        "seed": 0,
        "data": {"path": str(data), "split_fractions": [0.5, 0.25, 0.25]},
        "model": {"backbone": "tiny_unet"},
        "train": {"epochs": 1, "batch_size": 2, "lr": 0.01},
        "seg": {"patch_size": [32, 32, 32], "patches_per_volume": 2},
        "study": study,
    }
    path.write_text(yaml.safe_dump(config))
    return path
