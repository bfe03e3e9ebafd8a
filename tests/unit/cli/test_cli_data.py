"""``medtransfer data inspect|split`` through ``main(argv)``: output, files written, one-line user errors."""

from __future__ import annotations

import logging
import subprocess
import sys
import zipfile
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from medtransfer import __version__
from medtransfer.cli import _state, main
from medtransfer.errors import DataError, UnknownNameError


@pytest.fixture(autouse=True)
def _restore_cli_state():
    """`main` configures the 'medtransfer' logger and remembers --debug; undo both for the next test."""
    logger = logging.getLogger("medtransfer")
    saved = (list(logger.handlers), logger.level, logger.propagate)
    yield
    logger.handlers[:], logger.level, logger.propagate = saved
    _state["debug"] = False


def run(argv: list[str], capsys) -> tuple[int, str, str]:
    """Run the CLI in-process; return (exit code, stdout, stderr)."""
    with pytest.raises(SystemExit) as info:
        main(argv)
    out, err = capsys.readouterr()
    code = info.value.code
    return (0 if code is None else code), out, err


def assert_one_line_error(code: int, err: str, *fragments: str) -> None:
    lines = err.strip().splitlines()
    assert code == 2, err
    assert len(lines) == 1, err
    assert lines[0].startswith("error: ")
    assert "Traceback" not in err
    for f in fragments:
        assert f in lines[0], lines[0]


@pytest.fixture
def npz(tmp_path) -> Path:
    """A tiny PneumoniaMNIST-like file: 100 train (30 positive) and 20 val (6 positive) images."""
    rng = np.random.default_rng(0)
    path = tmp_path / "pneumoniamnist.npz"
    train = np.zeros((100, 1), np.uint8)
    train[:30] = 1
    val = np.zeros((20, 1), np.uint8)
    val[:6] = 1
    np.savez(
        path,
        train_images=rng.integers(0, 256, (100, 28, 28), dtype=np.uint8),
        train_labels=train,
        val_images=rng.integers(0, 256, (20, 28, 28), dtype=np.uint8),
        val_labels=val,
    )
    return path


def test_version(capsys):
    code, out, err = run(["--version"], capsys)
    assert code == 0 and out.strip() == f"medtransfer {__version__}"


def test_no_arguments_shows_help(capsys):
    code, out, err = run([], capsys)
    assert code in (0, 2)  # click's no_args_is_help exits with 2 on click >= 8.2
    assert "data" in out + err


def test_inspect_reports_counts(npz, capsys):
    code, out, err = run(["data", "inspect", str(npz)], capsys)
    assert code == 0, err
    assert "task=binary" in out
    assert "images=120" in out and "patients=120" in out and "channels=1" in out
    assert "train=100" in out and "val=20" in out
    row = next(line for line in out.splitlines() if "pneumonia" in line and "%" in line)
    assert "36" in row and "84" in row and "30.0%" in row  # positives, negatives, prevalence
    assert "28x28" in out and "uint8" in out
    assert "problems: none found" in out


def test_inspect_with_explicit_format_and_check_all(npz, capsys):
    code, out, err = run(["data", "inspect", str(npz), "--format", "medmnist", "--check-all"], capsys)
    assert code == 0, err
    assert "image size (of 120 read)" in out


def test_split_writes_csv(npz, tmp_path, capsys):
    out_csv = tmp_path / "out" / "split.csv"
    code, out, err = run(["data", "split", str(npz), "--out", str(out_csv), "--seed", "3"], capsys)
    assert code == 0, err
    assert "Traceback" not in err
    table = pd.read_csv(out_csv)
    assert {"image_id", "patient_id", "split", "subset_rank", "in_n50"} <= set(table.columns)
    assert len(table) == 120
    counts = table["split"].value_counts().to_dict()
    assert counts["val"] == 20  # the file's own validation split is kept
    assert counts["train"] + counts["test"] == 100 and counts["test"] > 0  # test carved from train
    val_ids = table.loc[table["split"] == "val", "image_id"]
    assert list(val_ids) == [f"pneumoniamnist-{i:06d}" for i in range(100, 120)]
    assert table.groupby("patient_id")["split"].nunique().max() == 1
    assert f"wrote {out_csv}" in out.replace("\n", "")
    # the same seed gives the same file; another seed another one
    again = tmp_path / "again.csv"
    run(["data", "split", str(npz), "-o", str(again), "--seed", "3"], capsys)
    pd.testing.assert_frame_equal(pd.read_csv(again), table)
    other = tmp_path / "other.csv"
    run(["data", "split", str(npz), "-o", str(other), "--seed", "4"], capsys)
    assert not pd.read_csv(other).equals(table)


