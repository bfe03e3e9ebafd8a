"""3-D cases as a run uses them: the cases ``data.path`` names (restricted to ``seg.cases_file``, with
``seg.annotated_file``'s partial labels), and their splits: volumes are the unit (one per patient in the MSD tasks),
beside the image splits of :mod:`medtransfer.data.splits` and written in the same split-file format."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from medtransfer.config import Config
from medtransfer.data.sources.base import load_volumes
from medtransfer.data.splits import Split, dataset_fingerprint, load_split
from medtransfer.data.volumes import SegDataset
from medtransfer.errors import DataError


def load_cases(cfg: Config) -> SegDataset:
    """The cases ``data.path`` names (``data.format``: ``msd``, ``nifti_folder`` or None = detect), restricted to
    ``seg.cases_file`` and with ``seg.annotated_file``'s partial labels."""
    ds = load_volumes(cfg.data.require_path(), cfg.data.format)  # the registry's 3-D sources (msd, nifti_folder)
    if cfg.seg.cases_file:
        ds = ds.subset(_read_ids(Path(cfg.seg.cases_file)))
    if cfg.seg.annotated_file:
        table = pd.read_csv(cfg.seg.annotated_file, dtype=str).fillna("")
        if not {"case", "annotated"} <= set(table.columns):
            raise DataError(f"{cfg.seg.annotated_file} needs columns case,annotated")
        mapping = {r.case: [n for n in r.annotated.split(";") if n] for r in table.itertuples()}
        mapping = {c: names for c, names in mapping.items() if c in {k.id for k in ds.cases}}
        ds = ds.with_annotated(mapping)
    if len(ds) == 0:
        raise DataError(f"{cfg.data.path}: no cases to use")
    return ds


def _read_ids(path: Path) -> list[str]:
    if not path.is_file():
        raise DataError(f"seg.cases_file {path} not found")
    text = path.read_text().split()
    if text and text[0].split(",")[0] == "case":
        return pd.read_csv(path, dtype=str)["case"].tolist()
    return text


def case_split(ds: SegDataset, cfg: Config, seed: int | None = None) -> Split:
    """Cases → train/val/test (``data.split_fractions``, checked when the config loaded) and a random nested order
    of the training cases.

    ``data.split_file`` (a split CSV with case ids as ``image_id``) fixes it instead, as a study does so that every
    arm uses the same cases.
    """
    ids = [c.id for c in ds.cases]
    if cfg.data.split_file:
        return load_split(cfg.data.split_file, ds)
    seed = cfg.seed if seed is None else seed
    frac = np.asarray(cfg.data.split_fractions, dtype=float)
    rng = np.random.default_rng([seed, 31])
    order = rng.permutation(len(ids))
    counts = np.floor(frac / frac.sum() * len(ids)).astype(int)
    counts[1] = max(counts[1], 1) if frac[1] > 0 else 0
    counts[0] = len(ids) - counts[1] - counts[2]
    if counts[0] < 1:
        raise DataError(f"{len(ids)} cases cannot make a training split with fractions {list(frac)}")
    names = np.array(["train"] * counts[0] + ["val"] * counts[1] + ["test"] * counts[2], dtype=object)
    split = np.empty(len(ids), dtype=object)
    split[order] = names
    return Split(_table(ids, split, seed), dataset_fingerprint(ds))


def reseed_cases(split: Split, seed: int) -> Split:
    """The same case assignment with the training cases put in another random nested order (one per seed)."""
    return Split(_table(split.table["image_id"].tolist(), split.table["split"].to_numpy(), seed), split.dataset)


def _table(ids: list[str], split: np.ndarray, seed: int) -> pd.DataFrame:
    train = np.flatnonzero(split == "train")
    ranks = np.full(len(ids), -1, dtype=np.int64)
    ranks[train] = np.random.default_rng([seed, 37]).permutation(len(train))
    return pd.DataFrame({"image_id": ids, "patient_id": ids, "split": split, "subset_rank": ranks})
