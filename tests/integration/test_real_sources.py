"""Folder and NIH sources on the real files in shared/data (skipped when that folder is absent)."""

from __future__ import annotations

import time

import numpy as np
import pytest

from medtransfer.data.readers import image_size
from medtransfer.data.sources.base import detect_format, load_dataset

pytestmark = pytest.mark.integration


def test_mednist_folder_sample(shared_data):
    root = shared_data / "mednist_folder_sample"
    assert detect_format(root) == "folder"
    ds = load_dataset(root)
    assert ds.task == "multiclass" and len(ds) == 600
    assert ds.label_names == ("AbdomenCT", "BreastMRI", "CXR", "ChestCT", "Hand", "HeadCT")
    np.testing.assert_array_equal(ds.labels.sum(axis=0), [100] * 6)
    img = ds.load(0)
    assert img.shape == (1, 64, 64) and img.dtype == np.uint8


def test_nih_cxr14_csv(shared_data):
    csv = shared_data / "nih_cxr14" / "Data_Entry_2017_v2020.csv.gz"
    start = time.perf_counter()
    ds = load_dataset(csv)
    elapsed = time.perf_counter() - start
    assert elapsed < 15, f"loading the NIH CSV took {elapsed:.1f} s"  # ~1 s on a quiet machine
    assert len(ds) == 112_120 and ds.meta["patient_id"].nunique() == 30_805 and len(ds.label_names) == 14
    assert ds.info["n_images_found"] == 2 and ds.info["n_images_missing"] == 112_118
    assert not np.isnan(ds.labels).any()
    i = int(np.flatnonzero(ds.meta["image_id"] == "00000001_000.png")[0])
    assert ds.labels[i, ds.label_names.index("Cardiomegaly")] == 1 and ds.labels[i].sum() == 1
    img = ds.load(i)
    # NIH's originals are 1024×1024; the copies kept in shared/data are downsampled to 512×512.
    assert img.shape == (1, *image_size(shared_data / "nih_cxr14" / "00000001_000.png")) == (1, 512, 512)
    assert img.dtype == np.uint8
