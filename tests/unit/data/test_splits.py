"""Patient-grouped, stratified splits; nested learning-curve subsets; saving, loading and leakage audits."""

from __future__ import annotations

import hashlib
import logging
from functools import partial

import numpy as np
import pandas as pd
import pytest

from medtransfer.data.dataset import GeneratedSource, ImageDataset, default_meta, one_hot
from medtransfer.data.duplicates import Duplicates
from medtransfer.data.splits import (
    DEFAULT_NS,
    SPLIT_NAMES,
    Split,
    SplitMismatch,
    audit_leakage,
    fingerprint_path,
    load_split,
    make_split,
    reseed_subsets,
)
from medtransfer.errors import DataError

N_IMAGES, N_PATIENTS = 2000, 600
FRACTIONS = {"train": 0.7, "val": 0.1, "test": 0.2}
PREVALENCE = np.array([0.4, 0.2, 0.1, 0.05, 0.02])


def images_per_patient(rng: np.random.Generator) -> np.ndarray:
    """1–6 images for each of 600 patients, 2,000 in all."""
    counts = rng.integers(1, 7, N_PATIENTS)
    while counts.sum() != N_IMAGES:
        step = 1 if counts.sum() < N_IMAGES else -1
        i = rng.integers(N_PATIENTS)
        if 1 <= counts[i] + step <= 6:
            counts[i] += step
    return counts


def noise(seed: int, i: int) -> np.ndarray:
    return np.random.default_rng([seed, i]).integers(0, 256, (1, 8, 8), dtype=np.uint8)


def synthetic(task: str, seed: int = 0, **meta_columns) -> ImageDataset:
    """2,000 tiny noise images (no two alike) from 600 patients; labels correlate within a patient, some unknown."""
    rng = np.random.default_rng(seed)
    counts = images_per_patient(rng)
    patient = np.repeat([f"P{i:04d}" for i in range(N_PATIENTS)], counts)
    perm = rng.permutation(N_IMAGES)  # a patient's images are not adjacent rows
    patient = patient[perm]
    pidx = np.array([int(p[1:]) for p in patient])
    if task == "binary":
        sick = rng.random(N_PATIENTS) < 0.3
        labels = np.where(rng.random(N_IMAGES) < 0.9, sick[pidx], ~sick[pidx]).astype(np.float32)[:, None]
        labels[rng.random(N_IMAGES) < 0.03] = np.nan
        names: tuple[str, ...] = ("lesion",)
    elif task == "multilabel":
        per_patient = rng.random((N_PATIENTS, len(PREVALENCE))) < PREVALENCE
        flip = rng.random((N_IMAGES, len(PREVALENCE))) < 0.05
        labels = (per_patient[pidx] ^ (flip & per_patient[pidx])).astype(np.float32)  # findings can fade
        labels[rng.random(labels.shape) < 0.02] = np.nan
        names = tuple(f"finding{k}" for k in range(len(PREVALENCE)))
    elif task == "multiclass":
        cls = rng.choice(4, N_PATIENTS, p=[0.5, 0.3, 0.15, 0.05])
        labels = one_hot(cls[pidx], 4)
        names = ("a", "b", "c", "d")
    else:
        labels, names = np.zeros((N_IMAGES, 0), np.float32), ()
    meta = default_meta(N_IMAGES, prefix="img-", patient_ids=patient)
    for col, values in meta_columns.items():
        meta[col] = values
    images = GeneratedSource(N_IMAGES, partial(noise, seed), identity=f"synthetic:{seed}")
    return ImageDataset("synthetic", images, labels, names, task, meta)


@pytest.fixture(scope="module")
def binary() -> ImageDataset:
    return synthetic("binary")


@pytest.fixture(scope="module")
def multilabel() -> ImageDataset:
    return synthetic("multilabel")


@pytest.fixture(scope="module")
def binary_split(binary) -> Split:
    return make_split(binary, seed=0)


@pytest.fixture(scope="module")
def multilabel_split(multilabel) -> Split:
    return make_split(multilabel, seed=0)


TASKS = ["binary", "multilabel", "multiclass", "unlabelled"]


