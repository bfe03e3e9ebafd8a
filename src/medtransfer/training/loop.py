"""The training loop, short enough to read in one sitting: :func:`fit` runs epochs of :func:`train_one_epoch` and
fires the events of :mod:`~medtransfer.training.callbacks` at its callbacks.

Everything around the optimisation step is a callback (``callbacks.py``): checkpoint and resume, validation every
``train.val_every`` epochs and the best weights, ``history.csv``, early stopping, the progress bar, the transfer
strategy's hooks and the NaN / divergence guard. Every epoch is seeded by ``(seed, epoch)`` (shuffling,
augmentation, dropout), so a resumed run equals an uninterrupted one on CPU.

On CUDA a step runs under bf16 autocast on channels_last batches (the model is converted once in run.py) with
cuDNN autotuning and fused AdamW; batches arrive from :class:`Batches` already on the device. The hot loop never
waits for the device except every :data:`SYNC_EVERY` steps and at the epoch end, so the host stays ahead and
queues the next step while the device computes. ``train.grad_accum`` splits each batch into micro-batches
(:func:`forward_backward`); device set-up (fused AdamW, compile, cuDNN autotune) is in ``device.py``.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
import torch

from medtransfer.config import TrainConfig
from medtransfer.data.transforms import RadiographAugment
from medtransfer.training.batches import Batches
from medtransfer.training.callbacks import (
    Callback,
    Callbacks,
    CancelFit,
    DivergenceGuard,
    FitState,
    Run,
    StepText,
    StrategyHooks,
    standard_callbacks,
)
from medtransfer.training.device import cudnn_autotune
from medtransfer.training.tasks import Task
from medtransfer.training.validation import outputs

# The hot loop reads the running loss back (a host sync) only this often: on CUDA every read drains the queue of
# launched kernels and leaves the device idle while the host prepares the next batch. A NaN loss is therefore
# noticed up to SYNC_EVERY - 1 steps late, which costs nothing but those steps.
SYNC_EVERY = 50


def fit(run: Run, callbacks: Sequence[Callback]) -> FitState:
    """Train ``run`` from epoch ``run.state.epoch`` to ``run.cfg.epochs``, firing the events at ``callbacks``.

    Epoch ``e`` seeds torch by ``(seed, e)`` for dropout; ``run.state.epoch`` counts the epochs done before the
    epoch's ``after_epoch``. A callback's :class:`CancelFit` ends the run (early stopping); ``after_fit`` fires
    however it ends. :func:`fit_model` is a run with the standard callbacks.
    """
    events = Callbacks(callbacks)
    try:
        events("before_fit", run)
        for epoch in range(run.state.epoch, run.cfg.epochs):
            run.epoch = epoch
            torch.manual_seed(int(np.random.SeedSequence([run.seed, epoch, 7]).generate_state(1)[0]))  # dropout
            events("before_epoch", run)
            run.loss = train_one_epoch(run, events)
            run.state.epoch = epoch + 1
            events("after_epoch", run)
    except CancelFit:
        pass
    finally:
        events("after_fit", run)
    return run.state


def fit_model(
    model: torch.nn.Module,
    task: Task,
    strategy,
    optimizer,
    scheduler,
    train: Batches,
    val: Batches | None,
    cfg: TrainConfig,
    seed: int,
    out_dir: Path,
    progress: bool = True,
    score=None,
) -> FitState:
    """Train ``model`` with :func:`~medtransfer.training.callbacks.standard_callbacks`; writes ``checkpoint.pt``
    each epoch (and resumes from it) and ``best.safetensors`` at each new best.

    ``train`` yields ``(x, y)`` batches for ``task.loss(model(x), y)``; the best epoch is the one with the highest
    ``score(model)`` (default: on ``val``, the AUC or minus the loss, as ``strategy.setting("select_by")`` says;
    segmentation passes its mean validation Dice). With neither ``val`` nor ``score`` (self-supervised
    pretraining, which has no labels) it is the epoch with the lowest training loss, and ``task`` needs only
    ``loss``.
    """
    run = Run(model, task, strategy, optimizer, scheduler, train, cfg, seed)
    return fit(run, standard_callbacks(cfg, out_dir, val, score, progress))


def train_one_epoch(run: Run, events: Callbacks) -> float:
    """One pass over ``run.train``: one optimizer and scheduler step per batch; returns the mean batch loss.

    Fires ``before_train`` after ``model.train()``, then ``before_batch`` and ``after_step`` around every step. A
    batch is ``cfg.batch_size`` images (the effective batch); with ``cfg.grad_accum > 1`` its gradients are summed
    over that many micro-batches first (see :func:`forward_backward`), so the number of optimizer steps and the
    learning-rate schedule do not depend on ``grad_accum``. The host waits for the device only every
    :data:`SYNC_EVERY` steps and at the end of the epoch (``run.mean_loss`` is set then, else ``None``).
    """
    cfg, train, optimizer = run.cfg, run.train, run.optimizer
    run.model.train()
    events("before_train", run)
    total = torch.zeros((), device=train.device)
    with cudnn_autotune(train.device.type == "cuda"):
        for step, (x, y) in enumerate(train.epoch(run.seed, run.epoch)):
            run.step = step
            events("before_batch", run)
            if x.ndim == 4:  # 2-D images; 5-D batches (3-D volumes, SimCLR's view pairs) keep the default layout
                x = x.contiguous(memory_format=torch.channels_last)
            optimizer.zero_grad(set_to_none=True)
            run.batch_loss = forward_backward(run.model, run.task, x, y, cfg.grad_accum)
            total += run.batch_loss
            if cfg.grad_clip:
                params = [p for p in run.model.parameters() if p.grad is not None]
                torch.nn.utils.clip_grad_norm_(params, cfg.grad_clip)
            optimizer.step()
            if run.scheduler is not None:
                run.scheduler.step()
            sync = step % SYNC_EVERY == 0 or step == len(train) - 1  # the only host syncs of the epoch
            run.mean_loss = total.item() / (step + 1) if sync else None
            events("after_step", run)
    return total.item() / max(len(train), 1)


def train_model_epoch(
    model: torch.nn.Module,
    task: Task,
    strategy,
    optimizer,
    scheduler,
    train: Batches,
    cfg: TrainConfig,
    seed: int,
    epoch: int,
    on_step: Callable[[str | None], object],
) -> float:
    """Epoch ``epoch`` of ``model`` outside :func:`fit` (benchmarks, tests), with the step callbacks ``fit`` runs:
    the strategy's hooks, the divergence guard, and ``on_step(text)`` after every step (the progress text at a host
    sync, else ``None``).

    Example::

        loss = train_model_epoch(model, task, strategy, optimizer, scheduler, batches, cfg, seed=0, epoch=0,
                                 on_step=lambda info: None)
    """
    run = Run(model, task, strategy, optimizer, scheduler, train, cfg, seed, epoch=epoch)
    return train_one_epoch(run, Callbacks([StrategyHooks(), DivergenceGuard(), StepText(on_step)]))


def forward_backward(model: torch.nn.Module, task: Task, x: torch.Tensor, y, grad_accum: int = 1) -> torch.Tensor:
    """Forward and backward of one batch, accumulating into ``.grad``; returns the batch loss, detached.

    With ``grad_accum > 1`` the batch is cut along its first axis into that many micro-batches
    (``torch.tensor_split``: equal sizes when ``grad_accum`` divides the batch) and micro-batch ``i`` of ``n_i``
    images contributes ``loss_i * n_i / n``. For a loss that is a mean over images this sums to the gradient of the
    whole batch, while only a micro-batch's activations are in memory at a time. It is exact up to float rounding
    for models without batch statistics; BatchNorm normalises each micro-batch by its own statistics, dropout draws
    other masks, and a loss averaged over known labels only (NaN) weights micro-batches by images, not labels.
    An item ``x[i]`` is never cut: SimCLR's two views of an image (``x`` of shape ``(B, 2, C, H, W)``) stay in
    one micro-batch, whose other images are then their only negatives. bf16 autocast is on for CUDA batches.

    Example:
        >>> model = torch.nn.Linear(3, 1)
        >>> task = Task("binary", 1)
        >>> x, y = torch.randn(8, 3), torch.ones(8, 1)
        >>> loss = forward_backward(model, task, x, y, grad_accum=2)
        >>> model.weight.grad.shape
        torch.Size([1, 3])
    """
    device_type = x.device.type
    cuda = device_type == "cuda"
    if grad_accum == 1:
        with torch.autocast(device_type, dtype=torch.bfloat16, enabled=cuda):
            loss = task.loss(model(x), y)
        loss.backward()
        return loss.detach()
    n = x.shape[0]
    total = torch.zeros((), device=x.device)
    for xs, ys in zip(torch.tensor_split(x, grad_accum), _split(y, grad_accum), strict=True):
        if xs.shape[0] == 0:  # a batch smaller than grad_accum
            continue
        with torch.autocast(device_type, dtype=torch.bfloat16, enabled=cuda):
            loss = task.loss(model(xs), ys) * (xs.shape[0] / n)
        loss.backward()
        total += loss.detach()
    return total


def _split(y, parts: int) -> list:
    """``torch.tensor_split`` along the batch axis, also for targets that are tuples of tensors (segmentation)."""
    if isinstance(y, torch.Tensor):
        return list(torch.tensor_split(y, parts))
    return list(zip(*(torch.tensor_split(t, parts) for t in y), strict=True))


def raw_logits(model: torch.nn.Module, batches: Batches) -> np.ndarray:
    """The model's outputs before the task's link (sigmoid, softmax, target scale) for ``batches.indices``, on
    the plain images: what temperature scaling is fitted on."""
    return outputs(model, batches).float().cpu().numpy().astype(np.float64)


@torch.no_grad()
def predict(model: torch.nn.Module, task: Task, batches: Batches, tta: int = 0, augment=None) -> np.ndarray:
    """Scores (probabilities) for ``batches.indices`` in order, shape ``(n, K)``.

    With ``tta > 0`` (``eval.tta``) the scores are the mean over the plain images and ``tta`` augmented views
    (``augment``, the training augmentation by default), each view drawn from its own fixed seed, so a model
    scores the same twice (Romero et al. average 4 views: ``tta: 3``).
    """
    views = [task.scores(outputs(model, batches).float())]
    if tta:
        augmented = batches.with_augment(augment or RadiographAugment())
        views += [task.scores(outputs(model, augmented, seed=1000 + v).float()) for v in range(tta)]
    return torch.stack(views).mean(0).cpu().numpy().astype(np.float64)
