"""Patient-grouped, label-stratified splits and nested learning-curve subsets.

* :func:`make_split` assigns whole patients to train/val/test (default 70/10/20 of the images), stratified by
  each patient's label profile, seeded. Splits that came with the file (MedMNIST ``train/val/test``) are kept
  when ``use_source_splits`` is set; a missing split is carved out of the source's training split.
* Nested subsets: the training images get a ``subset_rank``; the subset of size N is ``subset_rank < N``, so
  the N=50 set is contained in the N=100 set, and so on. The order interleaves strata in proportion to their
  size (every prefix is stratified) and puts one positive and one negative of every label first, so any
  N ≥ 2K holds both classes of every label wherever the data have them.
* Duplicate images (:mod:`medtransfer.data.duplicates`: exact copies and near copies) go to one split: with
  ``dedupe`` (``data.dedupe``, default on) a duplicate group is assigned as one patient, and when the images have
  patient ids it joins the groups of all patients it touches. Without any duplicate across patients the split is the
  one made without the option (the same seed gives the same file). Splits that came with the file cannot be moved:
  groups across them are counted and logged as a warning.
* :func:`audit_leakage` raises if a patient, or a duplicate group (``group_id``), appears in two splits; it runs on
  every split made or loaded.
* A split is a CSV (``image_id, patient_id, split, subset_rank, in_n50, in_n100, ...``, and ``group_id`` when
  duplicates joined images of different patients: the patient id that names each image's group) that can be loaded
  back so every arm of a study sees exactly the same images. Beside it, ``<name>.dataset.json`` records the
  fingerprint of the dataset it was made for (:func:`dataset_fingerprint`); :func:`load_split` refuses other data,
  even when its image ids happen to match (MedMNIST ids are positions, so every MedMNIST file has the same ones).
"""

from __future__ import annotations

import hashlib
import json
import logging
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from medtransfer.data.cache import image_duplicates
from medtransfer.data.dataset import ImageDataset
from medtransfer.data.duplicates import Duplicates, components
from medtransfer.errors import DataError
from medtransfer.io import atomic_write, atomic_write_text
from medtransfer.tasks.base import task_kind

log = logging.getLogger(__name__)

SPLIT_NAMES = ("train", "val", "test")
DEFAULT_NS = (50, 100, 200, 500, 1000, 2000)


class SplitMismatch(DataError):
    """A split file made for other data than the data it is applied to."""


def dataset_fingerprint(ds) -> dict:
    """What a split file records about its dataset: name, number of images, a digest of the image ids and one of the
    images themselves (:attr:`ImageSource.content`: array content, or file names and sizes), not of where they are."""
    ids = sorted(ds.meta["image_id"].astype(str))
    images = getattr(ds, "images", None)
    content = images.content if images is not None else getattr(ds, "content", None)  # 2-D images or 3-D cases
    return {
        "dataset": getattr(ds, "name", None),
        "images": len(ids),
        "ids": hashlib.sha1("\0".join(ids).encode()).hexdigest()[:16],
        "content": hashlib.sha1(content.encode()).hexdigest()[:16] if content else None,
    }


def fingerprint_path(split_csv: str | Path) -> Path:
    """``split.csv`` → ``split.dataset.json``: the dataset fingerprint beside a split file."""
    p = Path(split_csv)
    return p.with_name(p.name.removesuffix(".csv") + ".dataset.json")


def check_fingerprint(recorded: dict, ds, where: str | Path) -> None:
    """Raise :class:`SplitMismatch` unless ``ds`` is the dataset ``recorded`` describes."""
    now = dataset_fingerprint(ds)
    same = recorded.get("images") == now["images"] and recorded.get("ids") == now["ids"]
    if same and recorded.get("content") and now["content"]:
        same = recorded["content"] == now["content"]
    if not same:
        raise SplitMismatch(
            f"{where} was made for other data ('{recorded.get('dataset')}', {recorded.get('images')} images), not for "
            f"these {now['images']} images of '{now['dataset']}' (their ids or content differ); use it with the data "
            "it was made for, or make a split for this data (`medtransfer data split`)"
        )


