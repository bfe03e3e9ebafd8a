"""`evaluate` scores the images it is asked to, or refuses: a run's split is never applied to other data whose ids
happen to match (MedMNIST ids are positions), and a file with its own test split is scored on that split."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import yaml


def _medmnist(path: Path, splits: dict[str, int], seed: int) -> Path:
    rng = np.random.default_rng(seed)
    arrays = {}
    for name, n in splits.items():
        labels = (np.arange(n) % 2).astype(np.uint8)[:, None]
        images = rng.integers(0, 60, size=(n, 16, 16), dtype=np.uint8)
        images[labels[:, 0] == 1, 4:12, 4:12] += 150  # a visible "finding"
        arrays[f"{name}_images"], arrays[f"{name}_labels"] = images, labels
    np.savez(path, **arrays)
    return path


@pytest.fixture(scope="module")
def trained(tmp_path_factory, cli) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("inference")
    data = _medmnist(root / "pneumoniamnist_trainval.npz", {"train": 120, "val": 40}, seed=0)
    cfg = {
        "data": {"path": str(data), "image_size": 16},
        "model": {"backbone": "tiny"},
        "train": {"epochs": 1, "batch_size": 32, "lr": 0.003},
    }
    (root / "train.yaml").write_text(yaml.safe_dump(cfg))
    assert cli(["train", str(root / "train.yaml"), "--out", str(root / "run")]) == 0
    return {"root": root, "run": root / "run", "data": data}


def test_the_split_file_records_its_dataset(trained):
    fp = json.loads((trained["run"] / "split.dataset.json").read_text())
    assert fp["dataset"] == "pneumoniamnist" and fp["images"] == 160 and fp["content"] and fp["ids"]


def test_the_official_test_file_is_scored_on_all_of_its_test_images(trained, tmp_path, cli):
    # the same ids as the first 100 training images (pneumoniamnist-000000 ...), other pictures
    test = _medmnist(tmp_path / "pneumoniamnist_test.npz", {"test": 100}, seed=1)
    out = tmp_path / "m.json"
    assert cli(["evaluate", str(trained["run"]), "--data", str(test), "--split", "test", "--out", str(out)]) == 0
    m = json.loads(out.read_text())
    assert m["n"] == 100  # not the handful whose positional ids the run's split calls "test"
    assert set(m["per_label"]) == {"pneumonia"}  # the label name comes from the flag inside the file name


def test_the_training_file_still_uses_the_runs_own_split(trained, tmp_path, cli):
    out = tmp_path / "m.json"
    argv = ["evaluate", str(trained["run"]), "--data", str(trained["data"]), "--split", "test", "--out", str(out)]
    assert cli(argv) == 0
    run_metrics = json.loads((trained["run"] / "metrics.json").read_text())
    assert json.loads(out.read_text())["n"] == run_metrics["n"]


def test_a_split_file_for_other_data_is_refused(trained, tmp_path, capsys, cli):
    other = _medmnist(tmp_path / "pneumoniamnist_trainval.npz", {"train": 120, "val": 40}, seed=5)  # same ids
    out = tmp_path / "m.json"
    argv = ["evaluate", str(trained["run"]), "--data", str(other), "--split", "test", "--out", str(out)]
    assert cli([*argv, "--split-file", str(trained["run"] / "split.csv")]) == 2
    assert "was made for other data" in capsys.readouterr().err and not out.exists()


def test_a_one_label_binary_file_with_another_label_name_is_scored_with_a_notice(trained, tmp_path, capsys, cli):
    other = _medmnist(tmp_path / "breastmnist.npz", {"test": 40}, seed=3)
    out = tmp_path / "m.json"
    assert cli(["evaluate", str(trained["run"]), "--data", str(other), "--out", str(out)]) == 0
    assert json.loads(out.read_text())["n"] == 40
    assert "scoring it as that label" in " ".join(capsys.readouterr().err.split())
