"""FolderSource: a folder of tiny PNGs plus one CSV, written to tmp_path."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from medtransfer.data.sources.base import SourceOptions, load_dataset
from medtransfer.data.sources.folder import FolderSource
from medtransfer.errors import DataError


def write_pngs(root: Path, names: list[str]) -> None:
    """An 8×8 PNG per name whose pixels all equal the name's position in the list."""
    for k, name in enumerate(names):
        p = root / name
        p.parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(np.full((8, 8), k, dtype=np.uint8)).save(p)


def make_folder(root: Path, csv_text: str, images: list[str] | None = None) -> Path:
    """Write ``csv_text`` and a PNG for each image name (default: every name in the first column)."""
    root.mkdir(parents=True, exist_ok=True)
    (root / "labels.csv").write_text(csv_text)
    if images is None:
        images = [line.split(",")[0] for line in csv_text.strip().splitlines()[1:]]
    write_pngs(root, images)
    return root


def load(path: Path, **options) -> object:
    return load_dataset(path, format="folder", options=SourceOptions(**options))


def one_line_error(path: Path, **options) -> str:
    with pytest.raises(DataError) as err:
        load(path, **options)
    msg = str(err.value)
    assert "\n" not in msg
    return msg


def test_binary_from_label_column(tmp_path):
    root = make_folder(tmp_path / "d", "file,label,age\na.png,0,50\nb.png,1,61\nc.png,,70\n")
    ds = load(root)
    assert ds.task == "binary" and ds.label_names == ("label",)
    np.testing.assert_array_equal(ds.labels[:2, 0], [0, 1])
    assert np.isnan(ds.labels[2, 0])
    assert list(ds.meta["image_id"]) == ["a.png", "b.png", "c.png"]
    assert list(ds.meta["patient_id"]) == ["a.png", "b.png", "c.png"]  # no patient column: one per image
    assert list(ds.meta["age"]) == [50, 61, 70]
    assert ds.channels == 1 and ds.load(1).shape == (1, 8, 8) and ds.load(1)[0, 0, 0] == 1
    assert FolderSource.detect(root) and FolderSource.detect(root / "labels.csv")


def test_multiclass_string_labels_and_patient_column(tmp_path):
    csv = "filename,diagnosis,Patient ID\nx/a.png,pneumonia,007\nx/b.png,normal,007\nx/c.png,covid,8\n"
    root = make_folder(tmp_path / "d", csv)
    ds = load(root / "labels.csv", labels=("diagnosis",))
    assert ds.task == "multiclass" and ds.label_names == ("covid", "normal", "pneumonia")
    np.testing.assert_array_equal(ds.class_index(), [2, 1, 0])
    assert list(ds.meta["patient_id"]) == ["007", "007", "8"]  # read as text: leading zeros kept
    assert ds.meta["path"][0] == str(root / "x" / "a.png")


def test_numeric_classes_sort_numerically_and_images_subfolder(tmp_path):
    root = make_folder(tmp_path / "d", "image,grade\na.png,10\nb.png,2\nc.png,1\n", images=[])
    write_pngs(root / "images", ["a.png", "b.png", "c.png"])
    ds = load(root, labels=("grade",))
    assert ds.label_names == ("1", "2", "10")
    np.testing.assert_array_equal(ds.class_index(), [2, 1, 0])
    assert ds.meta["path"][0] == str(root / "images" / "a.png")


def test_absolute_paths_and_blank_patient_falls_back_to_image(tmp_path):
    write_pngs(tmp_path / "elsewhere", ["a.png", "b.png"])
    a, b = tmp_path / "elsewhere" / "a.png", tmp_path / "elsewhere" / "b.png"
    root = make_folder(tmp_path / "d", f"file,patient\n{a},P1\n{b},\n", images=[])
    ds = load(root, allow_outside=True)
    assert list(ds.meta["path"]) == [str(a), str(b)]
    assert list(ds.meta["patient_id"]) == ["P1", str(b)]


@pytest.mark.parametrize("name", ["../elsewhere/a.png", "images/../../elsewhere/a.png", "ABSOLUTE"])
def test_paths_that_leave_the_data_folder_are_refused_unless_allowed(tmp_path, name):
    write_pngs(tmp_path / "elsewhere", ["a.png"])
    name = str(tmp_path / "elsewhere" / "a.png") if name == "ABSOLUTE" else name
    root = make_folder(tmp_path / "d", f"file,label\nok.png,1\n{name},0\n", images=["ok.png"])
    err = one_line_error(root)
    assert "row 3" in err and "outside the data folder" in err and "data.allow_outside" in err
    assert len(load(root, allow_outside=True)) == 2


def test_a_symlink_inside_the_data_folder_is_not_outside(tmp_path):
    write_pngs(tmp_path / "store", ["a.png"])
    root = make_folder(tmp_path / "d", "file,label\nok.png,1\nlinked/a.png,0\n", images=["ok.png"])
    (root / "linked").symlink_to(tmp_path / "store")
    assert len(load(root)) == 2