def test_split_without_source_splits_and_custom_fractions(npz, tmp_path, capsys):
    out_csv = tmp_path / "split.csv"
    code, _, err = run(
        ["data", "split", str(npz), "-o", str(out_csv), "--no-source-splits", "--fractions", "0.5,0.25,0.25"],
        capsys,
    )
    assert code == 0, err
    counts = pd.read_csv(out_csv)["split"].value_counts().to_dict()
    assert counts == {"train": 60, "val": 30, "test": 30}


def test_nonexistent_path(tmp_path, capsys):
    missing = tmp_path / "nope.npz"
    code, out, err = run(["data", "inspect", str(missing)], capsys)
    assert_one_line_error(code, err, "data path not found", str(missing))
    code, out, err = run(["data", "split", str(missing), "-o", str(tmp_path / "s.csv"), "-f", "medmnist"], capsys)
    assert_one_line_error(code, err, "data path not found")
    assert not (tmp_path / "s.csv").exists()


def test_unknown_format_did_you_mean(npz, capsys):
    code, out, err = run(["data", "inspect", str(npz), "--format", "medmnst"], capsys)
    assert_one_line_error(code, err, "unknown data format 'medmnst'", "did you mean ['medmnist'", "available:")


def test_corrupt_npz(npz, capsys):
    with zipfile.ZipFile(npz) as zf:
        info = zf.getinfo("train_images.npy")
    raw = bytearray(npz.read_bytes())
    mid = info.header_offset + 30 + len(info.filename.encode()) + len(info.extra) + info.compress_size // 2
    raw[mid : mid + 16] = b"\xff" * 16
    npz.write_bytes(bytes(raw))
    code, out, err = run(["data", "inspect", str(npz)], capsys)
    assert_one_line_error(code, err, "cannot read", npz.name)


def test_truncated_npz(npz, tmp_path, capsys):
    npz.write_bytes(npz.read_bytes()[:5000])
    code, out, err = run(["data", "inspect", str(npz)], capsys)
    assert_one_line_error(code, err, npz.name)  # no source recognises it: "cannot tell the format ..."
    code, out, err = run(["data", "split", str(npz), "-o", str(tmp_path / "s.csv"), "--format", "medmnist"], capsys)
    assert_one_line_error(code, err, "cannot read", npz.name)


@pytest.mark.parametrize(
    ("fractions", "fragment"),
    [
        ("0.7,x,0.2", "--fractions must be three numbers"),
        ("0.7,0.3", "split fractions must be three non-negative numbers"),
        ("0.7,-0.1,0.4", "split fractions must be three non-negative numbers"),
        ("", "--fractions must be three numbers"),
    ],
)
def test_bad_fractions(npz, tmp_path, capsys, fractions, fragment):
    out_csv = tmp_path / "s.csv"
    code, out, err = run(["data", "split", str(npz), "-o", str(out_csv), "--fractions", fractions], capsys)
    assert_one_line_error(code, err, fragment)
    assert not out_csv.exists()


def test_bad_class_name_on_mednist(tmp_path, capsys):
    path = tmp_path / "mednist.npz"
    np.savez(
        path,
        images=np.zeros((4, 8, 8), np.uint8),
        labels=np.array([0, 1, 0, 1]),
        class_names=np.array(["CXR", "Hand"]),
    )
    code, out, err = run(["data", "inspect", str(path), "--classes", "Hnad"], capsys)
    assert_one_line_error(code, err, "MedNIST has no class 'Hnad'", "did you mean ['Hand']")


def test_debug_reraises(tmp_path, npz, capsys):
    with pytest.raises(DataError, match="data path not found"):
        main(["--debug", "data", "inspect", str(tmp_path / "nope.npz")])
    with pytest.raises(UnknownNameError):
        main(["--debug", "data", "inspect", str(npz), "--format", "medmnst"])


def test_debug_flag_does_not_leak_into_the_next_call(tmp_path, capsys):
    with pytest.raises(DataError):
        main(["--debug", "data", "inspect", str(tmp_path / "nope.npz")])
    code, out, err = run(["data", "inspect", str(tmp_path / "nope.npz")], capsys)
    assert_one_line_error(code, err, "data path not found")


def test_real_process_prints_one_line(tmp_path):
    """``python -m medtransfer`` behaves like main(): exit code 2, one line, no traceback."""
    proc = subprocess.run(
        [sys.executable, "-m", "medtransfer", "data", "inspect", str(tmp_path / "nope.npz")],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert_one_line_error(proc.returncode, proc.stderr, "data path not found")
    assert proc.stdout == ""
