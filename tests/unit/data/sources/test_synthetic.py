"""The synthetic chest/hand phantoms: spec parsing, determinism, labels, site separability, speed."""

from __future__ import annotations

import time

import numpy as np
import pytest

from medtransfer.data.dataset import ImageDataset
from medtransfer.data.sources.base import load_dataset
from medtransfer.data.sources.synthetic import (
    SyntheticArchive,
    SyntheticSource,
    SyntheticSpec,
    load_synthetic,
)
from medtransfer.errors import DataError


def _images(ds: ImageDataset, indices=None) -> np.ndarray:
    indices = range(len(ds)) if indices is None else indices
    return np.stack([ds.load(int(i)) for i in indices])


def test_spec_defaults_and_canonical_form():
    spec = SyntheticSpec.parse("synthetic:chest")
    assert (spec.site, spec.n, spec.size, spec.visibility, spec.prevalence, spec.seed) == (
        "chest",
        512,
        64,
        0.5,
        0.5,
        0,
    )
    assert spec.label_kind == "lesion"
    same = SyntheticSpec.parse("synthetic:site=chest, n=512,seed=0")
    assert same.canonical() == spec.canonical()
    assert SyntheticSpec.parse("synthetic:mixed").site == "both"
    assert SyntheticSpec.parse("synthetic:both").label_kind == "site"


@pytest.mark.parametrize(
    "spec",
    [
        "synthetic:knee",
        "synthetic:chest,foo=1",
        "synthetic:chest,n=abc",
        "synthetic:chest,n=0",
        "synthetic:chest,size=8",
        "synthetic:chest,visibility=1.5",
        "synthetic:chest,prevalence=-0.1",
        "synthetic:chest,labels=site",
        "synthetic:chest,labels=bogus",
        "synthetic:chest,n=4,n=5",
        "synthetic:chest,hand",
    ],
)
def test_bad_spec_raises_one_line_data_error_listing_valid_keys(spec):
    with pytest.raises(DataError) as err:
        SyntheticSpec.parse(spec)
    message = str(err.value)
    assert "\n" not in message
    assert "valid keys: site, n, size, visibility, prevalence, seed, labels" in message


def test_shapes_dtypes_and_metadata():
    ds = load_synthetic("synthetic:hand,n=40,size=48")
    img = ds.load(0)
    assert img.shape == (1, 48, 48) and img.dtype == np.uint8
    assert ds.labels.shape == (40, 1) and ds.labels.dtype == np.float32
    assert ds.label_names == ("lesion",) and ds.task == "binary"
    assert ds.meta.loc[12, "image_id"] == "hand-000012"
    # pseudo-patients of 1-3 consecutive images
    sizes = ds.meta.groupby("patient_id", sort=False).size()
    assert sizes.between(1, 3).all() and (sizes > 1).any() and len(sizes) < 40
    assert img.std() > 10  # not blank


def test_deterministic_and_order_independent():
    a = load_synthetic("synthetic:chest,n=12,seed=3")
    b = load_synthetic("synthetic:chest,n=12,seed=3")
    forward = _images(a)
    backward = _images(b, range(11, -1, -1))[::-1]
    np.testing.assert_array_equal(forward, backward)
    np.testing.assert_array_equal(a.labels, b.labels)
    assert a.images.identity == b.images.identity
    # image i does not depend on n (lazy archives of any length agree on their common prefix)
    longer = load_synthetic("synthetic:chest,n=30,seed=3")
    np.testing.assert_array_equal(forward, _images(longer, range(12)))
    np.testing.assert_array_equal(a.labels, longer.labels[:12])


def test_different_seeds_differ():
    a = _images(load_synthetic("synthetic:hand,n=4,seed=0"))
    b = _images(load_synthetic("synthetic:hand,n=4,seed=1"))
    assert not np.array_equal(a, b)
    assert (
        load_synthetic("synthetic:hand,n=4,seed=0").images.identity
        != load_synthetic("synthetic:hand,n=4,seed=1").images.identity
    )


