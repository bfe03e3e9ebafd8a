"""Radiomics baseline: features match pyradiomics, per-image cache and resume, CV logistic regression, one trial."""

from __future__ import annotations

import logging
import sys

import numpy as np
import pytest
from sklearn.metrics import roc_auc_score

pytest.importorskip("radiomics")

from medtransfer.baselines import radiomics as rx  # noqa: E402
from medtransfer.errors import DataError, UserError  # noqa: E402

EXTRACT = rx.extract_features  # the real one, before tests wrap it


def _image(size: int = 24) -> np.ndarray:
    i, j = np.mgrid[:size, :size]
    return ((i * 7 + j * 3) % 97 + (i * j) % 23 + 40 * ((i // 6 + j // 6) % 2)).astype(np.uint8)


def _mask(size: int = 24) -> np.ndarray:
    i, j = np.mgrid[:size, :size]
    return (((i - 11) / 8.0) ** 2 + ((j - 12) / 6.0) ** 2 <= 1).astype(np.uint8)


def _stack(n: int, size: int = 20, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (n, 1, size, size)).astype(np.uint8)


def _reference(image: np.ndarray, mask: np.ndarray) -> dict[str, float]:
    """pyradiomics called directly, configured as the baseline documents (written out here so drift fails)."""
    import SimpleITK as sitk
    from radiomics.featureextractor import RadiomicsFeatureExtractor

    ext = RadiomicsFeatureExtractor(binCount=32, force2D=True, force2Ddimension=0, label=1, additionalInfo=False)
    ext.disableAllFeatures()
    for name in ("firstorder", "glcm", "glrlm", "glszm", "gldm", "ngtdm", "shape2D"):
        ext.enableFeatureClassByName(name)
    out = ext.execute(sitk.GetImageFromArray(image[None]), sitk.GetImageFromArray(mask[None]))
    return {k: float(v) for k, v in out.items()}


# --- features ----------------------------------------------------------------------------------------------------


def test_features_match_pyradiomics_and_numpy():
    img, mask = _image(), _mask()
    ours, ref = rx.extract_features(img, mask), _reference(img, mask)
    assert set(ref) - set(ours) == {"original_glcm_SumAverage"}  # = 2 x JointAverage; dropped on purpose
    assert set(ours) <= set(ref)
    for name, value in ours.items():
        assert value == pytest.approx(ref[name], rel=1e-9, abs=1e-9), name
    roi = img[mask > 0].astype(np.float64)
    assert ours["original_firstorder_Mean"] == pytest.approx(roi.mean(), rel=1e-12)
    assert ours["original_firstorder_Minimum"] == roi.min()
    assert ours["original_firstorder_Maximum"] == roi.max()
    assert ours["original_firstorder_Energy"] == pytest.approx((roi**2).sum(), rel=1e-12)
    assert ours["original_shape2D_PixelSurface"] == mask.sum()
    p = np.histogram(roi, bins=32)[0] / roi.size  # binCount=32 over the ROI's own range
    assert ours["original_firstorder_Uniformity"] == pytest.approx((p**2).sum(), rel=1e-12)


def test_whole_image_is_an_all_ones_mask_and_dtype_does_not_matter():
    img = _image()
    whole = rx.extract_features(img)
    assert whole == rx.extract_features(img, np.ones_like(img))
    assert whole == rx.extract_features(img.astype(np.float32))


def test_every_feature_class_is_present():
    names = rx.extract_features(_image(), _mask())
    for cls in rx.FEATURE_CLASSES:
        assert any(n.startswith(f"original_{cls}_") for n in names), cls
    assert all(np.isfinite(v) for v in names.values())


def test_bad_inputs_are_data_errors():
    with pytest.raises(DataError, match="2-D"):
        rx.extract_features(np.zeros((1, 8, 8), np.uint8))
    with pytest.raises(DataError, match="pixel"):
        rx.extract_features(_image(), np.zeros((24, 24)))
    with pytest.raises(DataError, match="must match"):
        rx.extract_features(_image(), np.ones((20, 20)))


def test_missing_pyradiomics_says_how_to_install(monkeypatch):
    monkeypatch.setitem(sys.modules, "radiomics", None)
    with pytest.raises(
        UserError,
        match=r"radiomics baseline .* needs radiomics, which is not installed: pip install -e '\.\[radiomics\]'",
    ):
        rx.extract_features(_image())


def test_missing_simpleitk_is_named_when_a_study_is_planned(monkeypatch):
    monkeypatch.setitem(sys.modules, "SimpleITK", None)
    with pytest.raises(UserError, match=r"needs SimpleITK, which is not installed: pip install -e '\.\[radiomics\]'"):
        rx.BASELINES.get("radiomics").check("binary")


# --- cache -------------------------------------------------------------------------------------------------------


class Counting:
    """Wraps extract_features, counts calls and optionally fails after ``fail_after`` images (a crash mid-run)."""

    def __init__(self, fail_after: int | None = None) -> None:
        self.calls, self.fail_after = 0, fail_after

    def __call__(self, image, mask=None, *, bin_count=32):
        if self.fail_after is not None and self.calls >= self.fail_after:
            raise RuntimeError("killed")
        self.calls += 1
        return EXTRACT(image, mask, bin_count=bin_count)


def test_cache_computes_each_image_once(tmp_path, monkeypatch):
    images = _stack(6)
    counter = Counting()
    monkeypatch.setattr(rx, "extract_features", counter)
    x1, names = rx.feature_matrix(images, np.array([4, 1]), tmp_path, "toy", progress=False)
    assert counter.calls == 2 and x1.shape == (2, len(names))
    x2, names2 = rx.feature_matrix(images, np.arange(6), tmp_path, "toy", progress=False)
    assert counter.calls == 6 and names2 == names
    np.testing.assert_array_equal(x2[[4, 1]], x1)
    x3, _ = rx.feature_matrix(images, np.array([5, 5, 0]), tmp_path, "toy", progress=False)
    assert counter.calls == 6  # everything from the cache
    np.testing.assert_array_equal(x3, x2[[5, 5, 0]])
    folder = next((tmp_path / "radiomics").iterdir())
    assert folder.name.startswith("toy-") and np.load(folder / "done.npy").all()
    assert not list(folder.glob("*.tmp"))


def test_interrupted_run_resumes_with_identical_features(tmp_path, monkeypatch):
    images = _stack(7, seed=1)
    monkeypatch.setattr(rx, "extract_features", Counting(fail_after=5))
    with pytest.raises(RuntimeError, match="killed"):
        rx.feature_matrix(images, np.arange(7), tmp_path / "a", "toy", progress=False, chunk_size=2)
    resumed = Counting()
    monkeypatch.setattr(rx, "extract_features", resumed)
    x, names = rx.feature_matrix(images, np.arange(7), tmp_path / "a", "toy", progress=False, chunk_size=2)
    assert resumed.calls == 2
    fresh, fresh_names = rx.feature_matrix(images, np.arange(7), tmp_path / "b", "toy", progress=False)
    assert names == fresh_names
    np.testing.assert_array_equal(x, fresh)


def test_concurrent_writers_merge_rather_than_overwrite(tmp_path):
    """Two trials sharing a cache: a save keeps the rows the other process saved meanwhile."""
    names = ["a", "b"]
    mine, theirs = np.full((3, 2), np.nan), np.full((3, 2), np.nan)
    theirs[0] = [1.0, 2.0]
    rx._flush(tmp_path, theirs, np.array([True, False, False]), names)
    mine[2] = [5.0, 6.0]
    rx._flush(tmp_path, mine, np.array([False, False, True]), names)
    feats, done, saved_names = rx._load_cache(tmp_path, 3)
    assert saved_names == names and done.tolist() == [True, False, True]
    np.testing.assert_array_equal(feats[[0, 2]], [[1.0, 2.0], [5.0, 6.0]])


def test_settings_and_masks_get_their_own_cache(tmp_path):
    images = _stack(2, size=16)
    masks = np.zeros((2, 16, 16), np.uint8)
    masks[:, 3:12, 4:13] = 1
    whole, _ = rx.feature_matrix(images, np.arange(2), tmp_path, "toy", progress=False)
    roi, _ = rx.feature_matrix(images, np.arange(2), tmp_path, "toy", masks=masks, progress=False)
    coarse, _ = rx.feature_matrix(images, np.arange(2), tmp_path, "toy", bin_count=8, progress=False)
    assert len(list((tmp_path / "radiomics").iterdir())) == 3
    assert not np.allclose(whole, roi) and not np.allclose(whole, coarse)
    expected = rx.extract_features(images[1, 0], masks[1])
    np.testing.assert_array_equal(roi[1], list(expected.values()))


def test_worker_processes_give_the_same_features(tmp_path):
    rgb = _stack(4, size=16, seed=2).repeat(3, axis=1)
    rgb[:, 1] //= 2  # channels differ, so the channel mean is not any one channel
    serial, _ = rx.feature_matrix(rgb, np.arange(4), tmp_path / "a", "toy", progress=False)
    parallel, _ = rx.feature_matrix(rgb, np.arange(4), tmp_path / "b", "toy", workers=2, progress=False)
    np.testing.assert_array_equal(serial, parallel)
    mean = rgb[2].astype(np.float64).mean(axis=0)
    np.testing.assert_array_equal(serial[2], list(rx.extract_features(mean).values()))


# --- logistic regression -----------------------------------------------------------------------------------------


def _separable(n: int, k: int = 1, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    y = (rng.random((n, k)) < 0.4).astype(np.float64)
    x = rng.normal(size=(n, 6))
    x[:, :k] += 4.0 * y
    return x, y


def test_fit_predict_separable_binary_with_cv_chosen_c():
    x, y = _separable(90)
    x = np.column_stack([x, np.full(90, 3.0), np.where(np.arange(90) == 7, np.nan, 1.0)])  # constant, NaN columns
    scores, chosen, used = rx._fit_predict(x[:60], y[:60], x[60:], "binary", seed=0)
    assert scores.shape == (30, 1) and ((scores >= 0) & (scores <= 1)).all()
    assert roc_auc_score(y[60:, 0], scores[:, 0]) > 0.9
    assert used == 6 and len(chosen) == 1 and chosen[0] in rx.C_GRID
    again = rx.fit_predict(x[:60], y[:60], x[60:], "binary", seed=0)
    np.testing.assert_array_equal(scores, again)  # a fixed seed gives identical scores


def test_fit_predict_multilabel_with_unknowns_and_a_single_class_label(caplog):
    x, y = _separable(120, k=3, seed=1)
    y[::5, 0] = np.nan
    y[:80, 2] = 0.0  # label 2 is all negative in training
    logger = logging.getLogger(rx.__name__)
    logger.addHandler(caplog.handler)  # direct: the CLI's logging setup stops 'medtransfer' propagating to root
    try:
        scores, chosen, _ = rx._fit_predict(x[:80], y[:80], x[80:], "multilabel", seed=0)
    finally:
        logger.removeHandler(caplog.handler)
    assert scores.shape == (40, 3)
    for j in (0, 1):
        known = np.isfinite(y[80:, j])
        assert roc_auc_score(y[80:, j][known], scores[known, j]) > 0.9
        assert chosen[j] in rx.C_GRID
    assert (scores[:, 2] == 0.0).all() and np.isnan(chosen[2])
    assert "label 2 has only class 0" in caplog.text


def test_fit_predict_multiclass_one_multinomial_model():
    rng = np.random.default_rng(2)
    cls = rng.integers(0, 3, 150)
    x = rng.normal(size=(150, 5))
    x[np.arange(150), cls] += 3.0
    y = np.eye(3)[cls]
    y[[3, 9]] = np.nan  # unknown class: ignored in training
    scores, chosen, _ = rx._fit_predict(x[:100], y[:100], x[100:], "multiclass", seed=0)
    assert scores.shape == (50, 3) and np.allclose(scores.sum(axis=1), 1)
    for k in range(3):
        assert roc_auc_score(cls[100:] == k, scores[:, k]) > 0.9
    assert len(chosen) == 1 and chosen[0] in rx.C_GRID


def test_fit_predict_rejects_bad_tasks_and_shapes():
    x, y = _separable(20, k=2)
    with pytest.raises(DataError, match="one label column"):
        rx.fit_predict(x, y, x, "binary")
    with pytest.raises(UserError, match="unknown task kind 'regresion'"):
        rx.fit_predict(x, y, x, "regresion")
    with pytest.raises(UserError, match="needs 2-D images with labels"):
        rx.fit_predict(x, y, x, "segmentation")


def test_fit_predict_regression_is_ridge_with_alpha_by_cv():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(120, 6))
    y = (3 * x[:, 0] - 2 * x[:, 1] + 10 + rng.normal(0, 0.1, 120))[:, None]
    y[7] = np.nan  # unknown target: left out of the fit
    pred, alphas, used = rx._fit_predict(x[:100], y[:100], x[100:], "regression", seed=0)
    assert pred.shape == (20, 1) and used == 6 and len(alphas) == 1 and alphas[0] in rx.ALPHA_GRID
    assert np.abs(pred[:, 0] - y[100:, 0]).mean() < 0.3  # a linear target is recovered in its own unit


# --- one trial ---------------------------------------------------------------------------------------------------


def _blobs(n: int, size: int = 24, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Noisy background; positives carry a bright Gaussian blob at a random place."""
    rng = np.random.default_rng(seed)
    y = (np.arange(n) % 2).astype(np.float64)
    i, j = np.mgrid[:size, :size]
    images = rng.normal(80, 20, (n, size, size))
    for k in np.flatnonzero(y):
        ci, cj = rng.integers(6, size - 6, 2)
        images[k] += 120 * np.exp(-((i - ci) ** 2 + (j - cj) ** 2) / 8.0)
    return np.clip(images, 0, 255).astype(np.uint8)[:, None], y[:, None]


def test_radiomics_arm_end_to_end(tmp_path):
    images, labels = _blobs(36)
    train, test = np.arange(0, 36, 3).tolist() + np.arange(1, 36, 3).tolist(), np.arange(2, 36, 3)
    out = rx.radiomics_arm(images, labels, "binary", np.array(train), test, 0, tmp_path, "blobs", progress=False)
    assert out["scores"].shape == (12, 1)
    assert roc_auc_score(labels[test, 0], out["scores"][:, 0]) > 0.8
    assert out["n_features"] >= out["n_features_used"] > 50
    assert len(out["C"]) == 1 and out["C"][0] in rx.C_GRID
    assert out["seconds_features"] > 0 and out["seconds_fit"] > 0
