"""MedMNIST npz source: tiny files in the MedMNIST v2 layout (``{split}_images``, ``{split}_labels``)."""

from __future__ import annotations

import zipfile
from pathlib import Path

import numpy as np
import pytest

from medtransfer.data.sources.base import SourceOptions
from medtransfer.data.sources.medmnist import LABEL_NAMES, MedMNIST
from medtransfer.errors import DataError

SIZES = {"train": 20, "val": 6, "test": 8}


def write_medmnist(
    path: Path,
    labels_of,
    splits=("train", "val", "test"),
    rgb: bool = False,
    compressed: bool = False,
    seed: int = 0,
) -> Path:
    """A tiny MedMNIST-layout npz; ``labels_of(n, rng)`` makes an (n, k) integer label array per split."""
    rng = np.random.default_rng(seed)
    arrays = {}
    for s in splits:
        n = SIZES[s]
        shape = (n, 28, 28, 3) if rgb else (n, 28, 28)
        arrays[f"{s}_images"] = rng.integers(0, 256, shape, dtype=np.uint8)
        arrays[f"{s}_labels"] = labels_of(n, rng)
    (np.savez_compressed if compressed else np.savez)(path, **arrays)
    return path


def binary_labels(n, rng):
    return np.r_[0, 1, rng.integers(0, 2, n - 2)].reshape(n, 1).astype(np.uint8)


def blood_labels(n, rng):
    return (np.arange(n) % 8).reshape(n, 1).astype(np.uint8)


def chest_labels(n, rng):
    return (rng.random((n, 14)) < 0.3).astype(np.uint8)


def load(path: Path, **options) -> object:
    return MedMNIST().load(path, SourceOptions(**options))


def corrupt_member(path: Path, member: str) -> None:
    """Overwrite bytes in the middle of one member's data; the zip directory stays intact."""
    with zipfile.ZipFile(path) as zf:
        info = zf.getinfo(member)
    raw = bytearray(path.read_bytes())
    start = info.header_offset + 30 + len(info.filename.encode()) + len(info.extra)
    mid = start + info.compress_size // 2
    raw[mid : mid + 16] = b"\xff" * 16
    path.write_bytes(bytes(raw))


def test_binary_pneumonia_like(tmp_path):
    path = write_medmnist(tmp_path / "pneumoniamnist.npz", binary_labels)
    ds = load(path)
    n = sum(SIZES.values())
    assert ds.name == "pneumoniamnist"
    assert ds.task == "binary" and ds.label_names == ("pneumonia",)
    assert ds.labels.shape == (n, 1) and ds.labels.dtype == np.float32
    assert set(np.unique(ds.labels)) == {0.0, 1.0}
    assert len(ds) == n and ds.channels == 1
    assert ds.load(0).shape == (1, 28, 28) and ds.load(0).dtype == np.uint8
    assert list(ds.meta["source_split"]) == ["train"] * 20 + ["val"] * 6 + ["test"] * 8
    assert ds.info["source_splits"] == SIZES
    assert ds.meta["image_id"].is_unique and ds.meta["image_id"].iloc[0] == "pneumoniamnist-000000"
    assert (ds.meta["patient_id"] == ds.meta["image_id"]).all()  # MedMNIST has no patient ids
    with np.load(path) as z:  # rows follow train, then val, then test
        np.testing.assert_array_equal(ds.load(20)[0], z["val_images"][0])
        np.testing.assert_array_equal(ds.labels[26:, 0], z["test_labels"][:, 0])


def test_trainval_file_and_size_suffix(tmp_path):
    path = write_medmnist(tmp_path / "pneumoniamnist_224_trainval.npz", binary_labels, splits=("train", "val"))
    ds = load(path)
    assert ds.name == "pneumoniamnist" and ds.label_names == ("pneumonia",)
    assert ds.meta["source_split"].value_counts().to_dict() == {"train": 20, "val": 6}
    assert "test" not in ds.info["source_splits"]


def test_multiclass_blood_like(tmp_path):
    path = write_medmnist(tmp_path / "bloodmnist.npz", blood_labels, rgb=True)
    ds = load(path)
    n = sum(SIZES.values())
    assert ds.task == "multiclass"
    assert ds.label_names == tuple(f"class_{i}" for i in range(8))  # no name table for this flag
    assert ds.labels.shape == (n, 8)
    np.testing.assert_array_equal(ds.labels.sum(axis=1), np.ones(n))
    np.testing.assert_array_equal(ds.class_index()[:10], np.arange(10) % 8)
    assert ds.channels == 3 and ds.load(5).shape == (3, 28, 28)
    with np.load(path) as z:
        np.testing.assert_array_equal(ds.load(5), np.moveaxis(z["train_images"][5], -1, 0))


