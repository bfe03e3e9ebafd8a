"""Metrics against scikit-learn, NaN handling, thresholds, and the metrics.json schema."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
from sklearn.metrics import roc_auc_score

from medtransfer.errors import ConfigError
from medtransfer.evaluation.metrics import (
    UndefinedMetricWarning,
    choose_threshold,
    macro_auc,
    one_hot,
    per_label_auc,
    roc_auc,
    summarize,
    threshold_metrics,
    to_jsonable,
    top1_accuracy,
)


def _multilabel(rng: np.random.Generator, n: int = 300, k: int = 4, nan_frac: float = 0.2):
    labels = rng.integers(0, 2, (n, k)).astype(float)
    scores = labels * 0.8 + rng.normal(size=(n, k))
    labels[rng.random((n, k)) < nan_frac] = np.nan
    return labels, scores


def test_roc_auc_matches_sklearn(rng):
    y = rng.integers(0, 2, 500)
    s = np.round(y + rng.normal(size=500), 1)  # rounding creates ties
    assert roc_auc(y, s) == pytest.approx(roc_auc_score(y, s), abs=1e-12)


def test_roc_auc_drops_nan_labels(rng):
    y = rng.integers(0, 2, 400).astype(float)
    s = y + rng.normal(size=400)
    y[::7] = np.nan
    keep = ~np.isnan(y)
    assert roc_auc(y, s) == pytest.approx(roc_auc_score(y[keep], s[keep]), abs=1e-12)


def test_roc_auc_single_class_warns_and_names_label():
    with pytest.warns(UndefinedMetricWarning, match="'effusion'"):
        assert math.isnan(roc_auc([1.0, 1.0, np.nan], [0.2, 0.3, 0.4], name="effusion"))
    with pytest.warns(UndefinedMetricWarning):
        assert math.isnan(roc_auc([np.nan, np.nan], [0.2, 0.3]))


def test_roc_auc_drops_non_finite_scores_with_warning():
    with pytest.warns(UndefinedMetricWarning, match="non-finite"):
        assert roc_auc([0, 1, 1, 0], [0.1, 0.9, np.nan, 0.2]) == 1.0


def test_roc_auc_rejects_bad_input():
    with pytest.raises(ValueError, match="0, 1 or NaN"):
        roc_auc([0, 0.5, 1], [0.1, 0.2, 0.3])
    with pytest.raises(ValueError, match="entries"):
        roc_auc([0, 1, 1], [0.1, 0.2])


def test_per_label_auc_multilabel(rng):
    labels, scores = _multilabel(rng)
    names = ["a", "b", "c", "d"]
    out = per_label_auc(labels, scores, names)
    assert list(out) == names
    for j, name in enumerate(names):
        keep = ~np.isnan(labels[:, j])
        assert out[name]["auc"] == pytest.approx(roc_auc_score(labels[keep, j], scores[keep, j]), abs=1e-12)
        assert out[name]["n_pos"] == int(np.sum(labels[:, j] == 1))
        assert out[name]["n_neg"] == int(np.sum(labels[:, j] == 0))


def test_per_label_auc_multiclass_one_vs_rest(rng):
    n, k = 400, 3
    classes = rng.integers(0, k, n)
    logits = rng.normal(size=(n, k)) + 1.5 * np.eye(k)[classes]
    probs = np.exp(logits) / np.exp(logits).sum(axis=1, keepdims=True)
    known = rng.random(n) > 0.1
    labels = one_hot(np.where(known, classes, -1), k)
    assert np.isnan(labels[~known]).all() and (labels[known].sum(axis=1) == 1).all()
    out = per_label_auc(labels, probs, ["x", "y", "z"])
    for j, name in enumerate(["x", "y", "z"]):
        expected = roc_auc_score(classes[known] == j, probs[known, j])
        assert out[name]["auc"] == pytest.approx(expected, abs=1e-12)
    sk_macro = roc_auc_score(classes[known], probs[known], multi_class="ovr", average="macro")
    assert macro_auc(out) == pytest.approx(sk_macro, abs=1e-12)


def test_macro_ignores_undefined_labels(rng):
    labels, scores = _multilabel(rng, k=3)
    labels[:, 1] = np.where(np.isnan(labels[:, 1]), np.nan, 0.0)  # only negatives
    with pytest.warns(UndefinedMetricWarning, match="'b'"):
        out = per_label_auc(labels, scores, ["a", "b", "c"])
    assert math.isnan(out["b"]["auc"])
    assert macro_auc(out) == pytest.approx((out["a"]["auc"] + out["c"]["auc"]) / 2)
    assert math.isnan(macro_auc([np.nan, np.nan]))
    assert math.isnan(macro_auc([]))


def test_one_hot_rejects_out_of_range():
    with pytest.raises(ValueError, match=r"\[0, 3\)"):
        one_hot([0, 3], 3)


def test_youden_on_separable_data_is_perfect():
    y = np.array([0, 0, 0, 0, 1, 1, 1])
    s = np.array([0.05, 0.2, 0.3, 0.35, 0.6, 0.7, 0.95])
    t = choose_threshold(y, s, method="youden")
    assert 0.35 < t <= 0.6
    m = threshold_metrics(y, s, t)
    assert m == {"sensitivity": 1.0, "specificity": 1.0, "accuracy": 1.0, "threshold": t}


def test_youden_maximises_j(rng):
    y = rng.integers(0, 2, 300)
    s = y + rng.normal(size=300)
    t = choose_threshold(y, s)
    best = threshold_metrics(y, s, t)
    for other in np.quantile(s, np.linspace(0.05, 0.95, 19)):
        m = threshold_metrics(y, s, other)
        assert m["sensitivity"] + m["specificity"] <= best["sensitivity"] + best["specificity"] + 1e-12


def test_threshold_edge_cases():
    with pytest.warns(UndefinedMetricWarning):
        assert math.isnan(choose_threshold([1, 1], [0.2, 0.3]))
    m = threshold_metrics([1, 1], [0.2, 0.8], 0.5)
    assert m["sensitivity"] == 0.5 and math.isnan(m["specificity"]) and m["accuracy"] == 0.5
    assert math.isnan(threshold_metrics([0, 1], [0.2, 0.8], float("nan"))["accuracy"])
    with pytest.raises(ConfigError, match="did you mean 'youden'"):
        choose_threshold([0, 1], [0.2, 0.8], method="youdn")


def test_top1_accuracy_skips_unknown_rows():
    labels = np.array([[1, 0, 0], [0, 0, 1], [np.nan] * 3, [0, 1, 0]])
    probs = np.array([[0.7, 0.2, 0.1], [0.5, 0.1, 0.4], [0.1, 0.1, 0.8], [0.2, 0.6, 0.2]])
    assert top1_accuracy(labels, probs) == pytest.approx(2 / 3)


def test_summarize_schema_multilabel_with_thresholds(rng):
    labels, scores = _multilabel(rng, n=200, k=2)
    names = ["effusion", "nodule"]
    thresholds = {name: choose_threshold(labels[:, j], scores[:, j]) for j, name in enumerate(names)}
    m = summarize(labels, scores, names, exclusive=False, thresholds=thresholds, n_boot=100)
    assert set(m) == {"auc", "auc_ci", "n", "per_label", "operating_point"}
    assert m["n"] == 200 and list(m["per_label"]) == names
    keys = {"auc", "auc_ci", "n_pos", "n_neg", "sensitivity", "specificity", "accuracy", "threshold", "operating_point"}
    for entry in m["per_label"].values():
        assert set(entry) == keys
        lo, hi = entry["auc_ci"]
        assert lo <= entry["auc"] <= hi
    lo, hi = m["auc_ci"]
    assert lo <= m["auc"] <= hi
    assert m["auc"] == pytest.approx(macro_auc(per_label_auc(labels, scores, names)))


def test_summarize_binary_and_multiclass(rng):
    y = rng.integers(0, 2, 120).astype(float)
    s = y + rng.normal(size=120)
    m = summarize(y[:, None], s[:, None], ["pneumonia"], exclusive=False, n_boot=50)
    assert set(m) == {"auc", "auc_ci", "n", "per_label", "operating_point"}
    assert set(m["per_label"]["pneumonia"]) == {"auc", "auc_ci", "n_pos", "n_neg", "operating_point"}
    softmax = np.stack([1 - s, s], axis=1)  # (N, 2): column 1 is the positive class
    assert summarize(y, softmax, ["pneumonia"], exclusive=False, n_boot=0)["auc"] == pytest.approx(m["auc"])
    with_threshold = summarize(y, s, ["pneumonia"], exclusive=False, thresholds=0.5, n_boot=0)
    assert with_threshold["per_label"]["pneumonia"]["threshold"] == 0.5

    classes = rng.integers(0, 3, 150)
    probs = rng.dirichlet(np.ones(3), 150)
    names = ["adenoma", "carcinoma", "normal"]
    mc = summarize(classes, probs, names, exclusive=True, n_boot=50, patient_ids=np.arange(150) // 3)
    assert set(mc) == {"auc", "auc_ci", "n", "accuracy", "per_label"}
    assert mc["accuracy"] == pytest.approx(np.mean(probs.argmax(axis=1) == classes))
    assert mc == summarize(
        one_hot(classes, 3), probs, names, exclusive=True, n_boot=50, patient_ids=np.arange(150) // 3
    )
    with pytest.raises(TypeError):  # the label structure is a keyword: a task name cannot slip in by position
        summarize(classes, probs, names, "multiclass")


def test_to_jsonable_turns_nan_into_none():
    labels = np.array([[0.0, 1.0], [1.0, 1.0], [0.0, 1.0], [1.0, np.nan]])
    scores = np.array([[0.1, 0.5], [0.8, 0.4], [0.3, 0.2], [0.9, 0.1]])
    with pytest.warns(UndefinedMetricWarning):
        m = summarize(labels, scores, ["a", "b"], exclusive=False, n_boot=20)
    assert math.isnan(m["per_label"]["b"]["auc"])
    clean = to_jsonable(m)
    assert clean["per_label"]["b"]["auc"] is None and clean["per_label"]["b"]["auc_ci"] == [None, None]
    assert json.loads(json.dumps(clean, allow_nan=False)) == clean
    assert to_jsonable({"x": (np.float32(0.5), np.int64(3), np.array([np.inf]))}) == {"x": [0.5, 3, [None]]}