@pytest.fixture(scope="module")
def splits() -> dict[str, tuple[ImageDataset, Split]]:
    out = {}
    for task in TASKS:
        ds = synthetic(task)
        out[task] = (ds, make_split(ds, seed=0))
    return out


@pytest.mark.parametrize("task", TASKS)
def test_no_patient_in_two_splits(splits, task):
    ds, split = splits[task]
    table = split.table
    assert list(table["image_id"]) == list(ds.meta["image_id"])  # rows follow the dataset
    assert set(table["split"]) == set(SPLIT_NAMES)
    assert table.groupby("patient_id")["split"].nunique().max() == 1
    sets = [set(table.loc[table["split"] == s, "patient_id"]) for s in SPLIT_NAMES]
    assert not (sets[0] & sets[1] or sets[0] & sets[2] or sets[1] & sets[2])
    assert sum(len(s) for s in sets) == N_PATIENTS


@pytest.mark.parametrize("task", TASKS)
def test_fractions_within_two_percent(splits, task):
    _, split = splits[task]
    counts = split.counts()
    assert sum(counts.values()) == N_IMAGES
    for name, frac in FRACTIONS.items():
        assert abs(counts[name] / N_IMAGES - frac) <= 0.02, (name, counts)
        assert len(split.indices(name)) == counts[name]


def prevalence(labels: np.ndarray) -> np.ndarray:
    with np.errstate(invalid="ignore"):
        return np.nanmean(labels, axis=0)


def patient_level_labels(task: str, seed: int) -> ImageDataset:
    """The synthetic dataset with labels constant within each patient and no unknowns."""
    ds = synthetic(task, seed=seed)
    rng = np.random.default_rng(seed + 100)
    _, patient = np.unique(ds.meta["patient_id"].to_numpy(), return_inverse=True)
    if task == "binary":
        labels = (rng.random(N_PATIENTS) < 0.3)[patient].astype(np.float32)[:, None]
    elif task == "multilabel":
        labels = (rng.random((N_PATIENTS, len(PREVALENCE))) < PREVALENCE)[patient].astype(np.float32)
    else:
        labels = ds.labels  # already one class per patient
    return ImageDataset(ds.name, ds.images, labels, ds.label_names, task, ds.meta)


@pytest.mark.parametrize("seed", [0, 1, 2])
@pytest.mark.parametrize("task", ["binary", "multiclass", "multilabel"])
def test_stratified_prevalence_per_split(task, seed):
    ds = patient_level_labels(task, seed)
    split = make_split(ds, seed=seed)
    overall = prevalence(ds.labels)
    # Multi-label strata follow each image's rarest finding, so the rarer findings (<= 10 %) are balanced
    # tightly; a common finding only among the patients with no rarer one.
    checked = overall <= 0.1 if task == "multilabel" else np.ones_like(overall, dtype=bool)
    for name in SPLIT_NAMES:
        per_split = prevalence(ds.labels[split.indices(name)])
        np.testing.assert_allclose(per_split[checked], overall[checked], atol=0.02, err_msg=f"{task} {name}")


@pytest.mark.parametrize("task", ["binary", "multilabel", "multiclass"])
def test_prevalence_per_split_with_noisy_labels(splits, task):
    """Labels varying within a patient, some unknown: every class in every split, roughly balanced."""
    ds, split = splits[task]
    overall = prevalence(ds.labels)
    for name in SPLIT_NAMES:
        rows = split.indices(name)
        assert (ds.labels[rows] == 1).any(axis=0).all()  # even the 2 % finding reaches every split
        assert (ds.labels[rows] == 0).any(axis=0).all()
        tolerance = 0.12 if name == "val" else 0.06  # val holds ~200 images
        np.testing.assert_allclose(prevalence(ds.labels[rows]), overall, atol=tolerance, err_msg=f"{task} {name}")


