"""MedNIST npz source: tiny files in its layout (``images``, ``labels``, ``class_names``, ``files``)."""

from __future__ import annotations

import zipfile
from pathlib import Path

import numpy as np
import pytest

from medtransfer.data.sources.base import SourceOptions
from medtransfer.data.sources.mednist import MedNIST
from medtransfer.errors import DataError

CLASSES = ["AbdomenCT", "BreastMRI", "CXR", "ChestCT", "Hand", "HeadCT"]
PER_CLASS = [5, 4, 6, 5, 7, 5]


def write_mednist(path: Path, files: bool = True, compressed: bool = True) -> Path:
    rng = np.random.default_rng(0)
    codes = np.repeat(np.arange(len(CLASSES)), PER_CLASS)
    codes = codes[rng.permutation(len(codes))]  # classes interleaved, as in the real file
    n = len(codes)
    images = rng.integers(0, 256, (n, 16, 16), dtype=np.uint8)
    images[:, 0, 0] = codes  # a class marker to check the filter picks the right images
    arrays = {"images": images, "labels": codes, "class_names": np.array(CLASSES)}
    if files:
        counters = dict.fromkeys(CLASSES, 0)
        names = []
        for c in codes:
            names.append(f"{CLASSES[c]}/{counters[CLASSES[c]]:06d}.jpeg")
            counters[CLASSES[c]] += 1
        arrays["files"] = np.array(names)
    (np.savez_compressed if compressed else np.savez)(path, **arrays)
    return path


def load(path: Path, **options):
    return MedNIST().load(path, SourceOptions(**options))


@pytest.fixture
def mednist_file(tmp_path) -> Path:
    return write_mednist(tmp_path / "mednist_16.npz")


def test_all_classes(mednist_file):
    ds = load(mednist_file)
    n = sum(PER_CLASS)
    assert ds.name == "mednist[all]"
    assert ds.task == "multiclass" and ds.label_names == tuple(CLASSES)
    assert len(ds) == n and ds.labels.shape == (n, 6) and ds.channels == 1
    assert ds.load(0).shape == (1, 16, 16)
    assert "source_split" not in ds.meta.columns  # MedNIST comes without splits
    np.testing.assert_array_equal(np.bincount(ds.class_index()), PER_CLASS)
    for i in range(n):
        assert ds.load(i)[0, 0, 0] == ds.class_index()[i]
        assert ds.meta["class"][i] == CLASSES[ds.class_index()[i]]
    assert ds.meta["image_id"].is_unique
    assert ds.meta["image_id"].str.match(r"^[A-Za-z]+/\d{6}$").all()
    assert (ds.meta["patient_id"] == ds.meta["image_id"]).all()


def test_single_class_filter_is_unlabelled(mednist_file):
    ds = load(mednist_file, classes=("CXR",))
    assert ds.name == "mednist[CXR]"
    assert ds.task == "unlabelled" and ds.label_names == () and ds.labels.shape == (6, 0)
    assert len(ds) == 6
    assert all(ds.load(i)[0, 0, 0] == CLASSES.index("CXR") for i in range(len(ds)))
    assert set(ds.meta["class"]) == {"CXR"}
    assert ds.meta["image_id"].str.startswith("CXR/").all()


def test_two_class_filter_keeps_given_order(mednist_file):
    ds = load(mednist_file, classes=("Hand", "CXR"))
    assert ds.task == "multiclass" and ds.label_names == ("Hand", "CXR")
    assert len(ds) == 7 + 6
    idx = ds.class_index()
    for i in range(len(ds)):
        assert ds.load(i)[0, 0, 0] == CLASSES.index(ds.label_names[idx[i]])
    assert ds.images.identity != load(mednist_file).images.identity


@pytest.mark.parametrize(("bad", "best"), [("Hnad", "Hand"), ("cxr", "CXR"), ("HeadCt", "HeadCT")])
def test_bad_class_name_did_you_mean(mednist_file, bad, best):
    with pytest.raises(DataError) as info:
        load(mednist_file, classes=("CXR", bad))
    msg = str(info.value)
    assert f"MedNIST has no class '{bad}'" in msg
    assert f"did you mean ['{best}'" in msg  # the closest match first
    assert "AbdomenCT" in msg  # lists the classes


def test_without_files_key(tmp_path):
    ds = load(write_mednist(tmp_path / "m.npz", files=False), classes=("Hand",))
    assert list(ds.meta["image_id"])[:2] == ["mednist-000000", "mednist-000001"]
    assert len(ds) == 7


def test_missing_keys(tmp_path):
    p = tmp_path / "m.npz"
    np.savez(p, images=np.zeros((2, 8, 8), np.uint8), labels=np.zeros(2))
    with pytest.raises(DataError, match=r"not a MedNIST npz \(missing \['class_names'\]"):
        load(p)
    np.savez(p, images=np.zeros((2, 8, 8), np.uint8), labels=np.zeros(3), class_names=np.array(["a", "b"]))
    with pytest.raises(DataError, match="2 images but 3 labels"):
        load(p)


def test_truncated_file(mednist_file):
    mednist_file.write_bytes(mednist_file.read_bytes()[:-200])
    with pytest.raises(DataError, match="cannot read"):
        load(mednist_file)


@pytest.mark.parametrize("compressed", [False, True])
def test_corrupt_member(tmp_path, compressed):
    path = tmp_path / "m.npz"
    codes = np.arange(60) % 6
    np.savez_compressed(
        path,
        images=(np.arange(60 * 16 * 16).reshape(60, 16, 16) % 7).astype(np.uint8),
        labels=codes,
        class_names=np.array(CLASSES),
    )
    if not compressed:
        with np.load(path) as z:
            np.savez(path, **{k: z[k] for k in z.files})
    with zipfile.ZipFile(path) as zf:
        info = zf.getinfo("images.npy")
    raw = bytearray(path.read_bytes())
    mid = info.header_offset + 30 + len(info.filename.encode()) + len(info.extra) + info.compress_size // 2
    raw[mid : mid + 16] = b"\xff" * 16  # a CRC error (stored) or a zlib error (deflated)
    path.write_bytes(bytes(raw))
    with pytest.raises(DataError, match="cannot read"):
        load(path)


def test_detect(tmp_path, mednist_file):
    assert MedNIST.detect(mednist_file)
    medmnist = tmp_path / "pneumoniamnist.npz"
    np.savez(medmnist, train_images=np.zeros((2, 8, 8), np.uint8), train_labels=np.zeros((2, 1)))
    assert not MedNIST.detect(medmnist)
    bad = tmp_path / "bad.npz"
    bad.write_bytes(b"garbage")
    assert not MedNIST.detect(bad)
    assert not MedNIST.detect(tmp_path / "nope.npz")
    renamed = tmp_path / "mednist.zip"
    renamed.write_bytes(mednist_file.read_bytes())
    assert not MedNIST.detect(renamed)  # only .npz files
