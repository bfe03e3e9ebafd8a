"""The learning-rate range test on a tiny regression problem."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from medtransfer.training.lr_finder import lr_find


def problem() -> tuple[nn.Module, list[tuple[torch.Tensor, torch.Tensor]]]:
    g = torch.Generator().manual_seed(0)
    w = torch.randn(4, 1, generator=g)
    batches = []
    for _ in range(8):
        x = torch.randn(64, 4, generator=g)
        batches.append((x, x @ w + 0.1 * torch.randn(64, 1, generator=g)))
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(4, 16), nn.BatchNorm1d(16), nn.ReLU(), nn.Linear(16, 1))
    return model, batches


def test_lr_find_suggests_a_finite_rate_in_range_and_restores_the_model() -> None:
    model, batches = problem()
    model.train()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    params = list(model.parameters())

    def loss_fn(batch: tuple[torch.Tensor, torch.Tensor]) -> torch.Tensor:
        x, y = batch
        return F.mse_loss(model(x), y)

    lrs, losses, suggestion = lr_find(model, loss_fn, batches, lambda m: torch.optim.SGD(m.parameters(), lr=1.0))

    assert math.isfinite(suggestion) and 1e-7 <= suggestion <= 10
    assert 1e-4 < suggestion < 1.0  # where SGD on this problem learns fastest, well before it diverges
    assert len(lrs) == len(losses) < 100  # stopped once the loss blew up
    assert all(b > a for a, b in zip(lrs, lrs[1:], strict=False))
    assert lrs[0] == pytest.approx(1e-7)
    assert all(math.isfinite(v) for v in losses)
    for key, value in model.state_dict().items():  # weights and BatchNorm statistics
        assert torch.equal(value, before[key]), key
    assert [id(p) for p in model.parameters()] == [id(p) for p in params]
    assert all(p.grad is None for p in model.parameters())


def test_lr_find_keeps_discriminative_ratios() -> None:
    model, batches = problem()
    made = []

    def factory(m: nn.Module) -> torch.optim.Optimizer:
        made.append(torch.optim.SGD([{"params": m[0].parameters(), "lr": 0.1}, {"params": m[1:].parameters()}], lr=1.0))
        return made[0]

    lrs, _, _ = lr_find(model, lambda b: F.mse_loss(model(b[0]), b[1]), batches, factory, end_lr=1e-2, num_iter=20)
    first, rest = (g["lr"] for g in made[0].param_groups)
    assert first == pytest.approx(0.1 * rest) and rest == pytest.approx(lrs[-1])


def test_lr_find_reiterates_short_loaders_and_rejects_bad_ranges() -> None:
    model, batches = problem()
    lrs, _, _ = lr_find(
        model,
        lambda b: F.mse_loss(model(b[0]), b[1]),
        batches[:2],
        lambda m: torch.optim.SGD(m.parameters(), lr=1.0),
        end_lr=1e-3,
        num_iter=10,
    )
    assert len(lrs) == 10
    with pytest.raises(ValueError, match="start_lr"):
        lr_find(model, lambda b: b, batches, lambda m: torch.optim.SGD(m.parameters()), start_lr=1.0, end_lr=0.1)