@pytest.mark.parametrize("task", ["binary", "multilabel", "multiclass", "unlabelled"])
def test_nested_subsets(splits, task):
    ds, split = splits[task]
    train = set(split.indices("train").tolist())
    ns = [n for n in DEFAULT_NS if n < len(train)]
    assert ns == [50, 100, 200, 500, 1000]  # 2000 is more than the ~1,400 training images
    previous: set[int] = set()
    for n in ns:
        subset = split.train_subset(n)
        assert len(subset) == n == len(set(subset.tolist()))
        assert set(subset.tolist()) <= train
        assert previous <= set(subset.tolist())  # N=50 ⊂ N=100 ⊂ ...
        previous = set(subset.tolist())
        np.testing.assert_array_equal(np.flatnonzero(split.table[f"in_n{n}"]), np.sort(subset))
    assert f"in_n{2000}" not in split.table.columns
    everything = split.train_subset(None)
    assert sorted(everything.tolist()) == sorted(train)
    np.testing.assert_array_equal(everything[:50], split.train_subset(50))
    ranks = split.table["subset_rank"].to_numpy()
    assert sorted(ranks[list(train)]) == list(range(len(train)))
    assert (np.delete(ranks, list(train)) == -1).all()
    with pytest.raises(DataError, match="training subset of 99999 images"):
        split.train_subset(99999)


@pytest.mark.parametrize("task", ["binary", "multilabel", "multiclass"])
def test_smallest_subset_holds_both_classes_of_every_label(splits, task):
    ds, split = splits[task]
    labels = ds.labels[split.train_subset(50)]
    assert ((labels == 1).any(axis=0)).all(), labels
    assert ((labels == 0).any(axis=0)).all(), labels


def test_subset_prevalence_follows_training_prevalence(binary, binary_split):
    train_prev = prevalence(binary.labels[binary_split.indices("train")])[0]
    for n in (200, 500, 1000):
        sub_prev = prevalence(binary.labels[binary_split.train_subset(n)])[0]
        assert abs(sub_prev - train_prev) < 0.04, (n, sub_prev, train_prev)


def test_seed_determinism(multilabel, multilabel_split):
    again = make_split(multilabel, seed=0)
    pd.testing.assert_frame_equal(again.table, multilabel_split.table)
    other = make_split(multilabel, seed=1)
    assert (other.table["split"] != multilabel_split.table["split"]).any()
    assert not np.array_equal(other.train_subset(50), multilabel_split.train_subset(50))


def test_custom_fractions_and_zero_val(binary):
    split = make_split(binary, fractions=(0.8, 0.0, 0.2), seed=3)
    counts = split.counts()
    assert counts["val"] == 0
    assert abs(counts["train"] / N_IMAGES - 0.8) <= 0.02


@pytest.mark.parametrize("fractions", [(0.7, 0.3), (0.7, -0.1, 0.4), (0.0, 0.5, 0.5), (0, 0, 0)])
def test_bad_fractions(binary, fractions):
    with pytest.raises(DataError, match="split fractions must be three non-negative numbers"):
        make_split(binary, fractions=fractions)


def test_source_splits_kept_and_missing_test_carved_from_train():
    ds = synthetic("binary")
    rng = np.random.default_rng(5)
    # the file's own split is by patient
    in_val = {p: rng.random() < 0.1 for p in ds.meta["patient_id"].unique()}
    source = np.where(ds.meta["patient_id"].map(in_val), "val", "train")
    ds = synthetic("binary", source_split=source)
    split = make_split(ds, seed=0)
    table = split.table
    # val is exactly the file's own val, untouched
    np.testing.assert_array_equal(table["split"].to_numpy() == "val", source == "val")
    # test came only out of the file's train
    test_ids = set(table.loc[table["split"] == "test", "image_id"])
    assert test_ids <= set(ds.meta.loc[source == "train", "image_id"])
    n_train_source = int((source == "train").sum())
    n_test = split.counts()["test"]
    assert abs(n_test / n_train_source - 0.2 / 0.9) <= 0.02  # test:train keeps the 20:70 ratio
    # the carving is by patient within the source train split
    carved = table[table["split"].isin(["train", "test"])]
    assert carved.groupby("patient_id")["split"].nunique().max() == 1


def test_source_splits_ignored_on_request():
    source = np.array(["train"] * N_IMAGES, dtype=object)
    ds = synthetic("binary", source_split=source)
    split = make_split(ds, seed=0, use_source_splits=False)
    assert all(abs(split.counts()[s] / N_IMAGES - f) <= 0.02 for s, f in FRACTIONS.items())


