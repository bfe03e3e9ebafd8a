"""The task kinds: registry, the regression kind's numbers, and a new kind added in a few lines."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from medtransfer.errors import ConfigError, UnknownNameError
from medtransfer.tasks.base import TASK_KINDS, TaskKind, builtin_kinds, task_kind


def test_the_builtin_kinds_and_their_metrics():
    kinds = {n: task_kind(n) for n in builtin_kinds().names()}
    assert set(kinds) == {"binary", "multiclass", "multilabel", "regression", "segmentation", "unlabelled"}
    assert (kinds["binary"].metric, kinds["binary"].higher_is_better) == ("auc", True)
    assert (kinds["regression"].metric, kinds["regression"].higher_is_better) == ("mae", False)
    assert kinds["regression"].axis == "MAE (lower is better)"
    assert kinds["segmentation"].family == "volumes" and not kinds["unlabelled"].supervised
    with pytest.raises(UnknownNameError, match="did you mean \\['regression'\\]"):
        task_kind("regresion")


def test_regression_standardises_targets_and_predicts_in_their_unit():
    y = np.array([[10.0], [20.0], [30.0], [np.nan]], np.float32)
    task = task_kind("regression").runtime(y)
    assert task.center == pytest.approx([20.0]) and task.scale == pytest.approx([math.sqrt(200 / 3)])
    logits = torch.tensor([[-1.0], [0.0], [1.0], [0.5]])
    np.testing.assert_allclose(task.scores(logits).numpy()[:3, 0], [20 - 8.16497, 20, 20 + 8.16497], rtol=1e-5)
    # l1 on standardised targets, the unknown row left out: |(-1) - (-1.2247)| + |0 - 0| + |1 - 1.2247| over 3
    assert task.loss(logits, torch.from_numpy(y)).item() == pytest.approx(2 * 0.224745 / 3, rel=1e-4)
    huber = task_kind("regression").runtime(y, loss="huber")
    assert huber.loss(logits, torch.from_numpy(y)).item() < task.loss(logits, torch.from_numpy(y)).item()
    restored = task_kind("regression").restore(1, task.state())
    torch.testing.assert_close(restored.scores(logits), task.scores(logits))


def test_regression_refuses_what_it_cannot_learn():
    kind = task_kind("regression")
    with pytest.raises(ConfigError, match="constant"):
        kind.check_labels(np.full((5, 1), 3.0), ["dose"])
    with pytest.raises(ConfigError, match="train.loss must be one of"):
        kind.runtime(np.arange(5.0)[:, None], loss="hinge")
    with pytest.raises(ConfigError, match="pos_weight"):
        kind.runtime(np.arange(5.0)[:, None], pos_weight=True)
    with pytest.raises(ConfigError, match="train.loss applies to regression"):
        task_kind("binary").runtime(np.array([[0.0], [1.0]]), loss="l1")


def test_regression_strata_are_quantile_bins():
    y = np.arange(100, dtype=float)[:, None]
    y[5] = np.nan
    strata = task_kind("regression").strata(y)
    assert strata[5] == -1 and set(strata[np.isfinite(y[:, 0])]) == {0, 1, 2, 3, 4}
    counts = np.bincount(strata[strata >= 0])
    assert counts.sum() == 99 and counts.min() >= 19 and counts.max() <= 20  # 5 bins of the 99 known values


def test_regression_metrics_and_paired_test():
    rng = np.random.default_rng(0)
    y = rng.uniform(1, 18, size=(300, 1))
    good, bad = y + rng.normal(0, 1, y.shape), y + rng.normal(0, 3, y.shape)
    kind = task_kind("regression")
    m = kind.summarize(y, good, ["age"], patient_ids=np.arange(300) // 3, n_boot=200)
    assert m["metric"] == "mae" and m["score"] == m["mae"] and m["mae_ci"][0] < m["mae"] < m["mae_ci"][1]
    assert 0.6 < m["mae"] < 1.0 and m["r2"] > 0.9 and m["per_target"]["age"]["n"] == 300
    res = kind.paired(y, good, bad)
    assert res["delta"] < 0 and res["p_value"] < 0.001  # a is better: its MAE is lower (bootstrap p: 1/2001 at least)
    assert kind.validation_score(y, good) == pytest.approx(m["mae"])


def test_a_new_kind_is_one_small_registered_class(monkeypatch):
    """What docs/architecture.md shows: a kind registers itself and every caller that asks the registry sees it."""
    from medtransfer.data.dataset import ArraySource, ImageDataset, default_meta

    class Ordinal(TaskKind):  # e.g. a 0-4 severity grade scored by its mean absolute grade error
        name = "ordinal"
        metric, metric_label, higher_is_better, unit_interval = "grade_error", "grade error", False, False

        def strata(self, labels):
            return np.nan_to_num(labels[:, 0], nan=-1).astype(np.int64)

    monkeypatch.setattr(TASK_KINDS, "_items", {**TASK_KINDS._items, "ordinal": Ordinal()})
    assert task_kind("ordinal").axis == "grade error (lower is better)"
    ds = ImageDataset(
        "grades",
        ArraySource(np.zeros((4, 8, 8), np.uint8), "g"),
        np.array([[0], [1], [2], [np.nan]], np.float32),
        ("grade",),
        "ordinal",
        default_meta(4),
    )  # the data contract accepts the new kind ...
    from medtransfer.data.splits import _strata

    assert _strata(ds.labels, ds.task).tolist() == [0, 1, 2, -1]  # ... and splits stratify by its rule
