"""``medtransfer explain`` on a tiny trained run: overlays and an index per method, the same bytes twice, and bad
input refused in one line with nothing written."""

from __future__ import annotations

import json
import shutil

import pandas as pd
import pytest
import torch
import yaml

SPEC = "synthetic:chest,n=80,visibility=0.9,size=32,seed=2"


pytestmark = pytest.mark.usefixtures("_one_thread")  # tests/conftest.py


@pytest.fixture(scope="module")
def run(tmp_path_factory, cli):
    root = tmp_path_factory.mktemp("explain")
    cfg = {
        "task": "binary",
        "seed": 0,
        "data": {"path": SPEC, "image_size": 32},
        "model": {"backbone": "tiny"},
        "train": {"epochs": 1, "batch_size": 16, "lr": 0.003},
    }
    (root / "train.yaml").write_text(yaml.safe_dump(cfg))
    assert cli(["train", str(root / "train.yaml"), "--out", str(root / "run")]) == 0
    return root / "run"


def _files(folder):
    return {p.name: p.read_bytes() for p in sorted(folder.iterdir())}


def snapshot(root):
    return {str(p.relative_to(root)): p.read_bytes() if p.is_file() else "dir" for p in sorted(root.rglob("*"))}


@pytest.mark.parametrize("method", ["gradcam", "gradcampp", "occlusion"])
def test_explain_writes_one_overlay_per_image_and_an_index(run, tmp_path, cli, capsys, method):
    out = tmp_path / "maps"
    n = 4 if method == "gradcam" else 2
    assert cli(["explain", str(run), "--out", str(out), "--n", str(n), "--method", method, "--device", "cpu"]) == 0
    said = capsys.readouterr().out
    assert "test split" in said and f"{n} maps" in said  # the run's own data: its test split, said so
    index = pd.read_csv(out / "index.csv", dtype={"image_id": str})
    assert len(index) == n and sorted(p.name for p in out.glob("*.png")) == sorted(index["file"])
    assert set(index["map_for"]) == {"lesion"} and index["score"].between(0, 1).all()
    assert (index["rank"] >= 1).all() and (index["rank"] <= index["n_scored"]).all()
    page = (out / "index.html").read_text()
    assert all(f'src="{f}"' in page for f in index["file"])
    settings = json.loads((out / "explain.json").read_text())
    assert settings["method"] == method and settings["split"] == "test" and settings["map_of"] == "the positive class"
    assert (settings["layer"] is None) == (method == "occlusion")
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]  # no temporary folder left behind


def test_explain_is_deterministic_and_replaces_a_folder_only_with_force(run, tmp_path, cli, capsys):
    a, b = tmp_path / "a", tmp_path / "b"
    argv = ["explain", str(run), "--n", "2", "--seed", "5", "--device", "cpu"]
    assert cli([*argv, "--out", str(a)]) == 0 and cli([*argv, "--out", str(b)]) == 0
    assert _files(a) == _files(b)  # the same index and the same PNG bytes
    before = _files(a)
    capsys.readouterr()
    assert cli([*argv, "--out", str(a), "--n", "1"]) == 2
    assert "--force" in capsys.readouterr().err and _files(a) == before
    assert cli([*argv, "--out", str(a), "--n", "1", "--force"]) == 0
    assert len(pd.read_csv(a / "index.csv")) == 1 and len(list(a.glob("*.png"))) == 1


def _not_a_run(root, run):
    (root / "notarun").mkdir()
    return ["explain", str(root / "notarun"), "--out", str(root / "o")], "model.safetensors"


def _segmentation_run(root, run):
    from safetensors.torch import save_file

    (root / "seg").mkdir()
    save_file({"w": torch.zeros(1)}, str(root / "seg" / "model.safetensors"), metadata={"task": "segmentation"})
    return ["explain", str(root / "seg"), "--out", str(root / "o")], "explain supports 2-D image runs"


def _out_under_a_file(root, run):
    (root / "afile").write_text("mine\n")
    return ["explain", str(run), "--out", str(root / "afile" / "maps")], "is a file"


def _unknown_method(root, run):
    return ["explain", str(run), "--out", str(root / "o"), "--method", "gradcma"], "did you mean ['gradcam'"


def _out_not_empty(root, run):
    (root / "o").mkdir()
    (root / "o" / "notes.txt").write_text("mine\n")
    return ["explain", str(run), "--out", str(root / "o")], "--force"


def _out_holds_the_run(root, run):
    copy = root / "run"
    shutil.copytree(run, copy)
    return ["explain", str(copy), "--out", str(root), "--force"], "which this command reads"


@pytest.mark.parametrize(
    "case", [_not_a_run, _segmentation_run, _out_under_a_file, _unknown_method, _out_not_empty, _out_holds_the_run]
)
def test_bad_input_is_one_line_and_writes_nothing(run, tmp_path, cli, capsys, case):
    argv, match = case(tmp_path, run)
    before = snapshot(tmp_path)
    capsys.readouterr()
    assert cli(argv) == 2
    err = capsys.readouterr().err
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error:") and match in lines[0], err
    assert snapshot(tmp_path) == before