@dataclass(frozen=True)
class Split:
    """Which split each image of a dataset belongs to, in the dataset's row order."""

    table: pd.DataFrame  # image_id, patient_id, [group_id,] split, subset_rank (−1 outside train), in_n* columns
    dataset: dict | None = None  # the fingerprint of the dataset it was made for (dataset_fingerprint)
    audit: dict = field(default_factory=dict)  # what make_split / load_split checked (keys: see make_split)

    def indices(self, name: str) -> np.ndarray:
        if name not in SPLIT_NAMES:
            raise DataError(f"unknown split '{name}'; use one of {SPLIT_NAMES}")
        return np.flatnonzero(self.table["split"].to_numpy() == name)

    def train_subset(self, n: int | None, balance_labels: np.ndarray | None = None) -> np.ndarray:
        """Dataset indices of the nested training subset of size ``n`` (``None`` = all), in rank order.

        With ``balance_labels`` (the dataset's ``(N, K)`` labels; ``train.balance``) the subset takes the first
        images of each class in rank order, ``n / classes`` each, as Romero et al.'s balanced training sets; a class
        with too few images gives all it has and the others fill up the rest (still nested: a balanced subset of
        ``n`` lies inside the balanced subset of any larger ``n``). Multi-label rows count by their rarest positive.
        """
        train = self.indices("train")
        ranks = self.table["subset_rank"].to_numpy()[train]
        order = train[np.argsort(ranks, kind="stable")]
        if n is None:
            return order
        if n > len(order):
            raise DataError(f"asked for a training subset of {n} images but the training split has {len(order)}")
        if balance_labels is None:
            return order[:n]
        return _balanced(order, n, balance_labels)

    def counts(self) -> dict[str, int]:
        return {s: int((self.table["split"] == s).sum()) for s in SPLIT_NAMES}

    def save(self, path: str | Path) -> Path:
        """Write the CSV and, when known, the dataset fingerprint beside it (``<name>.dataset.json``)."""
        if self.dataset is not None:
            atomic_write_text(fingerprint_path(path), json.dumps(self.dataset, indent=2))
        return atomic_write(path, lambda tmp: self.table.to_csv(tmp, index=False))


def _balanced(order: np.ndarray, n: int, labels: np.ndarray) -> np.ndarray:
    """The first ``n`` of ``order`` taken round-robin over the classes (each class in its own rank order)."""
    kind = "binary" if labels.shape[1] == 1 else ("multiclass" if _one_hot(labels) else "multilabel")
    strata = _strata(labels[order], kind)
    queues = [list(order[strata == s]) for s in np.unique(strata) if s >= 0]  # -1: no known label
    unknown = list(order[strata < 0])
    picked: list[int] = []
    while len(picked) < n and any(queues):
        for q in queues:
            if q and len(picked) < n:
                picked.append(q.pop(0))
    picked += unknown[: n - len(picked)]  # rows without a known label only when the classes are used up
    chosen = set(picked)
    return np.array([i for i in order if i in chosen], dtype=order.dtype)  # back in rank order


def _one_hot(labels: np.ndarray) -> bool:
    finite = labels[np.isfinite(labels).all(axis=1)]
    return len(finite) > 0 and bool(np.all(finite.sum(axis=1) == 1))


def _strata(labels: np.ndarray, task: str) -> np.ndarray:
    """One stratum key per row, as the task kind defines it (the class; for multi-label the rarest positive finding;
    for regression a quantile bin); ``-1`` = label unknown."""
    if labels.shape[1] == 0:
        return np.zeros(len(labels), dtype=np.int64)
    return task_kind(task).strata(labels)


def _assign_patients(
    patients: np.ndarray, strata: np.ndarray, fractions: Sequence[float], names: Sequence[str], seed: int
) -> np.ndarray:
    """Assign each row's patient to one of ``names`` so image counts per stratum follow ``fractions``."""
    df = pd.DataFrame({"patient": patients, "stratum": strata})
    # A patient's stratum: the rarest (smallest count) stratum among their images, so rare findings spread out.
    counts = df["stratum"].value_counts()
    df["rarity"] = df["stratum"].map(counts)
    per_patient = (
        df.sort_values("rarity", kind="stable")
        .groupby("patient", sort=False)
        .agg(stratum=("stratum", "first"), n=("stratum", "size"))
    )
    rng = np.random.default_rng(seed)
    frac = np.asarray(fractions, dtype=float) / np.sum(fractions)
    assignment: dict = {}
    for _, group in per_patient.groupby("stratum", sort=True):
        order = rng.permutation(len(group))
        ids, sizes = group.index.to_numpy()[order], group["n"].to_numpy()[order]
        target = frac * sizes.sum()
        filled = np.zeros(len(frac))
        for pid, size in zip(ids, sizes, strict=True):
            j = int(np.argmax(target - filled))  # the split furthest below its share of this stratum
            filled[j] += size
            assignment[pid] = names[j]
    return df["patient"].map(assignment).to_numpy()


