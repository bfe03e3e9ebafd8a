"""The training loop, short enough to read in one sitting.

``fit`` runs epochs from wherever the checkpoint says: the strategy's hook decides what trains, one epoch of
optimisation, validation, then checkpoint / best weights / early stopping. Every epoch is seeded by
``(seed, epoch)`` (shuffling, augmentation, dropout), so a resumed run equals an uninterrupted one on CPU.

On CUDA a step runs under bf16 autocast on channels_last batches (the model is converted once in run.py) with
cuDNN autotuning and fused AdamW; batches arrive from :class:`Batches` already on the device. The hot loop never
waits for the device except every :data:`SYNC_EVERY` steps and at the epoch end, so the host stays ahead and
queues the next step while the device computes. ``train.grad_accum`` splits each batch into micro-batches
(:func:`forward_backward`); device set-up (fused AdamW, compile, cuDNN autotune) is in ``device.py``.
"""

from __future__ import annotations

import logging
import math
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from medtransfer.config import TrainConfig
from medtransfer.errors import ConfigError, TrainingFailed
from medtransfer.training.batches import Batches
from medtransfer.training.checkpoint import load_checkpoint, save_checkpoint, save_weights
from medtransfer.training.device import cudnn_autotune, micro_batch_size
from medtransfer.training.tasks import Task

log = logging.getLogger(__name__)


# A training loss this many times its first value has diverged (lr far too high): the run fails (exit code 1)
# instead of ending "done" with a constant model. No sane training grows its loss 1000-fold.
DIVERGED = 1000.0


@dataclass
class FitState:
    epoch: int = 0  # next epoch to run
    best_score: float = -math.inf
    best_epoch: int = -1
    bad_epochs: int = 0
    history: list[dict] = field(default_factory=list)


