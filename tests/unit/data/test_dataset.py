"""The data contract: validation, immutable subset/select_labels, one_hot, ArraySource."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from medtransfer.data.dataset import (
    ArraySource,
    FileSource,
    GeneratedSource,
    ImageDataset,
    default_meta,
    one_hot,
)
from medtransfer.errors import DataError


def make_ds(n: int = 16, k: int = 2, task: str = "multilabel", rng=None, **changes) -> ImageDataset:
    """16 random 1×32×32 uint8 images, N×K labels with some NaN, patients of two images each."""
    rng = rng or np.random.default_rng(0)
    images = rng.integers(0, 256, (n, 32, 32), dtype=np.uint8)
    labels = rng.integers(0, 2, (n, k)).astype(np.float32)
    if k:
        labels[::5, 0] = np.nan
    meta = default_meta(n, prefix="img-", patient_ids=[f"p{i // 2}" for i in range(n)])
    meta["extra"] = np.arange(n) * 10
    kwargs = dict(
        name="tiny",
        images=ArraySource(images, "tiny"),
        labels=labels,
        label_names=tuple(f"l{j}" for j in range(k)),
        task=task,
        meta=meta,
    )
    kwargs.update(changes)
    return ImageDataset(**kwargs)


def test_valid_dataset_properties():
    ds = make_ds()
    assert len(ds) == 16 and ds.num_labels == 2 and ds.channels == 1
    assert ds.load(3).shape == (1, 32, 32)
    np.testing.assert_array_equal(ds.load(3)[0], ds.images.array[3])


def test_label_rows_mismatch():
    with pytest.raises(DataError, match=r"tiny: labels must be \(N=16, K\), got \(15, 2\)"):
        make_ds(labels=np.zeros((15, 2), np.float32))
    with pytest.raises(DataError, match="labels must be"):
        make_ds(labels=np.zeros(16, np.float32))  # 1-D labels


def test_label_columns_vs_names_mismatch():
    with pytest.raises(DataError, match="3 label columns but 2 names"):
        make_ds(labels=np.zeros((16, 3), np.float32))


def test_meta_rows_mismatch():
    with pytest.raises(DataError, match="metadata has 15 rows for 16 images"):
        make_ds(meta=default_meta(15))


@pytest.mark.parametrize("column", ["patient_id", "image_id"])
def test_missing_meta_column(column):
    meta = default_meta(16).drop(columns=[column])
    with pytest.raises(DataError, match=f"lacks the '{column}' column"):
        make_ds(meta=meta)


@pytest.mark.parametrize("task", ["binary", "multiclass", "multilabel"])
def test_labels_must_be_0_1_or_nan(task):
    k = 1 if task == "binary" else 3
    labels = np.zeros((16, k), np.float32)
    labels[2, 0] = 2.0
    with pytest.raises(DataError, match=f"labels must be 0, 1 or NaN for a {task} task"):
        make_ds(k=k, task=task, labels=labels)
    labels[2, 0] = -1.0
    with pytest.raises(DataError, match="labels must be 0, 1 or NaN"):
        make_ds(k=k, task=task, labels=labels)
    labels[2, 0] = np.nan  # NaN means unknown and is fine
    assert make_ds(k=k, task=task, labels=labels).labels.shape == (16, k)


def test_unknown_task_and_empty_dataset():
    with pytest.raises(DataError, match="unknown task 'regresion'"):
        make_ds(task="regresion")
    with pytest.raises(DataError, match="no images"):
        ImageDataset(
            "empty",
            ArraySource(np.zeros((0, 8, 8), np.uint8), "e"),
            np.zeros((0, 0), np.float32),
            (),
            "unlabelled",
            default_meta(0),
        )


def test_unlabelled_dataset_has_zero_label_columns():
    ds = make_ds(k=0, task="unlabelled", labels=np.zeros((16, 0), np.float32))
    assert ds.num_labels == 0 and ds.labels.shape == (16, 0)


def test_subset_returns_aligned_new_dataset():
    ds = make_ds()
    idx = [9, 2, 14, 2]
    sub = ds.subset(idx, name="sub")
    assert sub is not ds and sub.name == "sub" and len(sub) == 4
    np.testing.assert_array_equal(sub.labels, ds.labels[idx])
    assert list(sub.meta["image_id"]) == [f"img-{i:06d}" for i in idx]
    assert list(sub.meta["extra"]) == [i * 10 for i in idx]
    assert list(sub.meta.index) == [0, 1, 2, 3]  # a fresh index, so row i of meta is image i
    for j, i in enumerate(idx):
        np.testing.assert_array_equal(sub.load(j), ds.load(i))
    # nested subsets index into the subset, not the parent
    subsub = sub.subset([1, 0])
    np.testing.assert_array_equal(subsub.load(0), ds.load(2))
    np.testing.assert_array_equal(subsub.load(1), ds.load(9))
    assert list(subsub.meta["image_id"]) == ["img-000002", "img-000009"]
    # the original is untouched
    assert len(ds) == 16 and len(ds.meta) == 16 and ds.name == "tiny"
    assert sub.images.identity != ds.images.identity != subsub.images.identity


def test_select_labels_returns_new_dataset_in_given_order():
    ds = make_ds(k=3)
    sel = ds.select_labels(["l2", "l0"])
    assert sel.label_names == ("l2", "l0") and sel.task == "multilabel"
    np.testing.assert_array_equal(sel.labels, ds.labels[:, [2, 0]])
    assert ds.label_names == ("l0", "l1", "l2") and ds.labels.shape == (16, 3)
    one = ds.select_labels(["l1"])
    assert one.task == "binary" and one.labels.shape == (16, 1)
    with pytest.raises(DataError, match=r"unknown label\(s\) \['l9'\]; available: \['l0', 'l1', 'l2'\]"):
        ds.select_labels(["l1", "l9"])


def test_one_hot_with_unknown_rows():
    out = one_hot(np.array([2, 0, -1, 1]), 3)
    assert out.dtype == np.float32 and out.shape == (4, 3)
    np.testing.assert_array_equal(out[[0, 1, 3]], [[0, 0, 1], [1, 0, 0], [0, 1, 0]])
    assert np.isnan(out[2]).all()


def test_class_index_for_multiclass():
    labels = one_hot(np.array([2, 0, -1, 1] * 4), 3)
    ds = make_ds(k=3, task="multiclass", labels=labels)
    np.testing.assert_array_equal(ds.class_index()[:4], [2, 0, -1, 1])
    with pytest.raises(ValueError):
        make_ds().class_index()


def test_default_meta_falls_back_to_image_id():
    meta = default_meta(3, prefix="x-")
    assert list(meta["image_id"]) == ["x-000000", "x-000001", "x-000002"]
    assert list(meta["patient_id"]) == list(meta["image_id"])
    assert list(default_meta(2, patient_ids=["a", "a"])["patient_id"]) == ["a", "a"]


def test_array_source_nhw(rng):
    arr = rng.integers(0, 256, (5, 6, 7), dtype=np.uint8)
    src = ArraySource(arr, "a")
    assert len(src) == 5 and src.channels == 1
    img = src.load(4)
    assert img.shape == (1, 6, 7) and img.dtype == np.uint8
    np.testing.assert_array_equal(img[0], arr[4])
    assert src.describe(4) == "a[4]"


def test_array_source_nhwc(rng):
    arr = rng.integers(0, 65535, (5, 6, 7, 3), dtype=np.uint16)
    src = ArraySource(arr, "rgb")
    assert src.channels == 3
    img = src.load(2)
    assert img.shape == (3, 6, 7) and img.dtype == np.uint16
    for c in range(3):
        np.testing.assert_array_equal(img[c], arr[2, :, :, c])


def test_array_source_rejects_other_shapes():
    with pytest.raises(DataError, match=r"expected images of shape \(N, H, W\) or \(N, H, W, C\)"):
        ArraySource(np.zeros((4, 4), np.uint8), "flat")


def test_array_source_identity_follows_content(rng):
    arr = rng.integers(0, 256, (4, 8, 8), dtype=np.uint8)
    same = ArraySource(arr.copy(), "a").identity
    assert ArraySource(arr, "a").identity == same
    changed = arr.copy()
    changed[0, 0, 0] ^= 1
    assert ArraySource(changed, "a").identity != same


def test_file_and_generated_sources(tmp_path):
    paths = [tmp_path / f"{i}.raw" for i in range(3)]
    src = FileSource(paths, lambda p: np.full((1, 2, 2), int(p.stem), np.uint8))
    assert len(src) == 3 and src.load(2)[0, 0, 0] == 2 and src.describe(1) == str(paths[1])
    assert FileSource(paths[:2], src.reader).identity != src.identity
    gen = GeneratedSource(3, lambda i: np.full((1, 2, 2), i, np.uint8), identity="gen:3")
    assert gen.load(1)[0, 0, 0] == 1 and gen.identity == "gen:3"
    with pytest.raises(IndexError):
        gen.load(3)


def test_meta_with_custom_index_is_accepted_and_subset_realigns():
    ds = make_ds()
    meta = ds.meta.copy()
    meta.index = pd.RangeIndex(100, 116)
    ds2 = make_ds(meta=meta)
    assert list(ds2.subset([0, 1]).meta.index) == [0, 1]
