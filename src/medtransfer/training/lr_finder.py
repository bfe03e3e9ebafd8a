"""The learning-rate range test (Leslie Smith, 2015; fastai's ``lr_find``).

:func:`suggest_lr` (``medtransfer lr-find``) runs it through the training loop: :func:`~medtransfer.training.loop.fit`
with the strategy's hooks and the :class:`LRFinder` callback, which sets each step's rate and stops the run once the
loss diverged. :func:`lr_find` runs the same test on any model, loss and batches.
"""

from __future__ import annotations

import copy
import dataclasses
import itertools
import math
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn
from torch.optim import Optimizer

from medtransfer.errors import TrainingFailed
from medtransfer.io import atomic_write
from medtransfer.models.weights import create_model
from medtransfer.training.callbacks import Callback, CancelFit, Run, StrategyHooks
from medtransfer.training.loop import fit
from medtransfer.training.run import _batches, pick_device, prepare
from medtransfer.training.tasks import make_task
from medtransfer.transfer.strategies import build_strategy


class RangeTest:
    """The test's schedule and stopping rule: step ``i`` trains at ``start_lr * gamma**i`` (``end_lr`` at step
    ``num_iter - 1``); :meth:`record` keeps the bias-corrected exponential average of the losses (``beta``) until it
    is not finite or exceeds 4× its best; :meth:`suggestion` is the steepest descent's rate."""

    def __init__(self, start_lr: float = 1e-7, end_lr: float = 10.0, num_iter: int = 100, beta: float = 0.98):
        if not 0 < start_lr < end_lr or num_iter < 2:
            raise ValueError(f"need 0 < start_lr < end_lr and num_iter >= 2, got {start_lr}, {end_lr}, {num_iter}")
        self.start_lr, self.num_iter, self.beta = start_lr, num_iter, beta
        self.gamma = (end_lr / start_lr) ** (1 / (num_iter - 1))
        self.lrs: list[float] = []
        self.losses: list[float] = []
        self.avg, self.best = 0.0, math.inf

    def lr(self, i: int) -> float:
        return self.start_lr * self.gamma**i

    def record(self, i: int, loss: float) -> bool:
        """Add step ``i``'s loss; ``False`` (and nothing added) once the smoothed loss diverged."""
        self.avg = self.beta * self.avg + (1 - self.beta) * loss
        smoothed = self.avg / (1 - self.beta ** (i + 1))  # bias correction: early averages lean toward 0
        if not math.isfinite(smoothed) or smoothed > 4 * self.best:
            return False
        self.lrs.append(self.lr(i))
        self.losses.append(smoothed)
        self.best = min(self.best, smoothed)
        return True

    def suggestion(self) -> float:
        return _steepest(self.lrs, self.losses, skip=self.num_iter // 10)


def lr_find(
    model: nn.Module,
    loss_fn: Callable[[Any], torch.Tensor],
    batches: Iterable[Any],
    optimizer_factory: Callable[[nn.Module], Optimizer],
    start_lr: float = 1e-7,
    end_lr: float = 10.0,
    num_iter: int = 100,
    beta: float = 0.98,
) -> tuple[list[float], list[float], float]:
    """Train with an exponentially growing learning rate and return ``(lrs, smoothed_losses, suggestion)``.

    Stops early when the smoothed loss exceeds 4× its best; ``suggestion`` is the learning rate at the
    steepest descent of the smoothed loss (NaN if the first step already diverged). The model's weights
    and BatchNorm statistics are restored afterwards; its train/eval mode is left as the caller set it.
    Groups with discriminative rates keep their ratios to the largest one, which is the rate reported.

    Example::

        model.train(); strategy.set_train_mode(model)
        lrs, losses, lr = lr_find(model, lambda b: task.step(b)["loss"], loader,
                                  lambda m: torch.optim.AdamW(strategy.param_groups(m)))
    """
    test = RangeTest(start_lr, end_lr, num_iter, beta)
    saved = copy.deepcopy(model.state_dict())
    optimizer = optimizer_factory(model)
    ratios = _ratios(optimizer)
    try:
        for i, batch in enumerate(_repeat(batches, num_iter)):
            _set_lr(optimizer, test.lr(i), ratios)
            optimizer.zero_grad(set_to_none=True)
            loss = loss_fn(batch)
            loss.backward()
            optimizer.step()
            if not test.record(i, float(loss.detach())):
                break
    finally:
        model.load_state_dict(saved)
        model.zero_grad(set_to_none=True)
    return test.lrs, test.losses, test.suggestion()


class LRFinder(Callback):
    """The range test as a callback of :func:`~medtransfer.training.loop.fit` (fastai's ``LRFinder``): before each
    batch it sets the step's rate (after the strategy's step hook; parameter groups keep their ratios to the
    largest rate), after each step it records the loss, and it ends the run (:class:`CancelFit`) after ``num_iter``
    steps or once the smoothed loss diverged. ``after_fit`` restores the weights of ``before_fit``."""

    def __init__(self, start_lr: float = 1e-7, end_lr: float = 10.0, num_iter: int = 100, beta: float = 0.98):
        self.test = RangeTest(start_lr, end_lr, num_iter, beta)
        self.saved: dict | None = None
        self.ratios: list[float] = []
        self.i = 0

    def before_fit(self, run: Run) -> None:
        self.saved = copy.deepcopy(run.model.state_dict())

    def before_batch(self, run: Run) -> None:
        if self.i == 0:  # the groups' ratios as the strategy's hooks left them at the start of the first epoch
            self.ratios = _ratios(run.optimizer)
        _set_lr(run.optimizer, self.test.lr(self.i), self.ratios)

    def after_step(self, run: Run) -> None:
        going = self.test.record(self.i, float(run.batch_loss))
        self.i += 1
        if not going or self.i >= self.test.num_iter:
            raise CancelFit

    def after_fit(self, run: Run) -> None:
        if self.saved is not None:
            run.model.load_state_dict(self.saved)
            run.model.zero_grad(set_to_none=True)

    def suggestion(self) -> float:
        return self.test.suggestion()


class BatchStream:
    """``n`` batches of ``batches`` as one epoch, through as many of its epochs as needed (``(seed, 0)``, ``(seed,
    1)``, ...): the range test is one epoch of the loop, so epoch-scheduled strategies keep their first epoch."""

    def __init__(self, batches, n: int) -> None:
        self.batches, self.n, self.device = batches, n, batches.device

    def __len__(self) -> int:
        return self.n

    def epoch(self, seed: int, epoch: int) -> Iterator[Any]:
        if len(self.batches) == 0:
            return iter(())
        passes = (self.batches.epoch(seed, e) for e in itertools.count())
        return itertools.islice(itertools.chain.from_iterable(passes), self.n)


def _ratios(optimizer: Optimizer) -> list[float]:
    top = max(g["lr"] for g in optimizer.param_groups)
    return [g["lr"] / top if top > 0 else 1.0 for g in optimizer.param_groups]


def _set_lr(optimizer: Optimizer, lr: float, ratios: list[float]) -> None:
    for group, ratio in zip(optimizer.param_groups, ratios, strict=True):
        group["lr"] = lr * ratio


def _steepest(lrs: list[float], losses: list[float], skip: int) -> float:
    """The rate where the smoothed loss falls fastest per log-lr, ignoring the first ``skip`` points
    (as fastai does): there the average is still dominated by batch-to-batch noise."""
    if len(lrs) - skip < 2:
        skip = 0
    if len(lrs) < 2:
        return lrs[0] if lrs else math.nan
    slope = np.gradient(np.asarray(losses[skip:]), np.log(lrs[skip:]))
    return lrs[skip + int(np.argmin(slope))]


def _repeat(batches: Iterable[Any], n: int) -> Iterator[Any]:
    """``n`` batches, re-iterating ``batches`` (a DataLoader) as needed; stops if an iteration is empty."""
    count = 0
    while count < n:
        empty = True
        for batch in batches:
            empty = False
            yield batch
            count += 1
            if count >= n:
                return
        if empty:
            return


def plot_lr_find(lrs: list[float], losses: list[float], suggestion: float, path) -> None:
    """fastai's ``lr_find`` plot: smoothed loss against the learning rate (log axis), the suggestion marked; written
    atomically as PNG."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(5.5, 3.6), dpi=120)
    ax.plot(lrs, losses, color="C0")
    if math.isfinite(suggestion) and lrs:
        y = float(np.interp(np.log(suggestion), np.log(lrs), losses))
        ax.plot([suggestion], [y], "o", color="C3", label=f"suggested train.lr = {suggestion:.1e} (steepest descent)")
        ax.legend(loc="upper left", fontsize=8)
    ax.set_xscale("log")
    ax.set_xlabel("learning rate")
    ax.set_ylabel("smoothed training loss")
    ax.set_title("learning-rate range test", fontsize=10)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    atomic_write(path, lambda tmp: fig.savefig(tmp, format="png"))
    plt.close(fig)


def suggest_lr(cfg, num_iter: int = 100, progress: bool = True, plot: str | Path | None = None) -> float:
    """Run the LR range test on the config's training subset and return the suggested ``train.lr``; with ``plot``
    also write the loss-against-rate curve there (PNG).

    The test is one epoch of the training loop (:func:`~medtransfer.training.loop.fit`) of ``num_iter`` steps,
    through as many passes over the data as needed, with the strategy's hooks (planned for ``num_iter`` steps) and
    :class:`LRFinder`; ``cfg`` is a :class:`~medtransfer.config.Config`.
    """

    prep = prepare(cfg, progress)
    torch.manual_seed(cfg.seed)
    ds = prep.ds
    train_idx = prep.split.train_subset(cfg.train.n_train)
    task = make_task(cfg.task or ds.task, ds.labels[train_idx], cfg.train.pos_weight, cfg.train.loss)
    device = pick_device(cfg.train.device)
    model_cfg = dataclasses.replace(cfg.model, in_chans=ds.channels)
    model, _ = create_model(model_cfg, task.num_outputs, list(ds.label_names), cfg.data.image_size)
    model.to(device)
    strategy = build_strategy(cfg.transfer, cfg.train)
    strategy.plan(num_iter, num_iter)
    optimizer = torch.optim.AdamW(strategy.param_groups(model), **strategy.optimizer_options())
    train = BatchStream(_batches(prep, train_idx, cfg, model, device, train=True), num_iter)
    finder = LRFinder(num_iter=num_iter)
    plain = dataclasses.replace(cfg.train, grad_clip=None)  # clipping would hide the divergence the test looks for
    run = Run(model, task, strategy, optimizer, None, train, plain, cfg.seed)
    fit(run, [StrategyHooks(init_head=False, steps=False), finder])
    lr = finder.suggestion()
    if plot is not None and finder.test.lrs:
        plot_lr_find(finder.test.lrs, finder.test.losses, lr, plot)
    if not np.isfinite(lr):
        raise TrainingFailed("the LR range test diverged at its first step; check the data and model")
    return float(lr)