def fit(
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
    """Train ``model``; writes ``checkpoint.pt`` each epoch and ``best.safetensors`` at each new best.

    ``train`` yields ``(x, y)`` batches for ``task.loss(model(x), y)``; the best epoch is the one with the highest
    ``score(model)`` (default: on ``val``, the AUC or minus the loss, as ``strategy.setting("select_by")`` says;
    segmentation passes its mean validation Dice). With neither ``val`` nor ``score`` (self-supervised
    pretraining, which has no labels) it is the epoch with the lowest training loss, and ``task`` needs only
    ``loss``.
    """
    if cfg.val_every < 1:
        raise ConfigError(f"train.val_every must be at least 1, got {cfg.val_every}")
    ckpt_path, best_path = out_dir / "checkpoint.pt", out_dir / "best.safetensors"
    state = FitState()
    if ckpt_path.exists():
        ckpt = load_checkpoint(ckpt_path)
        model.load_state_dict(ckpt["model"])
        strategy.load_state_dict(ckpt["strategy"], model)
        optimizer.load_state_dict(ckpt["optimizer"])
        scheduler.load_state_dict(ckpt["scheduler"])
        state = FitState(**ckpt["state"])
        log.info("resumed from %s at epoch %d", ckpt_path, state.epoch)
    else:
        strategy.on_train_start(model)
        if callable(getattr(task, "init_head", None)):
            task.init_head(model)  # after a possible head re-initialisation by the strategy
    with _progress(progress) as bar:
        job = bar.add_task("train", total=cfg.epochs * len(train), completed=state.epoch * len(train), info="")
        for epoch in range(state.epoch, cfg.epochs):
            torch.manual_seed(int(np.random.SeedSequence([seed, epoch, 7]).generate_state(1)[0]))  # dropout
            strategy.on_epoch_start(epoch, model, optimizer)
            t0 = time.perf_counter()
            loss = train_one_epoch(
                model,
                task,
                strategy,
                optimizer,
                scheduler,
                train,
                cfg,
                seed,
                epoch,
                lambda info: bar.update(job, advance=1, **({"info": info} if info else {})),
            )
            has_val = val is not None or score is not None
            # validate every cfg.val_every epochs and always at the last one; other epochs only train
            validate = not has_val or (epoch + 1) % cfg.val_every == 0 or epoch + 1 == cfg.epochs
            score_now, columns, what = _epoch_score(model, task, strategy, val, score, loss, validate)
            row = {"epoch": epoch, "train_loss": loss, **columns}
            state.history.append({**row, "lr": optimizer.param_groups[-1]["lr"], "seconds": time.perf_counter() - t0})
            improved = np.isfinite(score_now) and score_now > state.best_score
            # a tie (a validation AUC saturated at 1.0) keeps the later, longer-trained epoch; patience still waits
            # for a strict gain
            tied = np.isfinite(score_now) and score_now == state.best_score
            if validate and (improved or tied or not best_path.exists()):
                state.best_score, state.best_epoch, state.bad_epochs = (
                    (score_now if np.isfinite(score_now) else -math.inf),
                    epoch,
                    state.bad_epochs + 1 if tied else 0,
                )
                save_weights(best_path, model)
            elif validate:
                state.bad_epochs += 1  # patience counts validations
            state.epoch = epoch + 1
            save_checkpoint(
                ckpt_path,
                {
                    "model": model.state_dict(),
                    "optimizer": optimizer.state_dict(),
                    "scheduler": scheduler.state_dict(),
                    "strategy": strategy.state_dict(),
                    "state": vars(state),
                },
            )
            bar.update(job, info=f"epoch {epoch + 1}/{cfg.epochs} loss {loss:.4f} {what}".rstrip())
            log.info("epoch %d/%d  loss %.4f  %s", epoch + 1, cfg.epochs, loss, what)
            if cfg.early_stop_patience is not None and state.bad_epochs >= cfg.early_stop_patience:
                log.info("early stop: no validation improvement for %d validations", state.bad_epochs)
                break
    return state


def train_one_epoch(
    model, task: Task, strategy, optimizer, scheduler, train: Batches, cfg: TrainConfig, seed: int, epoch: int, on_step
) -> float:
    """One pass over ``train``: one optimizer and scheduler step per batch; returns the mean batch loss.

    A batch is ``cfg.batch_size`` images (the effective batch); with ``cfg.grad_accum > 1`` its gradients are
    summed over that many micro-batches first (see :func:`forward_backward`), so the number of optimizer steps
    and the learning-rate schedule do not depend on ``grad_accum``. The host waits for the device only every
    :data:`SYNC_EVERY` steps and at the end of the epoch (NaN check, progress text); other steps queue work.

    Example::

        loss = train_one_epoch(model, task, strategy, optimizer, scheduler, batches, cfg, seed=0, epoch=0,
                               on_step=lambda info: None)
    """
    accum = cfg.grad_accum
    micro_batch_size(cfg.batch_size, accum)  # a bad value fails before any work
    model.train()
    strategy.set_train_mode(model)
    cuda = train.device.type == "cuda"
    total = torch.zeros((), device=train.device)
    first_loss = math.nan  # the epoch's first batch loss: the scale a diverging loss is measured against
    first_step = epoch * len(train)  # steps are counted over the whole run for step-scheduled strategies
    with cudnn_autotune(cuda):
        for step, (x, y) in enumerate(train.epoch(seed, epoch)):
            strategy.on_step(first_step + step, model, optimizer)
            if x.ndim == 4:  # 2-D images; 5-D batches (3-D volumes, SimCLR's view pairs) keep the default layout
                x = x.contiguous(memory_format=torch.channels_last)
            optimizer.zero_grad(set_to_none=True)
            total += forward_backward(model, task, x, y, accum)
            if cfg.grad_clip:
                torch.nn.utils.clip_grad_norm_([p for p in model.parameters() if p.grad is not None], cfg.grad_clip)
            optimizer.step()
            scheduler.step()
            if step % SYNC_EVERY == 0 or step == len(train) - 1:  # the only host syncs of the epoch
                mean = total.item() / (step + 1)
                if not math.isfinite(mean):
                    raise TrainingFailed(
                        f"loss became {mean} at epoch {epoch + 1}, step {step + 1}; "
                        "lower train.lr or enable train.grad_clip"
                    )
                first_loss = mean if step == 0 else first_loss
                if first_loss > 0 and mean > DIVERGED * first_loss:
                    raise TrainingFailed(
                        f"training diverged: the loss rose from {first_loss:.3g} to {mean:.3g} by epoch {epoch + 1}, "
                        f"step {step + 1}; lower train.lr (now {cfg.lr:g}; `medtransfer lr-find` suggests one)"
                    )
                on_step(f"epoch {epoch + 1}/{cfg.epochs} loss {mean:.4f}")
            else:
                on_step(None)
    return total.item() / max(len(train), 1)


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


# The hot loop reads the running loss back (a host sync) only this often: on CUDA every read drains the queue of
# launched kernels and leaves the device idle while the host prepares the next batch. A NaN loss is therefore
# noticed up to SYNC_EVERY - 1 steps late, which costs nothing but those steps.
SYNC_EVERY = 50


def _epoch_score(
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
    metric, val_loss = _validate(model, task, val)
    value = -val_loss if _select_by(strategy) == "loss" else _higher_better(task, metric)
    text = f"val {_metric_label(task)} {metric:.4f} loss {val_loss:.4f}"
    return value, {f"val_{_metric(task)}": metric, "val_loss": val_loss}, text


def _select_by(strategy) -> str:
    setting = getattr(strategy, "setting", None)
    return setting("select_by") if callable(setting) else "auc"


def _validate(model, task: Task, val: Batches) -> tuple[float, float]:
    """Validation (the task's primary metric, e.g. macro AUC or MAE, and the mean loss) from one pass over ``val``."""
    logits = _logits(model, val)
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


def raw_logits(model: torch.nn.Module, batches: Batches) -> np.ndarray:
    """The model's outputs before the task's link (sigmoid, softmax, target scale) for ``batches.indices``, on
    the plain images: what temperature scaling is fitted on."""
    return _logits(model, batches).float().cpu().numpy().astype(np.float64)


@torch.no_grad()
def _logits(model: torch.nn.Module, batches: Batches, seed: int = 0) -> torch.Tensor:
    model.eval()
    cuda = batches.device.type == "cuda"
    out = []
    for x, _ in batches.epoch(seed, 0):
        with torch.autocast(batches.device.type, dtype=torch.bfloat16, enabled=cuda):
            out.append(model(x))
    # logits stay on the device until the end: a copy per batch would wait for every batch in turn
    return torch.cat(out)


@torch.no_grad()
def predict(model: torch.nn.Module, task: Task, batches: Batches, tta: int = 0, augment=None) -> np.ndarray:
    """Scores (probabilities) for ``batches.indices`` in order, shape ``(n, K)``.

    With ``tta > 0`` (``eval.tta``) the scores are the mean over the plain images and ``tta`` augmented views
    (``augment``, the training augmentation by default), each view drawn from its own fixed seed, so a model
    scores the same twice (Romero et al. average 4 views: ``tta: 3``).
    """
    views = [task.scores(_logits(model, batches).float())]
    if tta:
        from medtransfer.data.transforms import RadiographAugment

        augmented = batches.with_augment(augment or RadiographAugment())
        views += [task.scores(_logits(model, augmented, seed=1000 + v).float()) for v in range(tta)]
    return torch.stack(views).mean(0).cpu().numpy().astype(np.float64)


class _NoBar:
    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False

    def add_task(self, *a, **k):
        return 0

    def update(self, *a, **k):
        pass


def _progress(enabled: bool):
    if not enabled:
        return _NoBar()
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

    return Progress(
        TextColumn("[bold]train"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeRemainingColumn(),
        TextColumn("{task.fields[info]}"),
        transient=False,
    )
