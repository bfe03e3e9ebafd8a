"""Dice and HD95 per class against MONAI's metrics on random shapes with anisotropic spacing; NaN for a class in
neither volume; the bootstrap summary."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
import torch

from medtransfer.segmentation.metrics import dice_per_class, hd95_per_class, summarize_segmentation

K = 4
SPACING = (0.7, 1.3, 2.5)


def _random_pair(seed: int) -> tuple[np.ndarray, np.ndarray]:
    from monai.data import create_test_image_3d

    rs = np.random.RandomState(seed)
    _, gt = create_test_image_3d(24, 20, 16, num_objs=8, rad_max=6, rad_min=2, num_seg_classes=K - 1, random_state=rs)
    _, pred = create_test_image_3d(24, 20, 16, num_objs=8, rad_max=6, rad_min=2, num_seg_classes=K - 1, random_state=rs)
    pred = np.where(rs.rand(*gt.shape) < 0.6, gt, pred)  # overlapping, not identical
    return pred.astype(np.int64), gt.astype(np.int64)


def _one_hot(labels: np.ndarray) -> torch.Tensor:
    from monai.networks.utils import one_hot

    return one_hot(torch.from_numpy(labels)[None, None], K)


def _monai(pred: np.ndarray, gt: np.ndarray, **kw) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    from monai.metrics import DiceMetric, HausdorffDistanceMetric

    p, g = _one_hot(pred), _one_hot(gt)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # MONAI warns about empty classes, which these cases have on purpose
        dice = DiceMetric(include_background=False, ignore_empty=False)(p, g)[0].numpy()
        hd95 = HausdorffDistanceMetric(include_background=False, percentile=95)(p, g, spacing=SPACING)[0].numpy()
        hd = HausdorffDistanceMetric(include_background=False)(p, g, spacing=SPACING)[0].numpy()
    return dice, hd95, hd


@pytest.mark.parametrize("seed", [1, 4, 5])  # seeds where every class is in both
def test_dice_and_hd95_match_monai(seed: int) -> None:
    pred, gt = _random_pair(seed)
    dice, hd95 = dice_per_class(pred, gt, K), hd95_per_class(pred, gt, K, SPACING)
    m_dice, m_hd95, _ = _monai(pred, gt)
    assert not np.isnan(dice).any() and np.isfinite(hd95).all()
    np.testing.assert_allclose(dice, m_dice, rtol=1e-6)
    np.testing.assert_allclose(hd95, m_hd95, rtol=1e-5)


def test_absent_classes() -> None:
    pred, gt = _random_pair(4)
    pred[pred == 2] = 0  # class 2 missed
    gt[gt == 3] = 0  # class 3 only predicted
    pred[pred == 1], gt[gt == 1] = 0, 0  # class 1 in neither
    dice, hd95 = dice_per_class(pred, gt, K), hd95_per_class(pred, gt, K, SPACING)
    m_dice, m_hd95, m_hd = _monai(pred, gt)
    assert np.isnan(dice[0]) and m_dice[0] == 1.0  # MONAI (ignore_empty=False) counts "both empty" as perfect
    np.testing.assert_array_equal(dice[1:], [0.0, 0.0])
    np.testing.assert_array_equal(dice[1:], m_dice[1:])
    assert np.isnan(hd95[0]) and np.isnan(m_hd95[0])
    # Present in one volume only: inf (MONAI's HD95 gives NaN there, its plain Hausdorff distance inf).
    np.testing.assert_array_equal(hd95[1:], [np.inf, np.inf])
    assert np.isnan(m_hd95[1:]).all() and np.isinf(m_hd[1:]).all()


def test_hand_computed_values_use_the_spacing() -> None:
    gt = np.zeros((12, 12, 12), np.int64)
    gt[3:7, 3:7, 3:7] = 1
    shifted = np.roll(gt, 2, axis=2)
    assert hd95_per_class(shifted, gt, 2, (1.0, 1.0, 3.0))[0] == pytest.approx(6.0)
    assert hd95_per_class(shifted, gt, 2, (3.0, 3.0, 1.0))[0] == pytest.approx(2.0)
    assert dice_per_class(shifted, gt, 2)[0] == pytest.approx(0.5)
    np.testing.assert_array_equal(dice_per_class(gt, gt, 3), [1.0, np.nan])
    with pytest.raises(ValueError, match="values must be in 0..1"):
        dice_per_class(gt * 2, gt, 2)


def test_summary_leaves_nan_out_and_bootstraps_cases() -> None:
    dices = np.array([[0.8, np.nan], [0.6, 0.9], [0.7, 0.5], [0.9, np.nan]])
    m = summarize_segmentation(dices, ["background", "Anterior", "Posterior"], seed=1)
    assert m["n"] == 4 and set(m["per_label"]) == {"Anterior", "Posterior"}
    assert m["per_label"]["Anterior"]["dice"] == pytest.approx(0.75) and m["per_label"]["Anterior"]["n"] == 4
    assert m["per_label"]["Posterior"]["dice"] == pytest.approx(0.7) and m["per_label"]["Posterior"]["n"] == 2
    assert m["dice"] == pytest.approx((0.75 + 0.7) / 2)
    lo, hi = m["dice_ci"]
    assert 0.5 <= lo <= m["dice"] <= hi <= 0.9
    assert summarize_segmentation(dices, ["Anterior", "Posterior"], seed=1) == m
    many = np.random.default_rng(0).uniform(0.5, 1.0, (30, 2))
    assert summarize_segmentation(many, ["a", "b"], seed=1) != summarize_segmentation(many, ["a", "b"], seed=2)
    none = summarize_segmentation(dices, ["Anterior", "Posterior"], n_boot=0)
    assert np.isnan(none["dice_ci"]).all() and none["dice"] == m["dice"]
    with pytest.raises(ValueError, match="3 class names for 2"):
        summarize_segmentation(dices, ["a", "b", "c"])
