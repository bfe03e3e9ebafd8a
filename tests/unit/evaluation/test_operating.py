"""Operating points: thresholds chosen by rule on validation, and the metrics at them with bootstrap CIs."""

from __future__ import annotations

import math

import numpy as np
import pytest
from sklearn.metrics import confusion_matrix, f1_score, roc_curve

from medtransfer.config import Config, from_dict
from medtransfer.errors import ConfigError
from medtransfer.evaluation.metrics import choose_threshold, summarize
from medtransfer.evaluation.operating import describe, operating_point, operating_points


@pytest.fixture
def scored(rng):
    y = rng.integers(0, 2, 400).astype(float)
    return y, y * 0.8 + rng.normal(0, 0.5, 400)


def test_point_metrics_match_sklearn(scored):
    y, s = scored
    p = operating_point(y, s, 0.4, n_boot=200, seed=1)
    tn, fp, fn, tp = confusion_matrix(y, s >= 0.4).ravel()
    assert (p["tp"], p["fp"], p["tn"], p["fn"]) == (tp, fp, tn, fn)
    assert p["sensitivity"] == pytest.approx(tp / (tp + fn))
    assert p["specificity"] == pytest.approx(tn / (tn + fp))
    assert p["ppv"] == pytest.approx(tp / (tp + fp)) and p["npv"] == pytest.approx(tn / (tn + fn))
    assert p["f1"] == pytest.approx(f1_score(y, s >= 0.4))
    for name in ("sensitivity", "specificity", "ppv", "npv", "f1", "sens_at_spec90", "sens_at_spec95"):
        lo, hi = p[f"{name}_ci"]
        assert lo <= p[name] <= hi and hi - lo > 0.01, name


def test_sensitivity_at_specificity_is_the_roc_step(scored):
    y, s = scored
    fpr, tpr, _ = roc_curve(y, s, drop_intermediate=False)
    p = operating_point(y, s, math.nan, n_boot=0)
    assert p["sens_at_spec90"] == pytest.approx(tpr[fpr <= 0.10 + 1e-12].max())
    assert p["sens_at_spec95"] == pytest.approx(tpr[fpr <= 0.05 + 1e-12].max())
    assert math.isnan(p["sensitivity"]) and "tp" not in p  # no threshold: only the ROC readings


@pytest.mark.parametrize("rule", ["sensitivity:0.9", "specificity:0.95", "youden", "0.5"])
def test_threshold_rules_reach_their_target_on_validation(scored, rule):
    y, s = scored
    t = choose_threshold(y, s, rule)
    p = operating_point(y, s, t, n_boot=0)
    if rule.startswith("sensitivity"):
        assert p["sensitivity"] >= 0.9 and operating_point(y, s, np.nextafter(t, 9), n_boot=0)["sensitivity"] < 0.9
    elif rule.startswith("specificity"):
        assert p["specificity"] >= 0.95
        lower = np.max(s[s < t])  # the next threshold down loses the target
        assert operating_point(y, s, lower, n_boot=0)["specificity"] < 0.95
    elif rule == "0.5":
        assert t == 0.5


def test_specificity_one_on_overlapping_scores_predicts_nobody_positive():
    y, s = np.array([0, 1, 0, 1.0]), np.array([0.9, 0.8, 0.1, 0.2])
    t = choose_threshold(y, s, "specificity:1")
    assert t > 0.9 and operating_point(y, s, t, n_boot=0)["specificity"] == 1.0


def test_patient_bootstrap_widens_the_ci_when_images_repeat(scored):
    y, s = scored
    y2, s2 = np.repeat(y, 4), np.repeat(s, 4)
    by_image = operating_point(y2, s2, 0.4, n_boot=300)
    by_patient = operating_point(y2, s2, 0.4, n_boot=300, groups=np.repeat(np.arange(400), 4))
    width = lambda p: p["sensitivity_ci"][1] - p["sensitivity_ci"][0]  # noqa: E731
    assert width(by_patient) > 1.5 * width(by_image)


def test_multilabel_macro_and_summary_schema(rng):
    y = rng.integers(0, 2, (300, 3)).astype(float)
    y[:20, 1] = np.nan
    s = y * 0.7 + rng.normal(0, 0.5, y.shape)
    per_label, macro = operating_points(y, s, [0.3, 0.4, 0.5], n_boot=100)
    assert macro["sensitivity"] == pytest.approx(np.mean([p["sensitivity"] for p in per_label]))
    assert per_label[1]["n_pos"] + per_label[1]["n_neg"] == 280
    m = summarize(y, s, ["a", "b", "c"], thresholds={"a": 0.3, "b": 0.4, "c": 0.5}, n_boot=50)
    assert m["operating_point"]["sensitivity"] == pytest.approx(macro["sensitivity"])
    assert m["per_label"]["b"]["operating_point"]["threshold"] == 0.4
    assert "macro mean over 3 labels" in describe({**m, "threshold_rule": "youden"})[0]
    exclusive = summarize(np.eye(3)[rng.integers(0, 3, 50)], rng.random((50, 3)), ["a", "b", "c"], exclusive=True)
    assert "operating_point" not in exclusive  # multi-class: the argmax is the decision


@pytest.mark.parametrize("bad", ["youdn", "sensitivity:0", "specificity:1.2", "1.5", "recall:0.9"])
def test_eval_threshold_is_checked_at_load(bad):
    with pytest.raises(ConfigError, match="eval.threshold"):
        from_dict(Config, {"eval": {"threshold": bad}})
