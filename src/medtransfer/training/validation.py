"""The validation pass of the training loop: a model's outputs over :class:`Batches`, and each epoch's selection score.

:class:`~medtransfer.training.callbacks.Validation` calls :func:`epoch_score` after every epoch; the best epoch is
the one with the highest score. ``predict`` and ``raw_logits`` (``loop.py``) read the same :func:`outputs`.
"""

from __future__ import annotations

import math

import numpy as np
import torch

from medtransfer.training.batches import Batches
from medtransfer.training.tasks import Task


def epoch_score(
    model, task: Task, strategy, val: Batches | None, score, train_loss: float, validate: bool
) -> tuple[float, dict[str, float], str]:
    """An epoch's selection score (higher is better), its history columns and its log text.

    By ``score(model)`` (column ``val_score``); else on ``val`` (columns ``val_<metric>`` and ``val_loss``; the
    score is the metric or minus the loss, as ``select_by`` says); else minus ``train_loss`` (no columns). An
    epoch that does not ``validate`` gets NaN: it never becomes the best.
    """
    if score is not None:
        value = float(score(model)) if validate else math.nan
        return value, {"val_score": value}, f"val score {value:.4f}" if validate else "val —"
    if val is None:
        return -train_loss, {}, ""
    if not validate:
        return math.nan, {f"val_{_metric(task)}": math.nan, "val_loss": math.nan}, "val —"
    metric, val_loss = validate_once(model, task, val)
    value = -val_loss if select_by(strategy) == "loss" else _higher_better(task, metric)
    text = f"val {_metric_label(task)} {metric:.4f} loss {val_loss:.4f}"
    return value, {f"val_{_metric(task)}": metric, "val_loss": val_loss}, text


def select_by(strategy) -> str:
    """What picks the best epoch: ``"auc"`` (the task's primary metric) or ``"loss"``, as the strategy says."""
    setting = getattr(strategy, "setting", None)
    return setting("select_by") if callable(setting) else "auc"


def validate_once(model, task: Task, val: Batches) -> tuple[float, float]:
    """Validation (the task's primary metric, e.g. macro AUC or MAE, and the mean loss) from one pass over ``val``."""
    logits = outputs(model, val)
    labels = val.labels[val.indices]
    loss = float(task.loss(logits.float(), torch.as_tensor(labels, dtype=torch.float32, device=logits.device)))
    scores = task.scores(logits.float()).cpu().numpy().astype(np.float64)
    return task.kind.validation_score(labels, scores), loss


def _metric(task) -> str:
    return task.kind.metric


def _metric_label(task) -> str:
    return task.kind.metric_label


def _higher_better(task, value: float) -> float:
    """The selection score of a metric value: itself, or minus it when lower is better (MAE)."""
    return value if task.kind.higher_is_better else -value


@torch.no_grad()
def outputs(model: torch.nn.Module, batches: Batches, seed: int = 0) -> torch.Tensor:
    """The model's outputs (before the task's link) for ``batches.indices`` in order, in eval mode, bf16 on CUDA."""
    model.eval()
    cuda = batches.device.type == "cuda"
    out = []
    for x, _ in batches.epoch(seed, 0):
        with torch.autocast(batches.device.type, dtype=torch.bfloat16, enabled=cuda):
            out.append(model(x))
    # logits stay on the device until the end: a copy per batch would wait for every batch in turn
    return torch.cat(out)