@pytest.mark.parametrize("prevalence", [0.1, 0.5, 0.8])
def test_prevalence_close_to_requested(prevalence):
    ds = load_synthetic(f"synthetic:chest,n=4000,prevalence={prevalence}")
    assert abs(ds.labels.mean() - prevalence) < 0.03


@pytest.mark.parametrize("site", ["chest", "hand"])
def test_visibility_zero_makes_lesions_invisible(site):
    # every random draw happens whether or not there is a lesion, so at visibility 0 a positive film is the
    # negative film, pixel for pixel
    pos = _images(load_synthetic(f"synthetic:{site},n=16,prevalence=1,visibility=0"))
    neg = _images(load_synthetic(f"synthetic:{site},n=16,prevalence=0,visibility=0"))
    np.testing.assert_array_equal(pos, neg)
    # ... and with a visible lesion they differ only a little, locally
    shown = _images(load_synthetic(f"synthetic:{site},n=16,prevalence=1,visibility=1"))
    changed = (shown != neg).reshape(16, -1).mean(axis=1)
    assert (changed > 0).all() and (changed < 0.1).all()


def test_chest_lesion_brightens_and_hand_lesion_darkens():
    for site, sign in (("chest", 1), ("hand", -1)):
        pos = _images(load_synthetic(f"synthetic:{site},n=24,prevalence=1,visibility=1")).astype(float)
        neg = _images(load_synthetic(f"synthetic:{site},n=24,prevalence=0,visibility=1")).astype(float)
        assert sign * (pos - neg).sum(axis=(1, 2, 3)).mean() > 0


def test_sites_separable_by_a_trivial_classifier():
    # nearest class mean on 16 × 16 pixels: the sites differ in layout, not only in brightness
    ds = load_synthetic("synthetic:both,n=300,size=32")
    x = _images(ds)[:, 0, ::2, ::2].reshape(len(ds), -1) / 255.0
    x -= x.mean(axis=1, keepdims=True)  # remove overall brightness
    y = ds.class_index()
    assert 0.3 < y.mean() < 0.7
    means = np.stack([x[:200][y[:200] == c].mean(axis=0) for c in (0, 1)])
    pred = ((x[200:, None, :] - means[None]) ** 2).sum(axis=2).argmin(axis=1)
    assert (pred == y[200:]).mean() > 0.95


def test_both_sites_labels_and_meta():
    ds = load_synthetic("synthetic:both,n=60")
    assert ds.task == "multiclass" and ds.label_names == ("chest", "hand")
    assert np.array_equal(ds.labels.sum(axis=1), np.ones(60))
    assert (ds.meta["site"].to_numpy() == np.array(ds.label_names)[ds.class_index()]).all()
    assert all(iid.startswith(site) for iid, site in zip(ds.meta["image_id"], ds.meta["site"], strict=True))
    # a patient's films all show the same site
    assert (ds.meta.groupby("patient_id")["site"].nunique() == 1).all()
    lesion = load_synthetic("synthetic:both,n=60,labels=lesion")
    assert lesion.task == "binary" and lesion.label_names == ("lesion",)


def test_unlabelled_archive():
    ds = load_synthetic("synthetic:chest,n=10,labels=none")
    assert ds.task == "unlabelled" and ds.labels.shape == (10, 0) and ds.label_names == ()


def test_speed_1000_images_at_64px_under_2s():
    arc = SyntheticArchive(SyntheticSpec.parse("synthetic:both,n=1000"))
    arc.make(0)  # warm the caches (grid, noise bank)
    start = time.process_time()  # CPU time: other processes on a busy CI machine do not count
    for i in range(1000):
        arc.make(i)
    assert time.process_time() - start < 2.0


def test_detect_and_load_dataset_through_the_registry():
    assert SyntheticSource.detect("synthetic:chest,n=32")
    assert not SyntheticSource.detect("/data/chest.npz")
    ds = load_dataset("synthetic:chest,n=32")
    assert len(ds) == 32 and ds.label_names == ("lesion",)
    assert ds.load(31).shape == (1, 64, 64)
    with pytest.raises(IndexError):
        ds.load(32)
