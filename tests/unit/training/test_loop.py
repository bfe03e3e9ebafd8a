"""The training step: gradient accumulation, the host-sync cadence, torch.compile fallback (CPU only)."""

from __future__ import annotations

import logging

import numpy as np
import pytest
import torch
from torch import nn

from medtransfer.config import TrainConfig
from medtransfer.data.transforms import RadiographAugment
from medtransfer.errors import ConfigError
from medtransfer.training import device as device_mod
from medtransfer.training import loop
from medtransfer.training.batches import Batches
from medtransfer.training.device import maybe_compile
from medtransfer.training.loop import forward_backward, train_model_epoch
from medtransfer.training.tasks import Task


def bn_free_model(seed: int = 0) -> nn.Module:
    """No BatchNorm, no dropout: micro-batching is then exact up to float rounding."""
    torch.manual_seed(seed)
    return nn.Sequential(
        nn.Conv2d(1, 4, 3, padding=1), nn.ReLU(), nn.AdaptiveAvgPool2d(2), nn.Flatten(), nn.Linear(16, 2)
    )


class NoFreezing:
    """The two strategy hooks the epoch calls."""

    def set_train_mode(self, model: nn.Module) -> None:
        pass

    def on_step(self, step: int, model: nn.Module, optimizer) -> None:
        pass


def grads(model: nn.Module) -> list[torch.Tensor]:
    return [p.grad.clone() for p in model.parameters()]


@pytest.mark.parametrize(("n", "accum"), [(8, 2), (8, 4), (7, 2), (3, 4)])
def test_accumulated_gradients_equal_the_whole_batch(n, accum):
    g = torch.Generator().manual_seed(1)
    x = torch.rand(n, 1, 8, 8, generator=g)
    y = (torch.rand(n, 2, generator=g) < 0.5).float()
    task = Task("multilabel", 2)
    whole, parts = bn_free_model(), bn_free_model()
    loss_whole = forward_backward(whole, task, x, y, grad_accum=1)
    loss_parts = forward_backward(parts, task, x, y, grad_accum=accum)
    assert torch.allclose(loss_whole, loss_parts, atol=1e-6)
    for a, b in zip(grads(whole), grads(parts), strict=True):
        assert torch.allclose(a, b, atol=1e-6, rtol=1e-5)


def test_accumulation_splits_tuple_targets():
    # segmentation batches carry (target, annotated mask): both halves must follow the images
    seen = []

    class Recording(Task):
        def loss(self, logits, targets):
            seen.append((logits.shape[0], targets[0].shape[0], targets[1].shape[0]))
            return logits.float().mean()

    model = bn_free_model()
    x = torch.rand(6, 1, 8, 8)
    forward_backward(model, Recording("binary", 1), x, (torch.zeros(6, 3), torch.ones(6, 2)), grad_accum=2)
    assert seen == [(3, 3, 3), (3, 3, 3)]


def random_batches(cfg: TrainConfig) -> Batches:
    """3 augmented batches of 8 random images with 2 random labels each."""
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, size=(24, 1, 16, 16), dtype=np.uint8)
    labels = (rng.random((24, 2)) < 0.5).astype(np.float32)
    return Batches(
        images, labels, np.arange(24), cfg.batch_size, [0.5], [0.25], torch.device("cpu"),
        augment=RadiographAugment(), shuffle=True, drop_last=True,
    )  # fmt: skip


def epoch_of(accum: int) -> tuple[nn.Module, float, list, torch.optim.lr_scheduler.LRScheduler]:
    """One augmented epoch of 3 batches of 8 over random images; returns the model, loss, progress infos, scheduler."""
    cfg = TrainConfig(batch_size=8, grad_accum=accum, epochs=1, lr=0.01)
    batches = random_batches(cfg)
    model = bn_free_model()
    optimizer = torch.optim.AdamW(model.parameters(), lr=cfg.lr, weight_decay=1e-4)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda _: 1.0)
    infos: list = []
    loss = train_model_epoch(
        model, Task("multilabel", 2), NoFreezing(), optimizer, scheduler, batches, cfg, 0, 0, infos.append
    )
    return model, loss, infos, scheduler


def test_an_epoch_with_grad_accum_makes_the_same_updates_and_steps():
    one, loss_one, _, sched_one = epoch_of(1)
    two, loss_two, _, sched_two = epoch_of(2)
    assert sched_one.last_epoch == sched_two.last_epoch == 3  # optimizer steps per epoch do not change
    assert loss_two == pytest.approx(loss_one, abs=1e-6)
    for a, b in zip(one.parameters(), two.parameters(), strict=True):
        assert torch.allclose(a, b, atol=1e-5)