def test_multilabel_chest_like(tmp_path):
    path = write_medmnist(tmp_path / "chestmnist_64.npz", chest_labels)
    ds = load(path)
    assert ds.task == "multilabel"
    assert ds.label_names == LABEL_NAMES["chestmnist"] and len(ds.label_names) == 14
    assert ds.labels.shape == (sum(SIZES.values()), 14)
    with np.load(path) as z:
        np.testing.assert_array_equal(ds.labels[:20], z["train_labels"])


def test_unknown_flag_multilabel_gets_generic_names(tmp_path):
    ds = load(write_medmnist(tmp_path / "mystery.npz", lambda n, rng: (rng.random((n, 3)) < 0.5).astype(np.uint8)))
    assert ds.label_names == ("label_0", "label_1", "label_2")


def test_task_option(tmp_path):
    blood = write_medmnist(tmp_path / "bloodmnist.npz", blood_labels)
    with pytest.raises(DataError, match="labels take 8 values .* a binary task needs 0/1"):
        load(blood, task="binary")
    forced = load(write_medmnist(tmp_path / "breastmnist.npz", binary_labels), task="multiclass")
    assert forced.task == "multiclass" and forced.labels.shape[1] == 2


def test_negative_or_non_binary_multilabel_labels(tmp_path):
    with pytest.raises(DataError, match="negative class labels"):
        load(write_medmnist(tmp_path / "a.npz", lambda n, rng: np.full((n, 1), -1)))
    with pytest.raises(DataError, match="multi-label columns must hold 0/1"):
        load(write_medmnist(tmp_path / "b.npz", lambda n, rng: np.full((n, 3), 2)))


def test_structural_problems(tmp_path):
    images = np.zeros((4, 28, 28), np.uint8)
    p = tmp_path / "x.npz"
    np.savez(p, train_images=images)
    with pytest.raises(DataError, match="'train_images' has no matching 'train_labels'"):
        load(p)
    np.savez(p, train_images=images, train_labels=np.zeros((3, 1)))
    with pytest.raises(DataError, match="train has 4 images but 3 labels"):
        load(p)
    np.savez(p, train_images=images.astype(np.float32), train_labels=np.zeros((4, 1)))
    with pytest.raises(DataError, match="images must be uint8, got float32"):
        load(p)
    np.savez(p, images=images, labels=np.zeros(4))
    with pytest.raises(DataError, match="has no train_images/val_images/test_images"):
        load(p)


def test_truncated_file_is_a_data_error(tmp_path):
    path = write_medmnist(tmp_path / "pneumoniamnist.npz", binary_labels)
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    with pytest.raises(DataError, match=r"cannot read .*pneumoniamnist.npz.*complete MedMNIST"):
        load(path)


@pytest.mark.parametrize("compressed", [False, True])
def test_corrupt_member_is_a_data_error(tmp_path, compressed):
    """The zip directory is intact but an array's bytes are damaged (a CRC or zlib error): DataError."""

    def smooth_labels(n, rng):
        return np.zeros((n, 1), np.uint8)

    path = tmp_path / "pneumoniamnist.npz"
    arrays = {
        "train_images": (np.arange(20 * 28 * 28).reshape(20, 28, 28) % 7).astype(np.uint8),
        "train_labels": smooth_labels(20, None),
    }
    (np.savez_compressed if compressed else np.savez)(path, **arrays)
    corrupt_member(path, "train_images.npy")
    assert MedMNIST.detect(path)  # the directory still lists the arrays
    with pytest.raises(DataError, match=r"cannot read .*pneumoniamnist.npz"):
        load(path)


def test_detect(tmp_path):
    good = write_medmnist(tmp_path / "pneumoniamnist.npz", binary_labels)
    assert MedMNIST.detect(good)
    mednist = tmp_path / "mednist.npz"
    np.savez(mednist, images=np.zeros((2, 8, 8), np.uint8), labels=np.zeros(2), class_names=np.array(["a"]))
    assert not MedMNIST.detect(mednist)
    npy = tmp_path / "arr.npy"
    np.save(npy, np.zeros(3))
    assert not MedMNIST.detect(npy)
    text = tmp_path / "fake.npz"
    text.write_text("not a zip")
    assert not MedMNIST.detect(text)
    truncated = tmp_path / "trunc.npz"
    truncated.write_bytes(good.read_bytes()[:100])
    assert not MedMNIST.detect(truncated)
    assert not MedMNIST.detect(tmp_path / "missing.npz")
    folder = tmp_path / "folder.npz"
    folder.mkdir()
    assert not MedMNIST.detect(folder)