def test_source_splits_without_train_is_an_error():
    ds = synthetic("binary", source_split=np.array(["val"] * N_IMAGES))
    with pytest.raises(DataError, match="have no 'train'; pass use_source_splits=false"):
        make_split(ds)


def test_source_splits_with_all_three_kept_as_given():
    rng = np.random.default_rng(1)
    source = rng.choice(["train", "val", "test"], N_IMAGES, p=[0.5, 0.25, 0.25])
    ds = synthetic("unlabelled", source_split=source)
    one_per_patient = ds.meta.assign(patient_id=ds.meta["image_id"])
    ds = ImageDataset(ds.name, ds.images, ds.labels, ds.label_names, ds.task, one_per_patient)
    split = make_split(ds, seed=0)
    np.testing.assert_array_equal(split.table["split"].to_numpy(), source)


def test_save_and_load_round_trip(tmp_path, multilabel, multilabel_split):
    path = multilabel_split.save(tmp_path / "sub" / "split.csv")
    assert path.is_file() and sorted(p.name for p in path.parent.iterdir()) == ["split.csv", "split.dataset.json"]
    loaded = load_split(path, multilabel)
    pd.testing.assert_frame_equal(loaded.table, multilabel_split.table)
    np.testing.assert_array_equal(loaded.train_subset(100), multilabel_split.train_subset(100))


def test_load_split_aligns_to_dataset_order(tmp_path, binary, binary_split):
    path = binary_split.save(tmp_path / "split.csv")
    order = np.random.default_rng(0).permutation(N_IMAGES)  # the same images in another order
    shuffled = binary.subset(order)
    loaded = load_split(path, shuffled)
    assert list(loaded.table["image_id"]) == list(shuffled.meta["image_id"])
    np.testing.assert_array_equal(loaded.table["split"], binary_split.table["split"].to_numpy()[order])


def test_a_split_is_not_applied_to_other_images(tmp_path, binary, binary_split):
    path = binary_split.save(tmp_path / "split.csv")
    with pytest.raises(SplitMismatch, match="was made for other data"):  # a part of the data
        load_split(path, binary.subset(np.arange(300)))
    other = synthetic("binary", seed=99)  # the same ids (img-000000 ...), other images
    assert list(other.meta["image_id"]) == list(binary.meta["image_id"])
    with pytest.raises(SplitMismatch, match="their ids or content differ"):
        load_split(path, other)
    fingerprint_path(path).unlink()  # a hand-made split without a fingerprint: the ids alone decide
    assert len(load_split(path, other).table) == N_IMAGES


def test_load_split_missing_images(tmp_path, binary, binary_split):
    path = tmp_path / "split.csv"
    binary_split.table.iloc[:-5].to_csv(path, index=False)
    with pytest.raises(
        SplitMismatch, match=r"lists 1995 images, the data has 2000 \(5 of them not in the file, e.g. img-"
    ):
        load_split(path, binary)


def test_load_split_rejects_bad_files(tmp_path, binary, binary_split):
    with pytest.raises(DataError, match="split file not found"):
        load_split(tmp_path / "nope.csv", binary)
    bad = tmp_path / "bad.csv"
    binary_split.table.drop(columns=["subset_rank"]).to_csv(bad, index=False)
    with pytest.raises(DataError, match="is not a split file"):
        load_split(bad, binary)
    binary_split.table.assign(split="training").to_csv(bad, index=False)
    with pytest.raises(DataError, match=r"unknown split name\(s\) \['training'\]"):
        load_split(bad, binary)
    pd.concat([binary_split.table, binary_split.table.iloc[:1]]).to_csv(bad, index=False)
    with pytest.raises(DataError, match="image ids repeat"):
        load_split(bad, binary)
    bad.write_text("")
    with pytest.raises(DataError, match="cannot read split file"):
        load_split(bad, binary)


