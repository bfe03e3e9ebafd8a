"""NIHChestXray14 on a tiny Data_Entry CSV written by the test, with two of its five images present."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from medtransfer.data.sources.base import SourceOptions, detect_format, load_dataset
from medtransfer.data.sources.nih_cxr14 import FINDINGS, NIHChestXray14
from medtransfer.errors import DataError

HEADER = "Image Index,Finding Labels,Follow-up #,Patient ID,Patient Age,Patient Gender,View Position\n"
ROWS = [
    "00000001_000.png,Cardiomegaly,0,1,57,M,PA",
    "00000001_001.png,Cardiomegaly|Emphysema,1,1,58,M,PA",
    "00000002_000.png,No Finding,0,2,81,M,PA",
    "00000003_000.png,Hernia|Pleural_Thickening|Effusion,0,3,74,F,AP",
    "00000003_001.png,Hernia,1,3,75,F,PA",
]


def make_nih(root: Path, rows: list[str] = ROWS) -> Path:
    """CSV in ``root``; the first two images under NIH's ``images_001/images/`` layout, the rest missing."""
    root.mkdir(parents=True, exist_ok=True)
    (root / "Data_Entry_2017_v2020.csv").write_text(HEADER + "\n".join(rows) + "\n")
    (root / "images_001" / "images").mkdir(parents=True)
    for k, name in enumerate(["00000001_000.png", "00000001_001.png"]):
        Image.fromarray(np.full((16, 16), 10 * k, np.uint8)).save(root / "images_001" / "images" / name)
    return root


def test_labels_patients_and_found_images(tmp_path):
    root = make_nih(tmp_path / "nih")
    assert detect_format(root) == detect_format(root / "Data_Entry_2017_v2020.csv") == "nih_cxr14"
    ds = load_dataset(root)
    assert ds.task == "multilabel" and ds.label_names == FINDINGS and ds.labels.shape == (5, 14)
    col = {name: k for k, name in enumerate(FINDINGS)}
    assert ds.labels[0].sum() == 1 and ds.labels[0, col["Cardiomegaly"]] == 1
    assert ds.labels[1, [col["Cardiomegaly"], col["Emphysema"]]].tolist() == [1, 1]
    assert ds.labels[2].sum() == 0  # No Finding
    assert ds.labels[3, [col["Hernia"], col["Pleural_Thickening"], col["Effusion"]]].tolist() == [1, 1, 1]
    assert list(ds.meta["patient_id"]) == ["1", "1", "2", "3", "3"]
    assert list(ds.meta["sex"]) == ["M", "M", "M", "F", "F"]
    assert ds.info["n_images_found"] == 2 and ds.info["n_images_missing"] == 3
    assert ds.info["image_root"] == str(root)
    img = ds.load(1)
    assert img.shape == (1, 16, 16) and img[0, 0, 0] == 10


def test_loading_a_missing_image_explains(tmp_path):
    ds = load_dataset(make_nih(tmp_path / "nih"))
    with pytest.raises(DataError) as err:
        ds.load(3)
    msg = str(err.value)
    assert "00000003_000.png not found under" in msg and "3 of 5" in msg and "\n" not in msg


def test_one_finding_selected(tmp_path):
    ds = load_dataset(make_nih(tmp_path / "nih"), options=SourceOptions(labels=("Hernia",)))
    assert ds.task == "binary" and ds.labels[:, 0].tolist() == [0, 0, 0, 1, 1]


def test_unknown_finding_names_the_row(tmp_path):
    rows = ROWS[:2] + ["00000002_000.png,Cardiomegally,0,2,81,M,PA"]
    with pytest.raises(DataError, match=r"row 4: unknown finding 'Cardiomegally'"):
        NIHChestXray14().load(make_nih(tmp_path / "nih", rows), SourceOptions())


def test_not_an_nih_csv(tmp_path):
    (tmp_path / "Data_Entry_2017.csv").write_text("file,label\na.png,1\n")
    with pytest.raises(DataError, match=r"lacks column\(s\) \['Image Index'"):
        NIHChestXray14().load(tmp_path / "Data_Entry_2017.csv", SourceOptions())
    assert not NIHChestXray14.detect(tmp_path / "labels.csv")
