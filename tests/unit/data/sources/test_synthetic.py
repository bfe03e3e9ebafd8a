"""The synthetic chest/hand phantoms: spec parsing, determinism, labels, site separability, hand age, speed."""

from __future__ import annotations

import hashlib
import time

import numpy as np
import pytest
from scipy.stats import spearmanr

from medtransfer.data.dataset import ImageDataset
from medtransfer.data.sources.base import load_dataset
from medtransfer.data.sources.synthetic import (
    AGE_RANGE,
    GENERATOR_VERSION,
    SyntheticArchive,
    SyntheticSource,
    SyntheticSpec,
    _render_hand,
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
        "synthetic:chest,labels=age",
        "synthetic:both,labels=age",
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


# --------------------------------------------------------------------------------------------- hand age


def test_age_labels_are_a_regression_task_shared_within_a_patient():
    ds = load_synthetic("synthetic:hand,labels=age,n=300")
    assert ds.task == "regression" and ds.label_names == ("age",)
    assert ds.labels.shape == (300, 1) and ds.labels.dtype == np.float32
    age = ds.labels[:, 0]
    assert np.isfinite(age).all() and AGE_RANGE == (1.0, 18.0)
    assert age.min() >= 1.0 and age.max() <= 18.0
    assert age.min() < 2.0 and age.max() > 17.0 and 3.5 < age.std() < 6.0  # uniform on [1, 18]: std 4.9
    # every film of a patient shows the same child, and different patients differ
    per_patient = ds.meta.assign(age=age).groupby("patient_id")["age"]
    assert (per_patient.nunique() == 1).all() and per_patient.first().nunique() == per_patient.ngroups
    assert SyntheticSpec.parse("synthetic:hand,labels=age").canonical().endswith(",labels=age")
    # the ages' prefix does not depend on n, and the label kind does not change the pictures
    longer = load_synthetic("synthetic:hand,labels=age,n=500")
    np.testing.assert_array_equal(ds.labels, longer.labels[:300])
    lesion = load_synthetic("synthetic:hand,n=300")
    assert lesion.images.identity == ds.images.identity and GENERATOR_VERSION in ds.images.identity
    np.testing.assert_array_equal(_images(lesion, range(5)), _images(ds, range(5)))


def test_age_archive_images_are_deterministic():
    a = load_synthetic("synthetic:hand,labels=age,n=12,seed=4")
    b = load_synthetic("synthetic:hand,labels=age,n=12,seed=4")
    np.testing.assert_array_equal(_images(a), _images(b, range(11, -1, -1))[::-1])
    np.testing.assert_array_equal(a.labels, b.labels)
    img = a.load(0)
    assert img.shape == (1, 64, 64) and img.dtype == np.uint8 and img.std() > 10


@pytest.mark.parametrize("spec", ["synthetic:chest,labels=age", "synthetic:both,n=10,labels=age"])
def test_age_labels_refused_off_the_hand(spec):
    with pytest.raises(DataError) as err:
        load_synthetic(spec)
    message = str(err.value)
    assert "\n" not in message and "labels=age needs site=hand" in message


def test_age_drives_the_skeleton_at_a_fixed_pose():
    # same pose, exposure and noise at increasing ages: more of the film is bright bone (longer shafts,
    # epiphyses, carpal centres, closing growth plates)
    for patient in range(4):
        films = [
            _render_hand(np.random.default_rng([0, 2, patient]), 0, patient, False, 0.0, 64, age)
            for age in (1.5, 4.0, 7.0, 10.0, 13.0, 16.0, 18.0)
        ]
        bright = [int((f > 110).sum()) for f in films]
        assert all(b > a for a, b in zip(bright[:-1], bright[1:], strict=True)), bright
        assert all(f.shape == (1, 64, 64) and f.dtype == np.uint8 for f in films)
    young, old = films[0].astype(int), films[-1].astype(int)
    assert (young != old).mean() > 0.05


def test_a_simple_image_feature_tracks_age():
    # the fraction of the hand that is bright bone grows with age, whatever the pose and exposure
    ds = load_synthetic("synthetic:hand,labels=age,n=200,size=64")
    x = _images(ds)[:, 0]
    bright_fraction = (x > 110).sum(axis=(1, 2)) / (x > 50).sum(axis=(1, 2))
    rho = spearmanr(bright_fraction, ds.labels[:, 0]).statistic
    assert rho > 0.5, rho


def test_chest_films_unchanged_by_the_hand_age():
    # pinned before the hand got an age (phantom-v1): the chest phantom is bit-identical
    pinned = {
        "synthetic:chest,n=6,seed=0": "4d1c211f4b516b9279e2740bf5547a7d1905881c7e474a54f671ea6e0c89b300",
        "synthetic:chest,n=6,size=48,seed=7,visibility=1": (
            "8f8db478e2440df35f42875779ac7afcefefb8898910585dcd1a26333cc3f19f"
        ),
        "synthetic:both,n=12,seed=2": "37b0449978143a1642be7253131fe848c253b56caf2cf40e19fc7eece2f928e8",
    }
    for spec, digest in pinned.items():
        arc = SyntheticArchive(SyntheticSpec.parse(spec))
        chest = [i for i in range(arc.spec.n) if arc.site_code[i] == 1]
        assert len(chest) >= 6
        assert hashlib.sha256(b"".join(arc.make(i).tobytes() for i in chest)).hexdigest() == digest, spec