def nested_ranks(labels: np.ndarray, task: str, seed: int) -> np.ndarray:
    """A rank per row such that every prefix is stratified and holds both classes of each label early."""
    n = len(labels)
    rng = np.random.default_rng([seed, 1])
    strata = _strata(labels, task)
    key = np.empty(n)
    for s in np.unique(strata):
        rows = np.flatnonzero(strata == s)
        perm = rng.permutation(len(rows))
        # fractional position within the stratum: interleaves strata in proportion to their sizes
        key[rows[perm]] = (np.arange(len(rows)) + rng.uniform(size=len(rows))) / len(rows)
    order = np.argsort(key, kind="stable")
    first: list[int] = []
    if task_kind(task).probabilities and labels.shape[1]:  # 0/1 labels: both classes of every label early
        ordered = labels[order]
        for k in range(labels.shape[1]):
            for value in (1.0, 0.0):
                hits = np.flatnonzero(ordered[:, k] == value)
                if len(hits) and hits[0] not in first:
                    first.append(int(hits[0]))
    front = np.array(sorted(first), dtype=np.int64)
    rest = np.setdiff1d(np.arange(n), front, assume_unique=True)
    order = order[np.concatenate([front, rest])]
    ranks = np.empty(n, dtype=np.int64)
    ranks[order] = np.arange(n)
    return ranks


def audit_leakage(table: pd.DataFrame, source_split: Sequence | None = None) -> int:
    """Raise :class:`DataError` if any patient, or any duplicate group (``group_id``), is in more than one split.

    A group whose images the file's own splits (``source_split``, row by row) already put in different splits cannot
    be moved: it is not an error; the number of such groups is returned, for a warning.

    Example:
        >>> audit_leakage(pd.DataFrame({"patient_id": ["a", "b"], "group_id": ["a", "a"], "split": ["train", "val"]}),
        ...               source_split=["train", "val"])
        1
    """
    per_patient = table.groupby("patient_id")["split"].nunique()
    leaked = per_patient[per_patient > 1]
    if len(leaked):
        raise DataError(
            f"patient leakage: {len(leaked)} patient(s) appear in more than one split "
            f"(e.g. {[str(p) for p in leaked.index[:3]]}); regenerate the split with `medtransfer data split`"
        )
    if "group_id" not in table.columns:
        return 0
    groups = pd.DataFrame({"group": table["group_id"].to_numpy(), "split": table["split"].to_numpy()})
    groups["source"] = np.asarray(source_split, dtype=object) if source_split is not None else None
    per_group = groups.groupby("group").agg(splits=("split", "nunique"), sources=("source", "nunique"))
    across = per_group[per_group["splits"] > 1]
    fixed = across["sources"] > 1  # the file's own splits put the group's images apart
    if (~fixed).any():
        bad = across.index[~fixed.to_numpy()]
        raise DataError(
            f"duplicate leakage: {len(bad)} group(s) of duplicate images appear in more than one split "
            f"(e.g. group {[str(g) for g in bad[:3]]}); regenerate the split with `medtransfer data split`"
        )
    return int(fixed.sum())


def duplicate_groups(patients: np.ndarray, duplicates: Duplicates) -> np.ndarray:
    """Each image's group for splitting: its patient, joined with every patient it shares a duplicate image with. A
    group is named by the patient id of its first image, so where no duplicate joins two patients the groups are the
    patients themselves.

    Example:
        >>> dup = Duplicates(np.array([0, 1, 0]), *np.zeros((2, 3), np.uint64), np.ones(3, bool))
        >>> duplicate_groups(np.array(["p1", "p2", "p3"], dtype=object), dup).tolist()
        ['p1', 'p2', 'p1']
    """
    if not duplicates.any:
        return patients
    rows = np.arange(len(patients))
    codes, _ = pd.factorize(patients)
    first_of_patient = np.full(codes.max() + 1, len(patients))
    np.minimum.at(first_of_patient, codes, rows)
    head = components(len(patients), np.r_[rows, rows], np.r_[first_of_patient[codes], duplicates.group])
    return patients[head]


