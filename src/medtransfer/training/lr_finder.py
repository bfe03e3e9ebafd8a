"""The learning-rate range test (Leslie Smith, 2015; fastai's ``lr_find``)."""

from __future__ import annotations

import copy
import math
from collections.abc import Callable, Iterable, Iterator
from typing import Any

import numpy as np
import torch
from torch import nn
from torch.optim import Optimizer


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
    if not 0 < start_lr < end_lr or num_iter < 2:
        raise ValueError(f"need 0 < start_lr < end_lr and num_iter >= 2, got {start_lr}, {end_lr}, {num_iter}")
    saved = copy.deepcopy(model.state_dict())
    optimizer = optimizer_factory(model)
    top = max(g["lr"] for g in optimizer.param_groups)
    ratios = [g["lr"] / top if top > 0 else 1.0 for g in optimizer.param_groups]
    gamma = (end_lr / start_lr) ** (1 / (num_iter - 1))
    lrs: list[float] = []
    losses: list[float] = []
    avg, best = 0.0, math.inf
    try:
        for i, batch in enumerate(_repeat(batches, num_iter)):
            lr = start_lr * gamma**i
            for group, ratio in zip(optimizer.param_groups, ratios, strict=True):
                group["lr"] = lr * ratio
            optimizer.zero_grad(set_to_none=True)
            loss = loss_fn(batch)
            loss.backward()
            optimizer.step()
            avg = beta * avg + (1 - beta) * float(loss.detach())
            smoothed = avg / (1 - beta ** (i + 1))  # bias correction: early averages lean toward 0
            if not math.isfinite(smoothed) or smoothed > 4 * best:
                break
            lrs.append(lr)
            losses.append(smoothed)
            best = min(best, smoothed)
    finally:
        model.load_state_dict(saved)
        model.zero_grad(set_to_none=True)
    return lrs, losses, _steepest(lrs, losses, skip=num_iter // 10)


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

    from medtransfer.io import atomic_write

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
