"""3-D cases and their splits (data/cases.py): fractions by case, nested training order per seed, a split file."""

from __future__ import annotations

import numpy as np
import pytest

from medtransfer.config import Config, from_dict
from medtransfer.data.cases import case_split, load_cases, reseed_cases
from medtransfer.errors import ConfigError, DataError


def cfg_for(path, **data) -> Config:
    return from_dict(Config, {"task": "segmentation", "data": {"path": str(path), **data}})


@pytest.fixture(scope="module")
def msd(tmp_path_factory, synthetic_msd):
    root, _ = synthetic_msd(tmp_path_factory.mktemp("cases") / "msd", 10, seed=3)
    return root


def test_cases_split_by_fraction_and_reseeding_keeps_the_assignment(msd, tmp_path):
    cfg = cfg_for(msd, split_fractions=[0.6, 0.2, 0.2])
    ds = load_cases(cfg)
    split = case_split(ds, cfg)
    assert split.counts() == {"train": 6, "val": 2, "test": 2}
    assert split.table["image_id"].tolist() == [c.id for c in ds.cases]
    ranks = split.table.loc[split.table["split"] == "train", "subset_rank"]
    assert (
        sorted(ranks) == list(range(6))
        and (split.table.loc[split.table["split"] != "train", "subset_rank"] == -1).all()
    )
    other = reseed_cases(split, seed=1)
    assert (other.table["split"] == split.table["split"]).all()  # the same cases in each split
    assert other.table["subset_rank"].tolist() != split.table["subset_rank"].tolist()  # another nested order
    assert case_split(ds, cfg).table.equals(split.table)  # the same seed, the same split
    split.save(tmp_path / "split.csv")
    again = case_split(ds, cfg_for(msd, split_file=str(tmp_path / "split.csv")))
    assert np.array_equal(again.indices("test"), split.indices("test"))


def test_a_split_without_training_cases_and_a_missing_path_are_refused(msd):
    with pytest.raises(DataError, match="cannot make a training split"):
        case_split(load_cases(cfg_for(msd)), cfg_for(msd, split_fractions=[0.05, 0.05, 0.9]))
    with pytest.raises(ConfigError, match="data.path is not set"):
        load_cases(from_dict(Config, {"task": "segmentation"}))
