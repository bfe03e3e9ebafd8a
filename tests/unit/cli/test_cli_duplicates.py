"""``data inspect`` / ``data split`` on duplicate images and on folders of many image sizes: what they say and write."""

from __future__ import annotations

import logging
import shutil

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from medtransfer.cli import _state


@pytest.fixture(autouse=True)
def _restore_cli_state():
    """`main` configures the 'medtransfer' logger and remembers --debug; undo both for the next test."""
    logger = logging.getLogger("medtransfer")
    saved = (list(logger.handlers), logger.level, logger.propagate)
    yield
    logger.handlers[:], logger.level, logger.propagate = saved
    _state["debug"] = False


@pytest.fixture
def sample_with_a_copy(shared_data, tmp_path):
    """The MedNIST folder sample with one image copied under a second name, listed with the same label."""
    root = shutil.copytree(shared_data / "mednist_folder_sample", tmp_path / "sample")
    shutil.copyfile(root / "images" / "Hand_000272.jpeg", root / "images" / "hand_again.jpeg")
    with open(root / "labels.csv", "a") as f:
        f.write("images/hand_again.jpeg,Hand\n")
    return root


def test_inspect_names_the_copy_and_split_keeps_both_in_one_split(sample_with_a_copy, tmp_path, cli, capsys):
    root = sample_with_a_copy
    assert cli(["data", "inspect", str(root)]) == 0
    out = capsys.readouterr().out
    group = next(line for line in out.splitlines() if "images/hand_again.jpeg" in line)
    assert "2 exact copies (label Hand)" in group and "images/Hand_000272.jpeg" in group
    assert "warning: no patient ids" in out  # said before the details
    assert "problems: none found" not in out

    out_csv = tmp_path / "split.csv"
    assert cli(["data", "split", str(root), "--out", str(out_csv)]) == 0
    said = " ".join(capsys.readouterr().out.split())
    table = pd.read_csv(out_csv).set_index("image_id")
    pair = table.loc[["images/Hand_000272.jpeg", "images/hand_again.jpeg"]]
    assert pair["split"].nunique() == 1 and pair["group_id"].nunique() == 1
    assert "warning: no patient ids" in said and "no patient in two splits" not in said
    assert "duplicate group(s)" in said and "each in one split" in said


def test_split_without_dedupe_says_it_did_not_look(sample_with_a_copy, tmp_path, cli, capsys):
    out_csv = tmp_path / "split.csv"
    assert cli(["data", "split", str(sample_with_a_copy), "-o", str(out_csv), "--no-dedupe"]) == 0
    said = " ".join(capsys.readouterr().out.split())
    assert "duplicate images not looked for (--no-dedupe)" in said
    assert "group_id" not in pd.read_csv(out_csv).columns


def write_folder(root, sizes, copies=()):
    """PNG images of the given (height, width) in three colour modes and two bit depths, and labels.csv."""
    (root / "images").mkdir(parents=True)
    rng = np.random.default_rng(0)
    rows = []
    for k, (h, w) in enumerate(sizes):
        img = rng.integers(0, 256, (h, w), dtype=np.uint8)
        name = f"images/s{k:03d}.png"
        if k % 10 == 3:
            Image.fromarray(np.stack([img, img // 2, img // 3], axis=-1)).save(root / name)  # colour
        elif k % 10 == 7:
            Image.fromarray(img.astype(np.uint16) * 257).save(root / name)  # 16-bit grey
        else:
            Image.fromarray(img).save(root / name)
        rows.append(f"{name},{k % 2},P{k // 2}")
    for k, label in copies:
        shutil.copyfile(root / f"images/s{k:03d}.png", root / f"images/copy{k:03d}.png")
        rows.append(f"images/copy{k:03d}.png,{label},Q{k}")
    (root / "labels.csv").write_text("file,label,patient_id\n" + "\n".join(rows) + "\n")
    return root


def test_inspect_of_150_sizes_fits_one_screen(tmp_path, cli, capsys):
    sizes = [(16 + k % 15 * 4, 20 + k // 15 * 6) for k in range(150)]  # 150 different sizes
    sizes += [(28, 26)] * 6 + [(40, 50)] * 3  # two of them more common
    root = write_folder(tmp_path / "d", sizes)
    assert cli(["data", "inspect", str(root), "--check-all"]) == 0
    out = capsys.readouterr().out
    assert len(out.splitlines()) <= 40, out
    text = " ".join(out.split())
    assert "image size (of 159 read, height x width): 150 different sizes" in text
    assert "width min / median / max 20 / 44 / 74, height 16 / 44 / 72" in text
    assert "aspect (w/h) 0.28 to 4.62" in text
    assert "most common: 28x26 ×7, 40x50 ×4," in text and "145 others ×145" in text
    assert "dtype: uint8 ×143, uint16 ×16" in text
    assert "duplicates: none among 159 images hashed" in text
    assert "warning: no patient ids" not in text


def test_a_copy_with_another_label_is_a_labelling_error_and_joins_patients(tmp_path, cli, capsys):
    root = write_folder(tmp_path / "d", [(30, 30 + k) for k in range(40)], copies=[(4, 1), (9, 1)])
    groups_csv = tmp_path / "dups.csv"
    assert cli(["data", "inspect", str(root), "--duplicates", str(groups_csv)]) == 0
    text = " ".join(capsys.readouterr().out.split())
    assert "2 exact copies (DIFFERENT LABELS label=0 / label=1: a labelling error): images/s004.png" in text
    assert "1 duplicate group(s) hold different labels: labelling errors" in text
    table = pd.read_csv(groups_csv)
    assert list(table.columns) == ["group", "kind", "image_id", "label", "labelling_error"]
    assert table["image_id"].tolist() == [
        "images/s004.png",
        "images/copy004.png",
        "images/s009.png",
        "images/copy009.png",
    ]
    assert table["labelling_error"].tolist() == [True, True, False, False]

    out_csv = tmp_path / "split.csv"
    assert cli(["data", "split", str(root), "-o", str(out_csv), "--seed", "1"]) == 0
    said = " ".join(capsys.readouterr().out.split())
    audited = "audited: no patient in two splits; 2 duplicate group(s) (4 images, 2 of them joining several patients)"
    assert audited + ": each in one split" in said
    split = pd.read_csv(out_csv).set_index("image_id")
    for k in (4, 9):  # the copy's patient Q4 joins the original's P2: all their images in one split
        rows = split["patient_id"].isin([f"P{k // 2}", f"Q{k}"])
        assert split.loc[rows, "split"].nunique() == 1 and split.loc[rows, "group_id"].nunique() == 1


def test_duplicates_file_is_checked_before_and_written_after(tmp_path, cli, capsys):
    root = write_folder(tmp_path / "d", [(20, 20 + k) for k in range(12)], copies=[(2, 0)])
    existing = tmp_path / "dups.csv"
    existing.write_text("keep me\n")
    assert cli(["data", "inspect", str(root), "--duplicates", str(existing)]) == 2
    assert "error: --duplicates" in capsys.readouterr().err and existing.read_text() == "keep me\n"
    assert cli(["data", "inspect", str(root), "--duplicates", str(existing), "--force"]) == 0
    assert len(pd.read_csv(existing)) == 2
    (root / "images" / "s005.png").write_text("broken\n")
    fresh = tmp_path / "fresh.csv"
    assert cli(["data", "inspect", str(root), "--check-all", "--duplicates", str(fresh)]) == 2
    assert not fresh.exists()  # a failed inspection writes nothing
