"""`medtransfer export` refuses bad input with exit 2, one `error:` line and nothing written. (Exports of trained runs
and their round trip against `predict`: tests/unit/training/test_export.py.)"""

from __future__ import annotations

import os

import pytest
import torch
from safetensors.torch import save_file


def _refused(cli, capsys, argv: list[str], *words: str) -> str:
    capsys.readouterr()
    assert cli(["export", *argv]) == 2
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error:"), lines
    for word in words:
        assert word in lines[0], lines[0]
    return lines[0]


@pytest.fixture
def fake_run(tmp_path):
    """A folder with a model file whose metadata names ``task``: enough to reach the run checks."""

    def make(task: str):
        run = tmp_path / f"{task}_run"
        run.mkdir()
        save_file({"w": torch.zeros(1)}, str(run / "model.safetensors"), metadata={"task": task})
        return run

    return make


def test_a_folder_that_is_not_a_run(tmp_path, cli, capsys):
    (tmp_path / "notes").mkdir()
    out = tmp_path / "m.onnx"
    _refused(cli, capsys, [str(tmp_path / "notes"), "--format", "onnx", "--out", str(out)], "not a finished run")
    assert list(tmp_path.iterdir()) == [tmp_path / "notes"]


def test_a_segmentation_run_names_what_is_supported(tmp_path, cli, capsys, fake_run):
    run = fake_run("segmentation")
    out = tmp_path / "m.pt"
    _refused(cli, capsys, [str(run), "--format", "torchscript", "--out", str(out)], "segmentation", "regression")
    assert not out.exists() and not (tmp_path / "m.pt.json").exists()


def test_an_unknown_format(tmp_path, cli, capsys, fake_run):
    out = tmp_path / "m.tflite"
    _refused(cli, capsys, [str(fake_run("binary")), "--format", "tflite", "--out", str(out)], "onnx", "torchscript")
    assert not out.exists()


def test_an_existing_out_or_sidecar_needs_force(tmp_path, cli, capsys, fake_run):
    run = fake_run("binary")
    out = tmp_path / "m.onnx"
    out.write_text("keep me")
    _refused(cli, capsys, [str(run), "--format", "onnx", "--out", str(out)], "exists", "--force")
    assert out.read_text() == "keep me"
    other = tmp_path / "n.onnx"
    (tmp_path / "n.onnx.json").write_text("keep me too")
    _refused(cli, capsys, [str(run), "--format", "onnx", "--out", str(other)], "sidecar", "--force")
    assert not other.exists() and (tmp_path / "n.onnx.json").read_text() == "keep me too"
    _refused(cli, capsys, [str(run), "--format", "onnx", "--out", str(tmp_path)], "is a folder")


def test_an_out_that_cannot_be_written(tmp_path, cli, capsys, fake_run):
    run = fake_run("binary")
    (tmp_path / "file.txt").write_text("")
    under_a_file = tmp_path / "file.txt" / "m.onnx"
    _refused(cli, capsys, [str(run), "--format", "onnx", "--out", str(under_a_file)], "not a folder")
    if os.geteuid() == 0:
        return  # root writes anywhere: a read-only folder cannot be made here
    locked = tmp_path / "locked"
    locked.mkdir(mode=0o500)
    try:
        _refused(cli, capsys, [str(run), "--format", "onnx", "--out", str(locked / "m.onnx")], "not writable")
        assert list(locked.iterdir()) == []
    finally:
        locked.chmod(0o700)