def test_multilabel_with_unknowns(tmp_path, caplog):
    root = make_folder(tmp_path / "d", "file,effusion,mass\na.png,1,\nb.png,0.0,1\nc.png,,0\n")
    with caplog.at_level("WARNING"):
        ds = load(root, labels=("effusion", "mass"))
    # unknowns are said, with their count and rows (the header is row 1)
    assert "column 'mass' is empty or NaN in 1 of 3 rows (rows 2)" in caplog.text
    assert "column 'effusion' is empty or NaN in 1 of 3 rows (rows 4)" in caplog.text
    assert ds.task == "multilabel" and ds.label_names == ("effusion", "mass")
    np.testing.assert_array_equal(ds.labels, np.array([[1, np.nan], [0, 1], [np.nan, 0]], np.float32))


def test_unlabelled_when_no_label_column(tmp_path):
    ds = load(make_folder(tmp_path / "d", "path,site\na.png,A\nb.png,B\n"))
    assert ds.task == "unlabelled" and ds.labels.shape == (2, 0) and ds.label_names == ()
    assert list(ds.meta["site"]) == ["A", "B"]


def test_forced_task_is_checked(tmp_path):
    root = make_folder(tmp_path / "d", "file,label\na.png,0\nb.png,1\nc.png,2\n")
    assert load(root).task == "multiclass"
    assert "a binary task needs 0/1 values" in one_line_error(root, task="binary")
    ds = load(make_folder(tmp_path / "e", "file,label\na.png,0\nb.png,1\n"), task="multiclass")
    assert ds.task == "multiclass" and ds.label_names == ("0", "1")
    root = make_folder(tmp_path / "f", "file,effusion,mass\na.png,1,0\n")
    msg = one_line_error(root, labels=("effusion", "mass"), task="binary")
    assert "make a multilabel task, not binary" in msg


def test_missing_named_column_lists_columns(tmp_path):
    root = make_folder(tmp_path / "d", "file,diagnosis\na.png,x\n")
    msg = one_line_error(root, labels=("diagnosys",))
    assert "'diagnosys'" in msg and "did you mean ['diagnosis']" in msg and "['file', 'diagnosis']" in msg
    assert "'pid'" in one_line_error(root, patient_column="pid")


def test_no_image_column_lists_columns(tmp_path):
    root = make_folder(tmp_path / "d", "name,label\na.png,1\n", images=["a.png"])
    assert "['name', 'label']" in one_line_error(root)
    assert load(root, image_column="name").task == "binary"


def test_bad_multilabel_value_names_row_and_column(tmp_path):
    root = make_folder(tmp_path / "d", "file,effusion,mass\na.png,1,0\nb.png,0,1\nc.png,2,0\n")
    msg = one_line_error(root, labels=("effusion", "mass"))
    assert "row 4" in msg and "'effusion'" in msg and "'2'" in msg


def test_empty_folder_and_folder_without_csv(tmp_path):
    (tmp_path / "empty").mkdir()
    assert "empty" in one_line_error(tmp_path / "empty")
    write_pngs(tmp_path / "nocsv", ["a.png"])
    assert "no CSV file" in one_line_error(tmp_path / "nocsv")
    assert not FolderSource.detect(tmp_path / "nocsv")


def test_several_csvs_are_listed(tmp_path):
    root = make_folder(tmp_path / "d", "file\na.png\n")
    (root / "other.csv").write_text("file\na.png\n")
    assert "['labels.csv', 'other.csv']" in one_line_error(root)
    assert not FolderSource.detect(root)


def test_empty_csv(tmp_path):
    root = make_folder(tmp_path / "d", "file,label\n", images=[])
    assert "no rows" in one_line_error(root)
    (root / "labels.csv").write_text("")
    assert "is empty" in one_line_error(root)


def test_missing_images_are_counted(tmp_path):
    csv = "file,label\na.png,1\nb.png,0\nc.png,1\nd.png,0\n"
    root = make_folder(tmp_path / "d", csv, images=["a.png", "c.png"])
    msg = one_line_error(root)
    assert "2 of 4 images" in msg and "row 3" in msg and "'b.png', 'd.png'" in msg


def test_duplicate_rows(tmp_path):
    root = make_folder(tmp_path / "d", "file,label\na.png,1\nb.png,0\n./a.png,1\n", images=["a.png", "b.png"])
    msg = one_line_error(root)
    assert "rows 2 and 4" in msg and "a.png" in msg


def test_nih_entry_file_is_not_a_folder_source(tmp_path):
    (tmp_path / "Data_Entry_2017_v2020.csv").write_text("Image Index,Finding Labels,Patient ID\n")
    assert not FolderSource.detect(tmp_path / "Data_Entry_2017_v2020.csv")
    assert not FolderSource.detect(tmp_path)