def test_the_loss_is_read_back_only_every_sync_every_steps_and_at_the_end(monkeypatch):
    monkeypatch.setattr(loop, "SYNC_EVERY", 2)
    _, _, infos, _ = epoch_of(1)
    assert [info is not None for info in infos] == [True, False, True]  # steps 0 and 2 (the last)


class NoStrategy(NoFreezing):
    """Every strategy hook ``fit`` calls, doing nothing."""

    def on_train_start(self, model: nn.Module) -> None:
        pass

    def on_epoch_start(self, epoch: int, model: nn.Module, optimizer) -> None:
        pass

    def state_dict(self) -> dict:
        return {}

    def load_state_dict(self, state: dict, model: nn.Module) -> None:
        pass


def test_fit_without_validation_keeps_the_epoch_with_the_lowest_training_loss(tmp_path):
    # self-supervised pretraining has no val batches and no score: the task needs only a loss
    class LossOnly:
        loss = staticmethod(Task("multilabel", 2).loss)

    cfg = TrainConfig(batch_size=8, epochs=3, lr=0.05)
    model = bn_free_model()
    optimizer = torch.optim.AdamW(model.parameters(), lr=cfg.lr)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda _: 1.0)
    state = loop.fit_model(
        model, LossOnly(), NoStrategy(), optimizer, scheduler, random_batches(cfg), None, cfg, 0, tmp_path, False
    )
    assert [list(row) for row in state.history] == [["epoch", "train_loss", "lr", "seconds"]] * 3
    losses = [row["train_loss"] for row in state.history]
    assert state.epoch == 3 and state.best_epoch == int(np.argmin(losses)) and state.best_score == -min(losses)
    assert (tmp_path / "best.safetensors").is_file() and (tmp_path / "checkpoint.pt").is_file()


def test_grad_accum_must_divide_the_batch_when_the_config_loads():
    assert TrainConfig(batch_size=64, grad_accum=4).grad_accum == 4
    with pytest.raises(ConfigError, match="train.grad_accum must be a divisor of train.batch_size=32"):
        TrainConfig(batch_size=32, grad_accum=3)
    with pytest.raises(ConfigError, match="train.grad_accum must be >= 1"):
        TrainConfig(batch_size=32, grad_accum=0)


def test_compile_is_skipped_with_a_warning_where_unsupported(monkeypatch, caplog):
    monkeypatch.setattr(device_mod, "_compile_unsupported", lambda device: "no usable Triton for this GPU")
    model = bn_free_model()
    with caplog.at_level(logging.WARNING, logger="medtransfer.training.device"):
        assert maybe_compile(model, torch.device("cpu")) is False
    assert "skipped, no usable Triton" in caplog.text
    assert getattr(model, "_compiled_call_impl", None) is None


def test_compile_keeps_the_module_and_its_state_dict_keys(monkeypatch):
    monkeypatch.setattr(device_mod, "_compile_unsupported", lambda device: None)
    model = bn_free_model()
    keys = list(model.state_dict())
    params = [id(p) for p in model.parameters()]
    assert maybe_compile(model, torch.device("cpu")) is True  # compiles lazily: nothing runs here
    assert getattr(model, "_compiled_call_impl", None) is not None
    assert list(model.state_dict()) == keys and [id(p) for p in model.parameters()] == params


@pytest.mark.parametrize(("patience", "epochs_run"), [(None, 4), (2, 3)])
def test_a_tied_validation_score_keeps_the_later_epoch_but_not_the_patience(tmp_path, patience, epochs_run):
    # a validation AUC saturated at 1.0 from epoch 1 on: the later, longer-trained epoch is kept; early stopping
    # still counts the ties as validations without a gain
    cfg = TrainConfig(batch_size=8, epochs=4, lr=0.05, early_stop_patience=patience)
    model = bn_free_model()
    optimizer = torch.optim.AdamW(model.parameters(), lr=cfg.lr)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda _: 1.0)
    task = Task("multilabel", 2)
    state = loop.fit_model(
        model,
        task,
        NoStrategy(),
        optimizer,
        scheduler,
        random_batches(cfg),
        None,
        cfg,
        0,
        tmp_path,
        False,
        score=lambda m: 1.0,
    )
    assert state.epoch == epochs_run and state.best_epoch == epochs_run - 1 and state.best_score == 1.0
