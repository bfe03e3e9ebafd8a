"""The ``images`` format: a plain folder of image files (PNG, JPEG, DICOM with or without a suffix), no CSV."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from medtransfer.data.sources.base import SourceOptions, detect_format, load_dataset
from medtransfer.errors import DataError


def png(path: Path, value: int = 0, size: int = 12, rgb: bool = False) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    arr = np.full((size, size), value, np.uint8)
    arr[0, 0] = 255 - value
    Image.fromarray(np.stack([arr, arr // 2, arr // 3], -1) if rgb else arr).save(path)
    return path


@pytest.fixture
def folder(tmp_path, dicom_file) -> Path:
    root = tmp_path / "scans"
    png(root / "b.png", 10)
    png(root / "a.jpg", 20)
    png(root / "site2" / "c.png", 30)
    dicom_file(root / "site2" / "d.dcm")
    dicom_file(root / "site2" / "1.2.840.10008")  # a DICOM named by its UID: found by the preamble
    (root / "notes").write_text("not an image")  # no suffix, no preamble: skipped
    (root / "readme.txt").write_text("skipped")
    png(root / ".hidden" / "x.png")  # hidden folders and files are skipped
    (root / "._b.png").write_bytes(b"macOS resource fork, not a PNG")
    return root


def test_plain_folder_is_detected_and_loaded_sorted_unlabelled(folder):
    assert detect_format(folder) == "images"
    ds = load_dataset(folder)
    ids = ["a.jpg", "b.png", "site2/1.2.840.10008", "site2/c.png", "site2/d.dcm"]
    assert list(ds.meta["image_id"]) == ids
    assert list(ds.meta["patient_id"]) == ids  # no patient information: each image is its own patient
    assert ds.task == "unlabelled" and ds.labels.shape == (5, 0) and ds.label_names == ()
    assert ds.channels == 1
    assert [ds.load(i).shape for i in range(5)] == [(1, 12, 12)] * 5
    assert ds.load(0).dtype == np.uint8 and ds.load(4).dtype == np.float32  # DICOM through the modality LUT


def test_existing_layouts_keep_their_format(tmp_path, folder):
    (folder / "labels.csv").write_text("file,label\nb.png,1\na.jpg,0\n")
    assert detect_format(folder) == "folder"  # one CSV at the top: the folder+CSV format, as before
    parent = tmp_path / "data"
    png(parent / "train" / "x.png")
    (parent / "train" / "labels.csv").write_text("file,label\nx.png,1\n")
    with pytest.raises(DataError):  # the parent of a folder+CSV dataset is not a plain image folder
        detect_format(parent)
    nih = tmp_path / "nih"
    png(nih / "00000001_000.png")
    (nih / "Data_Entry_2017_v2020.csv.gz").write_bytes(b"")
    assert detect_format(nih) != "images"


def test_no_images_is_a_clear_error(tmp_path):
    empty = tmp_path / "only_text"
    empty.mkdir()
    (empty / "notes.txt").write_text("x")
    with pytest.raises(DataError, match="no CSV and no image files"):
        detect_format(empty)
    with pytest.raises(DataError, match=r"no image files in .*only_text or its subfolders"):
        load_dataset(empty, format="images")
    with pytest.raises(DataError, match="takes a folder"):
        load_dataset(tmp_path / "only_text" / "notes.txt", format="images")


def test_labels_are_refused_and_a_broken_file_is_named(folder):
    with pytest.raises(DataError, match="no labels"):
        load_dataset(folder, options=SourceOptions(labels=("label",)))
    (folder / "b.png").write_bytes(b"\x89PNG\r\n\x1a\n broken")
    ds = load_dataset(folder)  # the first image that decodes gives the channels
    with pytest.raises(DataError, match=r"b\.png"):
        ds.load(1)


def test_mixed_colour_modes_read_with_the_majority(tmp_path):
    root = tmp_path / "mixed"
    for i in range(3):
        png(root / f"grey{i}.png", 40 * i)
    png(root / "colour.png", 50, rgb=True)
    ds = load_dataset(root)
    assert ds.channels == 1 and {ds.load(i).shape[0] for i in range(len(ds))} == {1}
    assert load_dataset(root, options=SourceOptions(channels=3)).load(0).shape == (3, 12, 12)