def make_split(
    ds: ImageDataset,
    fractions: Sequence[float] = (0.7, 0.1, 0.2),
    seed: int = 0,
    use_source_splits: bool = True,
    ns: Sequence[int] = DEFAULT_NS,
    dedupe: bool = True,
    duplicates: Duplicates | None = None,
    cache_dir: str | Path | None = None,
    progress: bool = True,
    keep_hashes: bool = True,
) -> Split:
    """Split ``ds`` by patient into train/val/test and rank the training images for nested subsets.

    With ``dedupe`` the images are hashed (once per dataset: :func:`~medtransfer.data.cache.image_duplicates`, kept
    under ``cache_dir`` unless ``keep_hashes`` is False; or pass ``duplicates``) and each duplicate group goes to one
    split with its patients.
    ``Split.audit`` says what was checked: ``patient_ids`` (False: every image is its own patient), ``dedupe``,
    ``groups`` / ``images`` (duplicate groups and the images in them), ``joined`` (groups that join two or more
    patients' images) and ``across_source_splits`` (groups the file's own splits keep apart, logged as a warning).

    Example:
        >>> split = make_split(load_dataset("synthetic:chest,n=200"), seed=0)   # doctest: +SKIP
        >>> split.counts()                                                      # doctest: +SKIP
        {'train': 140, 'val': 20, 'test': 40}
    """
    if len(fractions) != 3 or min(fractions) < 0 or sum(fractions) <= 0 or fractions[0] <= 0:
        raise DataError(f"split fractions must be three non-negative numbers for train/val/test, got {list(fractions)}")
    meta = ds.meta
    patients = meta["patient_id"].astype(str).to_numpy()
    audit = {"patient_ids": bool((patients != meta["image_id"].astype(str).to_numpy()).any()), "dedupe": dedupe}
    groups = patients
    if dedupe:
        if duplicates is None:
            duplicates = image_duplicates(ds, cache_dir, progress, keep=keep_hashes)
        if len(duplicates) != len(ds):
            raise DataError(f"{ds.name}: duplicate table of {len(duplicates)} images for {len(ds)} images")
        groups = duplicate_groups(patients, duplicates)
        members = duplicates.groups()
        audit.update(groups=len(members), images=int(sum(len(m) for m in members)))
        audit["joined"] = (
            int(pd.Series(patients).groupby(groups).nunique().gt(1).sum()) if groups is not patients else 0
        )
    strata = _strata(ds.labels, ds.task)
    split = np.empty(len(ds), dtype=object)
    source = None
    if use_source_splits and "source_split" in meta.columns:
        source = meta["source_split"].to_numpy()
        split[:] = source
        present = [s for s in SPLIT_NAMES if (split == s).any()]
        if "train" not in present:
            raise DataError(f"{ds.name}: the file's own splits {present} have no 'train'; pass use_source_splits=false")
        missing = [s for s in SPLIT_NAMES if s not in present and fractions[SPLIT_NAMES.index(s)] > 0]
        if missing:
            train = np.flatnonzero(split == "train")
            names = ["train", *missing]
            frac = [fractions[SPLIT_NAMES.index(s)] for s in names]
            split[train] = _assign_patients(groups[train], strata[train], frac, names, seed)
            log.info("%s: carved %s out of the file's training split", ds.name, missing)
    else:
        split[:] = _assign_patients(groups, strata, fractions, SPLIT_NAMES, seed)
    table = pd.DataFrame({"image_id": meta["image_id"].astype(str), "patient_id": patients, "split": split})
    if groups is not patients and (groups != patients).any():
        table.insert(2, "group_id", groups)
    audit["across_source_splits"] = audit_leakage(table, source)
    if audit["across_source_splits"]:
        log.warning(
            "%s: %d group(s) of duplicate images lie in more than one of the file's own train/val/test splits, which "
            "cannot be moved (their scores are optimistic); see them with `medtransfer data inspect`",
            ds.name,
            audit["across_source_splits"],
        )
    ranks = np.full(len(ds), -1, dtype=np.int64)
    train = np.flatnonzero(split == "train")
    ranks[train] = nested_ranks(ds.labels[train], ds.task, seed)
    table["subset_rank"] = ranks
    for n in ns:
        if n < len(train):
            table[f"in_n{n}"] = (ranks >= 0) & (ranks < n)
    return Split(table, dataset_fingerprint(ds), audit)