def test_audit_leakage_raises_on_leaking_table(tmp_path, binary, binary_split):
    table = pd.DataFrame(
        {
            "image_id": ["a", "b", "c", "d"],
            "patient_id": ["p1", "p1", "p2", "p3"],
            "split": ["train", "test", "val", "train"],
        }
    )
    with pytest.raises(DataError, match=r"patient leakage: 1 patient\(s\) .* \['p1'\]"):
        audit_leakage(table)
    audit_leakage(table.assign(split=["train", "train", "val", "test"]))  # no leak: no error
    with pytest.raises(DataError, match=r"\(e.g. \['p1'\]\)"):  # plain ids, not np.str_('p1')
        audit_leakage(table.assign(patient_id=np.array(["p1", "p1", "p2", "p3"])))
    # a split file edited into leaking is refused on load too
    leaking = binary_split.table.copy()
    pid = leaking["patient_id"].iloc[0]
    rows = np.flatnonzero(leaking["patient_id"] == pid)
    if len(rows) == 1:
        leaking.loc[1, "patient_id"] = pid
        rows = np.array([0, 1])
    leaking.loc[rows[0], "split"] = "train"
    leaking.loc[rows[1], "split"] = "test"
    path = tmp_path / "leak.csv"
    leaking.to_csv(path, index=False)
    with pytest.raises(DataError, match="patient leakage"):
        load_split(path, binary)


def test_split_indices_rejects_unknown_name(binary_split):
    with pytest.raises(DataError, match="unknown split 'validation'"):
        binary_split.indices("validation")


def test_balanced_subsets_hold_each_class_equally_and_stay_nested(binary, binary_split):
    labels = binary.labels
    previous: set[int] = set()
    for n in (20, 50, 100):
        idx = binary_split.train_subset(n, balance_labels=labels)
        assert len(idx) == n and len(set(idx)) == n
        assert set(idx) <= set(binary_split.indices("train"))
        positives = int(np.nansum(labels[idx, 0]))
        assert abs(positives - (n - positives)) <= 1  # a skewed pool gives equal halves
        assert previous <= set(idx)  # a smaller balanced subset lies inside a larger one
        previous = set(idx)


def test_balancing_fills_up_when_a_class_runs_out(binary, binary_split):
    train = binary_split.indices("train")
    minority = int(min(np.nansum(binary.labels[train, 0]), len(train) - np.nansum(binary.labels[train, 0])))
    n = min(len(train), 2 * minority + 10)
    idx = binary_split.train_subset(n, balance_labels=binary.labels)
    assert len(idx) == n


# --------------------------------------------------------------------------- duplicate images (data.dedupe)
# The split CSVs these datasets gave before duplicates were grouped (sha1 of the file): without a duplicate the
# split must stay the same file, so studies and split files made before keep their meaning.
BEFORE_DEDUPE = {
    ("binary", 0): "656343aac8fd169da34ca447b8573b28d5749c05",
    ("binary", 3): "5518085bd2b403d29e2b0ca6db7bc79f0272fe50",
    ("multilabel", 0): "815ede4e63b95e536b28e4bcb1caec96da5bf8a3",
}


@pytest.mark.parametrize(("task", "seed"), list(BEFORE_DEDUPE))
def test_without_duplicates_the_split_file_is_the_one_made_before(task, seed):
    ds = synthetic(task)
    split = make_split(ds, seed=seed)  # dedupe on: the noise images are hashed and none is a copy
    assert split.audit["dedupe"] and split.audit["groups"] == 0 and "group_id" not in split.table.columns
    assert hashlib.sha1(split.table.to_csv(index=False).encode()).hexdigest() == BEFORE_DEDUPE[task, seed]
    pd.testing.assert_frame_equal(split.table, make_split(ds, seed=seed, dedupe=False).table)


def small(n: int = 40, patients: np.ndarray | None = None, copies: dict[int, int] | None = None, **meta_columns):
    """``n`` noise images with labels 0/1; ``copies`` maps an image to the earlier image it is a copy of."""
    copies = copies or {}
    images = GeneratedSource(n, lambda i: noise(7, copies.get(i, i)), identity=f"small:{n}:{sorted(copies.items())}")
    labels = (np.arange(n) % 2).astype(np.float32)[:, None]
    meta = default_meta(n, prefix="s-", patient_ids=patients)
    for col, values in meta_columns.items():
        meta[col] = values
    return ImageDataset("small", images, labels, ("lesion",), "binary", meta)


def linked(n: int, rows: list[int]) -> Duplicates:
    """A duplicate table in which ``rows`` are one group."""
    group = np.arange(n)
    group[rows] = min(rows)
    return Duplicates(group, np.zeros(n, np.uint64), np.zeros(n, np.uint64), np.ones(n, bool))


