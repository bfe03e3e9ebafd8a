"""--out and --resume of `medtransfer train`: check first, then write; a failed start leaves nothing behind, and
nothing of the user's is overwritten. Each bad input gives exit 2, one `error:` line and no traceback."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from medtransfer.cli import main
from medtransfer.training import run as run_module

SPEC = "synthetic:chest,n=120,visibility=0.9,seed=2"


def config(tmp_path: Path, **changes) -> Path:
    cfg = {
        "task": "binary",
        "seed": 0,
        "data": {"path": SPEC, "image_size": 32},
        "model": {"backbone": "tiny"},
        "transfer": {"strategy": "finetune"},
        "train": {"epochs": 1, "batch_size": 32, "lr": 0.003},
    }
    for key, value in changes.items():
        section, name = key.split(".")
        cfg[section][name] = value
    path = tmp_path / "train.yaml"
    path.write_text(yaml.safe_dump(cfg))
    return path


def snapshot(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def refused(argv: list[str], capsys, match: str) -> str:
    with pytest.raises(SystemExit) as info:
        main(argv)
    err = capsys.readouterr().err
    assert info.value.code == 2, err
    lines = [line for line in err.splitlines() if line.strip()]
    assert lines and lines[0].startswith("error:") and match in err, err
    assert "Traceback" not in err
    return err


def test_a_users_non_empty_folder_is_never_written(tmp_path, capsys):
    out = tmp_path / "mine"
    out.mkdir()
    (out / "config.yaml").write_text("my own config\n")
    (out / "history.csv").write_text("my,own\n")
    before = snapshot(out)
    refused(["train", str(config(tmp_path)), "--out", str(out)], capsys, "other files in it")
    assert snapshot(out) == before


@pytest.mark.parametrize(
    ("changes", "match"),
    [
        ({"model.backbone": "resnt18"}, "resnet18"),
        ({"transfer.strategy": "fine_tune"}, "finetune"),
        ({"data.path": "/nonexistent/data.npz"}, "/nonexistent/data.npz"),
        ({"model.source": "/nonexistent/source"}, "/nonexistent/source"),
    ],
)
def test_bad_names_and_data_fail_before_the_folder_exists(tmp_path, capsys, changes, match):
    out = tmp_path / "run"
    refused(["train", str(config(tmp_path, **changes)), "--out", str(out)], capsys, match)
    assert not out.exists()


def test_a_failure_before_the_first_checkpoint_removes_what_was_written(tmp_path, monkeypatch, capsys):
    def broken(*args, **kwargs):
        raise ValueError("boom")

    monkeypatch.setattr(run_module, "fit_best", broken)
    out = tmp_path / "run"
    with pytest.raises(ValueError):
        main(["--debug", "train", str(config(tmp_path)), "--out", str(out)])
    assert not out.exists()
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(ValueError):
        main(["--debug", "train", str(config(tmp_path)), "--out", str(empty)])
    assert empty.is_dir() and not any(empty.iterdir())  # an empty folder the user made stays, empty


def test_resume_rules(tmp_path, capsys):
    cfg = config(tmp_path)
    done = tmp_path / "done"
    with pytest.raises(SystemExit) as ok:
        main(["train", str(cfg), "--out", str(done)])
    assert ok.value.code in (None, 0)
    capsys.readouterr()
    before = snapshot(done)
    assert json.loads((done / "status.json").read_text())["status"] == "done"
    refused(["train", str(cfg), "--out", str(done), "--resume"], capsys, "finished run")
    assert snapshot(done) == before  # status, run_info and config untouched
    refused(["train", str(cfg), "--out", str(done)], capsys, "already holds a run")
    assert snapshot(done) == before

    other = tmp_path / "other"
    other.mkdir()
    (other / "notes.txt").write_text("mine\n")
    refused(["train", str(cfg), "--out", str(other), "--resume"], capsys, "is not a medtransfer run")
    refused(["train", str(cfg), "--out", str(tmp_path / "absent"), "--resume"], capsys, "does not exist")
    assert not (tmp_path / "absent").exists()

    broken = tmp_path / "broken"
    broken.mkdir()
    (broken / run_module.RUN_MARKER).write_text("{}")
    (broken / "status.json").write_text('{"status": "running"}')
    (broken / "checkpoint.pt").write_bytes(b"not a checkpoint")
    before = snapshot(broken)
    refused(["train", str(cfg), "--out", str(broken), "--resume"], capsys, "cannot read checkpoint")
    assert snapshot(broken) == before


def test_out_that_is_a_file_is_refused(tmp_path, capsys):
    target = tmp_path / "file.txt"
    target.write_text("x")
    refused(["train", str(config(tmp_path)), "--out", str(target)], capsys, "is a file")
    assert target.read_text() == "x"
