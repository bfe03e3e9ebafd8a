import numpy as np
import pytest
import torch
import torch.nn.functional as F

from medtransfer.errors import ConfigError
from medtransfer.training.tasks import make_task


def test_multilabel_bce_ignores_nan_labels_and_their_gradient():
    labels = np.array([[1, np.nan], [0, 1], [np.nan, 0]], dtype=np.float32)
    task = make_task("multilabel", labels)
    logits = torch.randn(3, 2, requires_grad=True)
    loss = task.loss(logits, torch.from_numpy(labels))
    known = ~np.isnan(labels)
    ref = F.binary_cross_entropy_with_logits(logits[torch.from_numpy(known)], torch.from_numpy(labels[known]))
    assert loss.item() == pytest.approx(ref.item(), rel=1e-6)
    loss.backward()
    assert logits.grad[0, 1] == 0 and logits.grad[2, 0] == 0 and logits.grad[1, 1] != 0


def test_pos_weight_is_neg_over_pos():
    labels = np.array([[1], [0], [0], [0]], dtype=np.float32)
    task = make_task("binary", labels, pos_weight=True)
    assert task.pos_weight.tolist() == [3.0]
    logits = torch.zeros(4, 1)
    ref = F.binary_cross_entropy_with_logits(logits, torch.from_numpy(labels), pos_weight=torch.tensor([3.0]))
    assert task.loss(logits, torch.from_numpy(labels)).item() == pytest.approx(ref.item())


def test_multiclass_cross_entropy_skips_unknown_rows():
    labels = np.array([[0, 1, 0], [np.nan, np.nan, np.nan], [1, 0, 0]], dtype=np.float32)
    task = make_task("multiclass", labels)
    logits = torch.randn(3, 3)
    ref = F.cross_entropy(logits[[0, 2]], torch.tensor([1, 0]))
    assert task.loss(logits, torch.from_numpy(labels)).item() == pytest.approx(ref.item(), rel=1e-6)
    assert torch.allclose(task.scores(logits).sum(dim=1), torch.ones(3))


def test_bad_tasks_are_config_errors():
    with pytest.raises(ConfigError, match="one label column"):
        make_task("binary", np.zeros((4, 2), np.float32))
    with pytest.raises(ConfigError, match="no labels"):
        make_task("binary", np.zeros((4, 0), np.float32))
    with pytest.raises(ConfigError):
        make_task("unlabelled", np.zeros((4, 1), np.float32))


def test_prior_bias_is_the_training_log_odds_and_lands_in_the_head():
    import math

    from torch import nn

    labels = np.array([[1.0], [1.0], [1.0], [0.0], [np.nan]])
    task = make_task("binary", labels)
    assert task.prior_bias.item() == pytest.approx(math.log(3 / 1))
    assert make_task("binary", labels, pos_weight=True).prior_bias.item() == pytest.approx(0.0, abs=1e-6)
    multi = make_task("multiclass", np.eye(3)[[0, 0, 1, 2]])
    assert multi.prior_bias.tolist() == pytest.approx([math.log(0.5), math.log(0.25), math.log(0.25)])
    model = nn.Module()
    model.head = nn.Sequential(nn.Dropout(0.2), nn.Linear(4, 1))
    assert task.init_head(model) and model.head[1].bias.item() == pytest.approx(math.log(3))
    assert not make_task("multilabel", np.ones((4, 2))).init_head(model)  # 2 labels, 1 output: left alone