def test_copies_are_hashed_once_and_kept_in_one_split(tmp_path):
    plain = small(copies={7: 3, 20: 3, 31: 12})  # image 3 three times, image 12 twice: exact copies
    calls = []
    counting = GeneratedSource(len(plain), lambda i: calls.append(i) or plain.images.load(i), plain.images.identity)
    ds = ImageDataset(plain.name, counting, plain.labels, plain.label_names, plain.task, plain.meta)
    split = make_split(ds, seed=0, cache_dir=tmp_path)
    table = split.table
    assert table.loc[[3, 7, 20], "split"].nunique() == 1 and table.loc[[12, 31], "split"].nunique() == 1
    assert list(table.loc[[3, 7, 20, 31], "group_id"]) == ["s-000003"] * 3 + ["s-000012"]
    assert split.audit == {
        "patient_ids": False, "dedupe": True, "groups": 2, "images": 5, "joined": 2, "across_source_splits": 0
    }  # fmt: skip
    assert len(calls) == len(ds)
    again = make_split(ds, seed=0, cache_dir=tmp_path)  # the hash table is kept: nothing decoded again
    assert len(calls) == len(ds)
    pd.testing.assert_frame_equal(again.table, table)


def test_a_duplicate_joins_the_groups_of_its_patients():
    patients = np.repeat([f"P{k}" for k in range(20)], 2)  # two images each
    ds = small(patients=patients)
    rows = [1, 10, 21]  # images of P0, P5 and P10 are copies of one another
    split = make_split(ds, seed=0, duplicates=linked(len(ds), rows))
    table = split.table
    joined = table["patient_id"].isin(["P0", "P5", "P10"])
    assert table.loc[joined, "split"].nunique() == 1  # all six images of the three patients
    assert set(table.loc[joined, "group_id"]) == {"P0"}
    assert (table.loc[~joined, "group_id"] == table.loc[~joined, "patient_id"]).all()
    assert split.audit["joined"] == 1 and split.audit["patient_ids"]
    assert table.groupby("patient_id")["split"].nunique().max() == 1


def test_a_group_edited_into_two_splits_is_refused_on_load(tmp_path):
    ds = small()
    split = make_split(ds, seed=0, duplicates=linked(len(ds), [0, 5, 9]))
    path = split.save(tmp_path / "split.csv")
    pd.testing.assert_frame_equal(load_split(path, ds).table, split.table)  # the group_id column comes back
    edited = split.table.copy()
    edited.loc[5, "split"] = next(s for s in SPLIT_NAMES if s != edited.loc[0, "split"])
    edited.to_csv(path, index=False)
    with pytest.raises(DataError, match=r"duplicate leakage: 1 group\(s\) .* \['s-000000'\]"):
        load_split(path, ds)


def test_groups_across_the_files_own_splits_are_counted_not_moved(tmp_path, caplog):
    source = np.array(["train"] * 30 + ["val"] * 5 + ["test"] * 5, dtype=object)
    ds = small(source_split=source)
    with caplog.at_level(logging.WARNING, logger="medtransfer.data.splits"):
        split = make_split(ds, seed=0, duplicates=linked(len(ds), [2, 37]))  # a train image copied into test
    np.testing.assert_array_equal(split.table["split"].to_numpy(), source)  # nothing moved
    assert split.audit["across_source_splits"] == 1
    assert "1 group(s) of duplicate images lie in more than one of the file's own" in caplog.text
    path = split.save(tmp_path / "split.csv")
    assert load_split(path, ds).audit["across_source_splits"] == 1  # loads: the file put them there
    # other data (an external test file, as evaluate tries the run's own split first) is a mismatch, not a leak
    other = small(n=12, source_split=np.array(["test"] * 12, dtype=object))
    with pytest.raises(SplitMismatch):
        load_split(path, other)


def test_reseeded_subsets_keep_the_groups():
    ds = small()
    split = make_split(ds, seed=0, duplicates=linked(len(ds), [0, 5]))
    again = reseed_subsets(split, ds, seed=4)
    pd.testing.assert_series_equal(again.table["group_id"], split.table["group_id"])
    assert not split.audit["patient_ids"] and again.audit == split.audit
