"""PneumoniaMNIST, MedNIST and the NIH ChestX-ray14 CSV from shared/data (skipped when absent)."""

from __future__ import annotations

import logging
import time

import numpy as np
import pandas as pd
import pytest

from medtransfer.data.sources.base import SourceOptions, detect_format, load_dataset
from medtransfer.data.splits import make_split

pytestmark = pytest.mark.integration

MEDNIST_CLASSES = ("AbdomenCT", "BreastMRI", "CXR", "ChestCT", "Hand", "HeadCT")


@pytest.fixture(scope="module")
def pneumonia(shared_data):
    path = shared_data / "pneumoniamnist" / "pneumoniamnist_trainval.npz"
    assert detect_format(path) == "medmnist"
    return load_dataset(path)


def test_pneumoniamnist_trainval(pneumonia):
    ds = pneumonia
    assert ds.name == "pneumoniamnist"
    assert ds.task == "binary" and ds.label_names == ("pneumonia",)
    assert len(ds) == 4_707 + 524 and ds.labels.shape == (5_231, 1)
    assert ds.meta["source_split"].value_counts().to_dict() == {"train": 4_707, "val": 524}
    train = ds.labels[ds.meta["source_split"] == "train", 0]
    val = ds.labels[ds.meta["source_split"] == "val", 0]
    assert (int(train.sum()), int((train == 0).sum())) == (3_494, 1_213)
    assert (int(val.sum()), int((val == 0).sum())) == (389, 135)
    img = ds.load(0)
    assert img.shape == (1, 28, 28) and img.dtype == np.uint8


def test_pneumoniamnist_split_keeps_val_and_carves_test_from_train(pneumonia):
    ds = pneumonia
    split = make_split(ds, seed=0)
    table = split.table
    source = ds.meta["source_split"].to_numpy()
    np.testing.assert_array_equal(table["split"].to_numpy() == "val", source == "val")  # val as given
    assert (source[table["split"].to_numpy() == "test"] == "train").all()  # test only from the file's train
    counts = split.counts()
    assert counts["val"] == 524 and counts["train"] + counts["test"] == 4_707
    assert abs(counts["test"] / 4_707 - 0.2 / 0.9) < 0.01  # test:train = 20:70
    assert table.groupby("patient_id")["split"].nunique().max() == 1  # no leakage
    # stratified carving: pneumonia prevalence of train and test stay close to the file's train prevalence
    prev = ds.labels[source == "train", 0].mean()
    for name in ("train", "test"):
        assert abs(ds.labels[split.indices(name), 0].mean() - prev) < 0.01
    small = ds.labels[split.train_subset(50), 0]
    assert 0 < small.sum() < 50


def test_mednist_cxr_only_is_unlabelled(shared_data):
    ds = load_dataset(shared_data / "mednist" / "mednist_64.npz", options=SourceOptions(classes=("CXR",)))
    assert len(ds) == 10_000
    assert ds.task == "unlabelled" and ds.labels.shape == (10_000, 0) and ds.label_names == ()
    assert set(ds.meta["class"]) == {"CXR"}
    assert ds.meta["image_id"].is_unique
    img = ds.load(9_999)
    assert img.shape == (1, 64, 64) and img.dtype == np.uint8


def test_mednist_all_classes(shared_data):
    path = shared_data / "mednist" / "mednist_64.npz"
    assert detect_format(path) == "mednist"
    ds = load_dataset(path)
    assert len(ds) == 58_954
    assert ds.task == "multiclass" and ds.label_names == MEDNIST_CLASSES
    counts = dict(zip(MEDNIST_CLASSES, ds.labels.sum(axis=0).astype(int).tolist(), strict=True))
    assert counts["BreastMRI"] == 8_954
    assert all(counts[c] == 10_000 for c in MEDNIST_CLASSES if c != "BreastMRI")
    assert ds.meta["image_id"].is_unique


@pytest.fixture
def restore_logging():
    """`main` configures the 'medtransfer' logger; put it back for the tests that follow."""
    logger = logging.getLogger("medtransfer")
    saved = (list(logger.handlers), logger.level, logger.propagate)
    yield
    logger.handlers[:], logger.level, logger.propagate = saved


def test_nih_cli_split(shared_data, tmp_path, capsys, restore_logging):
    """``medtransfer data split`` on the full NIH CSV: patient-grouped, 70/10/20, fast."""
    from medtransfer.cli import _state, main

    csv = shared_data / "nih_cxr14" / "Data_Entry_2017_v2020.csv.gz"
    out = tmp_path / "nih_split.csv"
    start = time.perf_counter()
    with pytest.raises(SystemExit) as info:
        main(["data", "split", str(csv), "--out", str(out)])
    elapsed = time.perf_counter() - start
    _state["debug"] = False
    _, err = capsys.readouterr()
    assert info.value.code in (0, None), err
    # the issue asks < 10 s on a quiet machine (measured 3.4 s); the margin keeps a busy CI box from flaking
    assert elapsed < 30, f"`medtransfer data split` on the NIH CSV took {elapsed:.1f} s"

    table = pd.read_csv(out, dtype={"image_id": str, "patient_id": str})
    assert len(table) == 112_120
    assert table["image_id"].is_unique
    assert table["patient_id"].nunique() == 30_805
    assert table.groupby("patient_id")["split"].nunique().max() == 1  # zero shared patients
    fractions = table["split"].value_counts(normalize=True)
    for name, target in {"train": 0.7, "val": 0.1, "test": 0.2}.items():
        assert abs(fractions[name] - target) <= 0.02, fractions.to_dict()
    ranks = table.loc[table["split"] == "train", "subset_rank"]
    assert sorted(ranks) == list(range(len(ranks)))
    assert {"in_n50", "in_n2000"} <= set(table.columns)
