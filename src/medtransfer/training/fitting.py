"""Fitting a built model: the strategy, the optimizer and schedule, ``train.max_steps``, the loop, the best weights.

:func:`fit_best` is what every run does once its model, task object and batches exist (classification, regression
and segmentation alike; ``run.py`` and ``segmentation/train.py`` call it). :func:`step_budget` is also what
``--dry-run`` (``plan.py``) counts steps with.
"""

from __future__ import annotations

import logging
from pathlib import Path

import pandas as pd

from medtransfer.config import Config
from medtransfer.training.checkpoint import load_weights_file
from medtransfer.training.device import optimizer_and_scheduler
from medtransfer.training.loop import fit_model
from medtransfer.transfer.strategies import build_strategy

log = logging.getLogger(__name__)


def fit_best(cfg: Config, out: Path, model, task, train, val, device, progress: bool, score=None):
    """What every run shares once its model, task object and batches exist (classification, regression and
    segmentation alike): the strategy, the optimizer and schedule, the loop, ``history.csv``, and the best epoch's
    weights back in ``model``. Returns ``(fit state, strategy)``."""
    strategy = build_strategy(cfg.transfer, cfg.train)
    cap_epochs(train, cfg)
    optimizer, scheduler = optimizer_and_scheduler(
        strategy, model, cfg.train, device, cfg.train.epochs * len(train), len(train)
    )
    state = fit_model(
        model, task, strategy, optimizer, scheduler, train, val, cfg.train, cfg.seed, out, progress, score=score
    )
    pd.DataFrame(state.history).to_csv(out / "history.csv", index=False)
    load_weights_file(out / "best.safetensors", model)
    return state, strategy


def step_budget(epochs: int, max_steps: int | None, steps_per_epoch: int) -> int | None:
    """Batches per epoch under ``train.max_steps``: ``None`` when all epochs fit the budget, else
    ``max_steps // epochs`` (at least 1).

    Large N keeps ``train.epochs`` rounds of a fixed length instead of fewer full epochs, so every epoch-indexed
    part of a strategy (``head_epochs``, gradual unfreezing, ``unfreeze_encoder_at``, the one-cycle shape, the
    per-epoch validation that picks the best checkpoint) means the same at every N. Each round draws its batches
    from a new permutation of the training set, so every image is still used.

    Example:
        >>> step_budget(15, 600, 4), step_budget(15, 600, 229), step_budget(15, None, 229)
        (None, 40, None)
    """
    if max_steps is None:
        return None
    if epochs * steps_per_epoch <= max_steps:
        return None
    return max(1, max_steps // epochs)


def cap_epochs(batches, cfg: Config) -> None:
    """Apply :func:`step_budget` to a training batch source (``Batches`` or ``PatchBatches``) in place."""
    full = len(batches)
    cap = step_budget(cfg.train.epochs, cfg.train.max_steps, full)
    if cap is not None:
        batches.max_batches = cap
        log.info(
            "train.max_steps=%d: %d epochs of %d steps (of %d per full pass)",
            cfg.train.max_steps,
            cfg.train.epochs,
            cap,
            full,
        )