def reseed_subsets(split: Split, ds: ImageDataset, seed: int, ns: Sequence[int] = DEFAULT_NS) -> Split:
    """The same train/val/test assignment with the nested training subsets drawn again with ``seed``.

    A study uses one of these per seed: the test images stay fixed across seeds (paired comparisons) while
    the training subset of size N varies with the seed, as in a learning-curve experiment.
    """
    keep = [c for c in ("image_id", "patient_id", "group_id", "split") if c in split.table.columns]
    table = split.table[keep].copy()
    train = np.flatnonzero(table["split"].to_numpy() == "train")
    ranks = np.full(len(table), -1, dtype=np.int64)
    ranks[train] = nested_ranks(ds.labels[train], ds.task, seed)
    table["subset_rank"] = ranks
    for n in ns:
        if n < len(train):
            table[f"in_n{n}"] = (ranks >= 0) & (ranks < n)
    return Split(table, split.dataset or dataset_fingerprint(ds), split.audit)


def load_split(path: str | Path, ds) -> Split:
    """Read a split CSV and align it to ``ds``'s rows. It must have been made for ``ds``: the fingerprint beside it
    (when there is one) must match, and it must list exactly ``ds``'s images; else :class:`SplitMismatch`."""
    path = Path(path)
    if not path.is_file():
        raise DataError(f"split file not found: {path}")
    try:
        table = pd.read_csv(path, dtype={"image_id": str, "patient_id": str})
    except (pd.errors.ParserError, UnicodeDecodeError, pd.errors.EmptyDataError) as e:
        raise DataError(f"cannot read split file {path} ({' '.join(str(e).split())}); is it a split CSV?") from None
    need = {"image_id", "patient_id", "split", "subset_rank"}
    if not need <= set(table.columns):
        raise DataError(f"{path} is not a split file: needs columns {sorted(need)}, has {list(table.columns)}")
    bad = sorted(set(table["split"]) - set(SPLIT_NAMES))
    if bad:
        raise DataError(f"{path}: unknown split name(s) {bad}; expected {SPLIT_NAMES}")
    if table["image_id"].duplicated().any():
        raise DataError(f"{path}: image ids repeat, e.g. {table['image_id'][table['image_id'].duplicated()].iloc[0]}")
    recorded = _read_fingerprint(path)
    if recorded is not None:
        check_fingerprint(recorded, ds, path)
    ids = ds.meta["image_id"].astype(str)
    indexed = table.set_index("image_id")
    missing = ~ids.isin(indexed.index)
    extra = len(table) - int((~missing).sum())
    if missing.any() or extra:
        example = ids[missing].iloc[0] if missing.any() else "-"
        raise SplitMismatch(
            f"{path} was made for other data: it lists {len(table)} images, the data has {len(ids)} "
            f"({int(missing.sum())} of them not in the file, e.g. {example}); use it with the data it was made for, "
            "or make a split for this data (`medtransfer data split`)"
        )
    aligned = indexed.loc[ids].reset_index()
    # audited only once the file is known to be this data's (another dataset's split is a SplitMismatch, not a leak);
    # groups that the file's own splits keep apart are allowed (and counted)
    source = ds.meta["source_split"].to_numpy() if "source_split" in ds.meta.columns else None
    across = audit_leakage(aligned, source)
    return Split(aligned, recorded or dataset_fingerprint(ds), {"across_source_splits": across})


def _read_fingerprint(path: Path) -> dict | None:
    fp = fingerprint_path(path)
    if not fp.is_file():
        return None  # a split CSV written by hand or before fingerprints: the id check above still applies
    try:
        recorded = json.loads(fp.read_text())
    except (OSError, ValueError) as e:
        raise DataError(f"cannot read {fp} ({e}); delete it to use {path.name} without its dataset check") from None
    if not isinstance(recorded, dict):
        raise DataError(f"{fp} is not a split's dataset fingerprint; delete it to use {path.name} without the check")
    return recorded
