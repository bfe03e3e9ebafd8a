"""Calibration metrics: hand-worked Brier/ECE, NaN handling, multi-class, temperature scaling, reliability diagram."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
from scipy.special import expit, softmax
from sklearn.calibration import calibration_curve

from medtransfer.evaluation.calibration import (
    apply_temperature,
    brier_score,
    calibration_metrics,
    expected_calibration_error,
    fit_temperature,
    reliability_bins,
)
from medtransfer.evaluation.metrics import UndefinedMetricWarning, to_jsonable
from medtransfer.reporting.figures import reliability_diagram


def test_brier_hand_worked():
    # (0.1 - 0)^2 + (0.8 - 1)^2 + (0.6 - 1)^2 + (0.3 - 0)^2 = 0.01 + 0.04 + 0.16 + 0.09 = 0.30; / 4
    assert brier_score([0, 1, 1, 0], [0.1, 0.8, 0.6, 0.3]) == pytest.approx(0.075)


def test_ece_hand_worked():
    y = [0, 1, 1, 0, 1, 0]
    p = [0.05, 0.15, 0.12, 0.55, 0.95, 0.98]
    # bin [0.0, 0.1): {0.05 -> 0}: observed 0, mean 0.05, |.| = 0.05, weight 1/6
    # bin [0.1, 0.2): {0.15 -> 1, 0.12 -> 1}: observed 1, mean 0.135, |.| = 0.865, weight 2/6
    # bin [0.5, 0.6): {0.55 -> 0}: observed 0, mean 0.55, |.| = 0.55, weight 1/6
    # bin [0.9, 1.0]: {0.95 -> 1, 0.98 -> 0}: observed 0.5, mean 0.965, |.| = 0.465, weight 2/6
    expected = (0.05 * 1 + 0.865 * 2 + 0.55 * 1 + 0.465 * 2) / 6
    assert expected_calibration_error(y, p) == pytest.approx(expected)
    # 2 bins, [0, 0.5) = {0.05, 0.15, 0.12} (2 positives) and [0.5, 1.0] = {0.55, 0.95, 0.98} (1 positive)
    lo = abs(2 / 3 - (0.05 + 0.15 + 0.12) / 3)
    hi = abs(1 / 3 - (0.55 + 0.95 + 0.98) / 3)
    assert expected_calibration_error(y, p, n_bins=2) == pytest.approx((3 * lo + 3 * hi) / 6)


def test_bin_edges_are_left_closed_and_one_goes_to_last_bin():
    bins = reliability_bins([0, 1, 1, 0], [0.0, 0.1, 1.0, 0.3])
    assert bins["bin_lo"].tolist() == pytest.approx([0.0, 0.1, 0.3, 0.9])
    assert bins["bin_hi"].tolist() == pytest.approx([0.1, 0.2, 0.4, 1.0])
    assert bins["n"].tolist() == [1, 1, 1, 1]


def test_calibrated_sample_has_small_ece_and_overconfident_large():
    rng = np.random.default_rng(0)
    p = rng.uniform(0, 1, 200_000)
    y = (rng.uniform(0, 1, p.size) < p).astype(float)
    assert expected_calibration_error(y, p) < 0.01
    overconfident = expit(3 * (np.log(p) - np.log1p(-p)))  # same ranking, pushed towards 0 and 1
    assert expected_calibration_error(y, overconfident) > 0.1
    assert brier_score(y, overconfident) > brier_score(y, p)


def test_nan_labels_are_dropped():
    y = np.array([0, 1, np.nan, 1, 0, np.nan])
    p = np.array([0.1, 0.8, 0.99, 0.6, 0.3, 0.01])
    keep = np.isfinite(y)
    assert brier_score(y, p) == pytest.approx(brier_score(y[keep], p[keep])) == pytest.approx(0.075)
    assert expected_calibration_error(y, p) == pytest.approx(expected_calibration_error(y[keep], p[keep]))
    assert reliability_bins(y, p)["n"].sum() == 4
    assert math.isnan(brier_score([np.nan], [0.5])) and math.isnan(expected_calibration_error([np.nan], [0.5]))


def test_invalid_inputs_raise():
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        brier_score([0, 1], [0.5, 1.2])
    with pytest.raises(ValueError, match="0, 1 or NaN"):
        expected_calibration_error([0, 2], [0.5, 0.5])
    with pytest.raises(ValueError, match="n_bins"):
        reliability_bins([0, 1], [0.5, 0.5], n_bins=0)
    with pytest.raises(TypeError):  # the label structure is a keyword: a task name cannot slip in by position
        calibration_metrics([[0]], [[0.5]], ["a"], "multi-label")


@pytest.mark.parametrize("n_bins", [5, 10, 15])
def test_reliability_bins_sum_to_n_and_agree_with_ece(n_bins):
    rng = np.random.default_rng(1)
    p = rng.beta(0.7, 0.7, 500)
    y = (rng.uniform(size=p.size) < p**1.5).astype(float)
    y[rng.uniform(size=p.size) < 0.1] = np.nan
    bins = reliability_bins(y, p, n_bins)
    assert list(bins.columns) == ["bin_lo", "bin_hi", "n", "mean_predicted", "observed"]
    assert bins["n"].sum() == np.isfinite(y).sum() and (bins["n"] > 0).all()
    ece = (bins["n"] * (bins["observed"] - bins["mean_predicted"]).abs()).sum() / bins["n"].sum()
    assert ece == pytest.approx(expected_calibration_error(y, p, n_bins))
    # Same per-bin values as scikit-learn (continuous p: no value sits on a bin edge)
    keep = np.isfinite(y)
    prob_true, prob_pred = calibration_curve(y[keep], p[keep], n_bins=n_bins, strategy="uniform")
    assert bins["observed"].to_numpy() == pytest.approx(prob_true)
    assert bins["mean_predicted"].to_numpy() == pytest.approx(prob_pred)
    assert ((bins["mean_predicted"] >= bins["bin_lo"]) & (bins["mean_predicted"] < bins["bin_hi"])).all()


def test_multiclass_brier_and_top_label_ece_hand_checked():
    labels = np.array([[1, 0, 0], [0, 1, 0], [0, 0, 1], [np.nan, np.nan, np.nan]], dtype=float)
    scores = np.array([[0.7, 0.2, 0.1], [0.6, 0.3, 0.1], [0.1, 0.1, 0.8], [0.2, 0.2, 0.6]])
    m = calibration_metrics(labels, scores, ["a", "b", "c"], exclusive=True)
    # row 1: 0.09 + 0.04 + 0.01 = 0.14; row 2: 0.36 + 0.49 + 0.01 = 0.86; row 3: 0.01 + 0.01 + 0.04 = 0.06
    assert m["brier"] == pytest.approx((0.14 + 0.86 + 0.06) / 3)
    # confidences 0.7 (right), 0.6 (wrong), 0.8 (right), one per bin:
    # |1 - 0.7| + |0 - 0.6| + |1 - 0.8| = 0.3 + 0.6 + 0.2, over 3 rows
    assert m["ece"] == pytest.approx((0.3 + 0.6 + 0.2) / 3)
    assert {name: e["n"] for name, e in m["per_label"].items()} == {"a": 3, "b": 3, "c": 3}
    # per-label entries are one-vs-rest
    assert m["per_label"]["b"]["brier"] == pytest.approx(brier_score([0, 1, 0], [0.2, 0.3, 0.1]))
    # class indices give the same result as one-hot labels
    same = calibration_metrics([0, 1, 2, -1], scores, ["a", "b", "c"], exclusive=True)
    assert same["brier"] == pytest.approx(m["brier"]) and same["ece"] == pytest.approx(m["ece"])


def test_calibration_metrics_multilabel_schema_and_means():
    labels = np.array([[0, 1, 1], [1, 1, np.nan], [1, 1, 0], [0, 1, 0], [np.nan, 1, 1]], dtype=float)
    scores = np.array([[0.2, 0.9, 0.7], [0.7, 0.8, 0.4], [0.9, 0.6, 0.2], [0.4, 0.95, 0.1], [0.5, 0.7, 0.8]])
    names = ["effusion", "always", "mass"]
    m = calibration_metrics(labels, scores, names, exclusive=False, n_bins=5)
    assert set(m) == {"brier", "ece", "ece_bins", "ece_binning", "per_label", "reliability"}
    assert m["ece_bins"] == 5 and m["ece_binning"] == "5 equal-width bins of the predicted probability"
    assert set(m["per_label"]) == set(m["reliability"]) == set(names)
    for name, j in zip(names, range(3), strict=True):
        entry = m["per_label"][name]
        assert set(entry) == {"brier", "ece", "n"}
        assert entry["n"] == np.isfinite(labels[:, j]).sum()
        assert entry["brier"] == pytest.approx(brier_score(labels[:, j], scores[:, j]))
        assert entry["ece"] == pytest.approx(expected_calibration_error(labels[:, j], scores[:, j], 5))
        rows = m["reliability"][name]
        assert rows == reliability_bins(labels[:, j], scores[:, j], 5).to_dict("records")
        assert all(set(r) == {"bin_lo", "bin_hi", "n", "mean_predicted", "observed"} for r in rows)
        assert sum(r["n"] for r in rows) == entry["n"]
    # "always" has one class only: left out of the top-level means
    both = ["effusion", "mass"]
    assert m["brier"] == pytest.approx(np.mean([m["per_label"][n]["brier"] for n in both]))
    assert m["ece"] == pytest.approx(np.mean([m["per_label"][n]["ece"] for n in both]))
    json.dumps(to_jsonable(m))  # JSON-ready


def test_calibration_metrics_binary_shapes_and_one_class_warning():
    y = np.array([0, 1, 1, 0], dtype=float)
    p = np.array([0.1, 0.8, 0.6, 0.3])
    m1 = calibration_metrics(y, p, ["x"], exclusive=False)
    m2 = calibration_metrics(y[:, None], np.stack([1 - p, p], axis=1), ["x"], exclusive=False)
    assert m1["brier"] == pytest.approx(0.075) and m2["brier"] == pytest.approx(0.075)
    assert m1["ece"] == pytest.approx(m2["ece"]) == pytest.approx(expected_calibration_error(y, p))
    with pytest.warns(UndefinedMetricWarning, match="both classes"):
        one = calibration_metrics([1, 1], [0.9, 0.7], ["x"], exclusive=False)
    assert math.isnan(one["brier"]) and one["per_label"]["x"]["brier"] == pytest.approx((0.01 + 0.09) / 2)


def test_fit_temperature_recovers_binary_temperature():
    rng = np.random.default_rng(2)
    z = rng.normal(0, 2, (20_000, 1))
    y = (rng.uniform(size=z.shape) < expit(z)).astype(float)
    y[rng.uniform(size=z.shape) < 0.05] = np.nan  # unknown labels are ignored
    t = fit_temperature(3 * z, y, exclusive=False)
    assert t == pytest.approx(3.0, rel=0.1)
    calibrated = apply_temperature(3 * z, t, exclusive=False)
    assert calibrated.shape == z.shape
    assert expected_calibration_error(y[:, 0], calibrated[:, 0]) < expected_calibration_error(
        y[:, 0], expit(3 * z[:, 0])
    )


def test_fit_temperature_recovers_multilabel_and_multiclass_temperature():
    rng = np.random.default_rng(3)
    z = rng.normal(0, 1.5, (5_000, 3))
    y = (rng.uniform(size=z.shape) < expit(z)).astype(float)
    assert fit_temperature(3 * z, y, exclusive=False) == pytest.approx(3.0, rel=0.1)

    z = rng.normal(0, 2, (10_000, 4))
    p = softmax(z, axis=1)
    cls = (rng.uniform(size=(z.shape[0], 1)) > np.cumsum(p, axis=1)).sum(axis=1)  # y ~ Categorical(p)
    labels = np.eye(4)[cls]
    labels[:200] = np.nan  # unknown class rows
    t = fit_temperature(3 * z, labels, exclusive=True)
    assert t == pytest.approx(3.0, rel=0.1)
    assert fit_temperature(3 * z, np.where(np.arange(z.shape[0]) < 200, -1, cls), exclusive=True) == pytest.approx(t)
    assert apply_temperature(3 * z, t, exclusive=True).sum(axis=1) == pytest.approx(np.ones(z.shape[0]))


def test_fit_temperature_hand_worked_and_errors():
    # 3 of 4 right at logit +-2: NLL minimal where sigmoid(2 / T) = 3/4, i.e. T = 2 / log 3
    assert fit_temperature([2.0, -2.0, 2.0, -2.0], [1, 0, 0, 0], exclusive=False) == pytest.approx(
        2 / math.log(3), rel=1e-4
    )
    with pytest.raises(ValueError, match="no known labels"):
        fit_temperature([[1.0], [2.0]], [[np.nan], [np.nan]], exclusive=False)
    with pytest.raises(ValueError, match="no known labels"):
        fit_temperature(np.zeros((2, 3)), np.full((2, 3), np.nan), exclusive=True)
    with pytest.raises(ValueError, match="temperature must be"):
        apply_temperature([0.0], 0.0, exclusive=False)
    with pytest.warns(UndefinedMetricWarning, match="bound"):
        fit_temperature([1.0, 2.0, 3.0], [1, 1, 1], exclusive=False)  # one class: sharpen without limit


def test_apply_temperature_values():
    assert apply_temperature([0.0, 2.0], 2.0, exclusive=False) == pytest.approx([0.5, expit(1.0)])
    assert apply_temperature([[2.0, 0.0]], 1.0, exclusive=True)[0] == pytest.approx(softmax([2.0, 0.0]))


def test_reliability_diagram_writes_png_atomically(tmp_path):
    m = calibration_metrics(
        np.array([[0, 1], [1, 0], [1, 1], [0, np.nan]], dtype=float),
        np.array([[0.1, 0.9], [0.8, 0.3], [0.6, 0.7], [0.3, 0.5]]),
        ["a", "b"],
        exclusive=False,
    )
    out = reliability_diagram(m["reliability"], tmp_path / "figs" / "reliability.png", title="test")
    assert out == tmp_path / "figs" / "reliability.png"
    data = out.read_bytes()
    assert len(data) > 1000 and data[:8] == b"\x89PNG\r\n\x1a\n"
    assert [p.name for p in out.parent.iterdir()] == ["reliability.png"]  # no temporary left beside it
    empty = reliability_diagram({}, tmp_path / "empty.png")
    assert empty.stat().st_size > 0
