"""Callbacks: everything a training run does around the optimisation step, each part hooked to named events.

:func:`~medtransfer.training.loop.fit` runs the epochs and fires these events, in this order (the events of fastai's
``Learner``, Lightning's ``Callback`` hooks)::

    before_fit                   once (resume from checkpoint.pt, or a fresh start)
        before_epoch             each epoch, after torch's seed for the epoch
        before_train             after model.train(), before the first batch
            before_batch         each batch, before its forward pass
            after_step           after the optimizer and scheduler step (run.mean_loss: set at a host sync)
        after_epoch              after the last batch (run.loss: the epoch's mean training loss)
    after_fit                    once, however fit ends: finished, cancelled or failed

A callback is a :class:`Callback` subclass with a method per event it needs; each gets the :class:`Run` that ``fit``
and the callbacks share. Callbacks run in list order, and an event reaches every callback before the next one fires.
A callback ends the run by raising :class:`CancelFit` (fastai's ``CancelFitException``): the event still reaches
the callbacks after it, then ``fit`` skips to ``after_fit``. Any other exception ends the run at once (after
``after_fit``).

:func:`standard_callbacks` are those of every training run, in this order: :class:`Validation` (the epoch's score,
every ``train.val_every`` epochs), :class:`History` (``history.csv``'s rows), :class:`BestWeights`
(``best.safetensors``, the patience count), :class:`Checkpoint` (``checkpoint.pt``, and resuming from it),
:class:`StrategyHooks` (the transfer strategy's freezing), :class:`DivergenceGuard` (a non-finite or exploding loss
fails the run), :class:`Progress` (the bar and the epoch's log line) and :class:`EarlyStopping`. The LR range test
is a run with :class:`StrategyHooks` and :class:`~medtransfer.training.lr_finder.LRFinder`.
"""

from __future__ import annotations

import contextlib
import logging
import math
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import rich.progress
import torch

from medtransfer.config import TrainConfig
from medtransfer.errors import TrainingFailed
from medtransfer.training.checkpoint import load_checkpoint, save_checkpoint, save_weights
from medtransfer.training.validation import epoch_score

log = logging.getLogger(__name__)

EVENTS = ("before_fit", "before_epoch", "before_train", "before_batch", "after_step", "after_epoch", "after_fit")

# A training loss this many times its first value has diverged (lr far too high): the run fails (exit code 1)
# instead of ending "done" with a constant model. No sane training grows its loss 1000-fold.
DIVERGED = 1000.0


class CancelFit(Exception):
    """Raised by a callback to end ``fit`` once the current event has reached every callback."""


@dataclass
class FitState:
    """The loop's own state, saved in every checkpoint (``state``) and returned by ``fit``."""

    epoch: int = 0  # next epoch to run
    best_score: float = -math.inf
    best_epoch: int = -1
    bad_epochs: int = 0
    history: list[dict] = field(default_factory=list)


@dataclass(eq=False)
class Run:
    """What ``fit`` and its callbacks share: the objects being trained, where the loop is, what the epoch measured.

    ``train`` is a :class:`~medtransfer.training.batches.Batches` or anything with ``epoch(seed, epoch)``,
    ``len()`` and ``device`` (segmentation's patches). ``scheduler`` steps after every optimizer step (``None``:
    the rates are left to a callback).
    """

    model: torch.nn.Module
    task: Any
    strategy: Any
    optimizer: torch.optim.Optimizer
    scheduler: Any
    train: Any
    cfg: TrainConfig
    seed: int
    state: FitState = field(default_factory=FitState)
    resumed: bool = False  # set by Checkpoint.before_fit when it restored a run
    epoch: int = 0  # the running epoch
    step: int = 0  # the running batch of the epoch, 0-based
    batch_loss: torch.Tensor | None = None  # after_step: the step's loss, detached, on the device
    mean_loss: float | None = None  # after_step: the epoch's mean loss so far when read back (a host sync), else None
    loss: float = math.nan  # after_epoch: the epoch's mean training loss
    validated: bool = False  # after_epoch, from Validation: whether this epoch was validated
    score: float = math.nan  # ... its selection score (higher is better; NaN: not validated)
    metrics: dict[str, float] = field(default_factory=dict)  # ... its history columns (val_auc, val_loss ...)
    summary: str = ""  # ... and its log text

    @property
    def global_step(self) -> int:
        """The running step counted over the whole run (what step-scheduled strategies count)."""
        return self.epoch * len(self.train) + self.step


class Callback:
    """Does nothing at every event; a subclass overrides the events it needs (``EVENTS``)."""

    def before_fit(self, run: Run) -> None:
        pass

    def before_epoch(self, run: Run) -> None:
        pass

    def before_train(self, run: Run) -> None:
        pass

    def before_batch(self, run: Run) -> None:
        pass

    def after_step(self, run: Run) -> None:
        pass

    def after_epoch(self, run: Run) -> None:
        pass

    def after_fit(self, run: Run) -> None:
        pass


class Callbacks:
    """Fires an event on callbacks in order: ``events("after_epoch", run)``; a :class:`CancelFit` is raised again
    once every callback has seen the event."""

    def __init__(self, callbacks: Iterable[Callback]) -> None:
        self.callbacks = list(callbacks)

    def __call__(self, event: str, run: Run) -> None:
        cancel = None
        for callback in self.callbacks:
            try:
                getattr(callback, event)(run)
            except CancelFit as e:
                cancel = e
        if cancel is not None:
            raise cancel


def standard_callbacks(
    cfg: TrainConfig, out_dir: str | Path, val=None, score=None, progress: bool = True
) -> list[Callback]:
    """The callbacks of a training run writing into ``out_dir``, in the order they must run (see the module text)."""
    out = Path(out_dir)
    return [
        Validation(val, score),
        History(),
        BestWeights(out / "best.safetensors"),
        Checkpoint(out / "checkpoint.pt"),
        StrategyHooks(),
        DivergenceGuard(),
        Progress(progress),
        EarlyStopping(cfg.early_stop_patience),
    ]


class StrategyHooks(Callback):
    """The transfer strategy's hooks (:mod:`medtransfer.transfer.strategies`): a fresh run's initial freezing, then
    ``task.init_head`` (after a possible head re-initialisation by the strategy); each epoch's unfreezing (checked
    against the optimizer); frozen BatchNorm back to eval after ``model.train()``; each step's unfreezing.

    The LR range test (``init_head=False, steps=False``) probes the model as the strategy starts it: a head set to the
    label prior would leave little to learn at small rates, and romero's unfreezing at a fraction of the test's
    steps would change the model under test."""

    def __init__(self, init_head: bool = True, steps: bool = True) -> None:
        self.init_head, self.steps = init_head, steps

    def before_fit(self, run: Run) -> None:
        if run.resumed:  # the checkpoint restored the strategy's state
            return
        run.strategy.on_train_start(run.model)
        if self.init_head and callable(getattr(run.task, "init_head", None)):
            run.task.init_head(run.model)

    def before_epoch(self, run: Run) -> None:
        run.strategy.on_epoch_start(run.epoch, run.model, run.optimizer)

    def before_train(self, run: Run) -> None:
        run.strategy.set_train_mode(run.model)

    def before_batch(self, run: Run) -> None:
        if self.steps:
            run.strategy.on_step(run.global_step, run.model, run.optimizer)


class Checkpoint(Callback):
    """``checkpoint.pt`` after every epoch (keys ``model``, ``optimizer``, ``scheduler``, ``strategy``, ``state``: the
    :class:`FitState` fields); when it exists at the start, the run resumes from it, so that a resumed run equals an
    uninterrupted one."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)

    def before_fit(self, run: Run) -> None:
        if not self.path.exists():
            return
        ckpt = load_checkpoint(self.path)
        run.model.load_state_dict(ckpt["model"])
        run.strategy.load_state_dict(ckpt["strategy"], run.model)
        run.optimizer.load_state_dict(ckpt["optimizer"])
        run.scheduler.load_state_dict(ckpt["scheduler"])
        run.state, run.resumed = FitState(**ckpt["state"]), True
        log.info("resumed from %s at epoch %d", self.path, run.state.epoch)

    def after_epoch(self, run: Run) -> None:
        payload = {
            "model": run.model.state_dict(),
            "optimizer": run.optimizer.state_dict(),
            "scheduler": run.scheduler.state_dict(),
            "strategy": run.strategy.state_dict(),
            "state": vars(run.state),
        }
        save_checkpoint(self.path, payload)


class Validation(Callback):
    """The epoch's selection score (:func:`~medtransfer.training.validation.epoch_score`): ``score(model)`` (what
    segmentation passes: its mean validation Dice), else on ``val`` (the task's metric or minus the loss, as
    ``strategy.setting("select_by")`` says), else minus the training loss (no labels: self-supervised pretraining).

    With ``val`` or ``score`` it validates every ``train.val_every`` epochs and at the last one; the other epochs
    only train and score NaN. Without either, every epoch counts."""

    def __init__(self, val=None, score: Callable[[torch.nn.Module], float] | None = None) -> None:
        self.val, self.score = val, score

    def after_epoch(self, run: Run) -> None:
        has_val, done = self.val is not None or self.score is not None, run.epoch + 1
        run.validated = not has_val or done % run.cfg.val_every == 0 or done == run.cfg.epochs
        run.score, run.metrics, run.summary = epoch_score(
            run.model, run.task, run.strategy, self.val, self.score, run.loss, run.validated
        )


class History(Callback):
    """One row per epoch in ``FitState.history`` (``history.csv``): ``epoch``, ``train_loss``, the validation columns,
    the last parameter group's ``lr`` and the epoch's ``seconds``."""

    t0 = 0.0

    def before_train(self, run: Run) -> None:
        self.t0 = time.perf_counter()

    def after_epoch(self, run: Run) -> None:
        row = {"epoch": run.epoch, "train_loss": run.loss, **run.metrics}
        row.update(lr=run.optimizer.param_groups[-1]["lr"], seconds=time.perf_counter() - self.t0)
        run.state.history.append(row)


class BestWeights(Callback):
    """``best.safetensors`` at every validated epoch that beats the best score, or ties it (a validation AUC saturated
    at 1.0 keeps the later, longer-trained epoch), and at the first validated one; ``FitState.bad_epochs`` counts the
    validations since the last strict gain (a tie does not reset the patience)."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)

    def after_epoch(self, run: Run) -> None:
        if not run.validated:
            return
        state, score = run.state, run.score
        improved = np.isfinite(score) and score > state.best_score
        tied = np.isfinite(score) and score == state.best_score
        if improved or tied or not self.path.exists():
            state.best_score = score if np.isfinite(score) else -math.inf
            state.best_epoch, state.bad_epochs = run.epoch, state.bad_epochs + 1 if tied else 0
            save_weights(self.path, run.model)
        else:
            state.bad_epochs += 1  # patience counts validations


class EarlyStopping(Callback):
    """Ends the run after an epoch when ``patience`` validations in a row brought no gain (``None``: never)."""

    def __init__(self, patience: int | None) -> None:
        self.patience = patience

    def after_epoch(self, run: Run) -> None:
        if self.patience is not None and run.state.bad_epochs >= self.patience:
            log.info("early stop: no validation improvement for %d validations", run.state.bad_epochs)
            raise CancelFit


class DivergenceGuard(Callback):
    """Fails the run (:class:`TrainingFailed`, exit code 1) when the loss read back at a host sync is not finite, or
    has grown :data:`DIVERGED` times the epoch's first batch loss; the loss is read only every ``SYNC_EVERY`` steps
    (``loop.py``), so a NaN is noticed up to that many steps late."""

    first = math.nan  # the epoch's first batch loss: the scale a diverging loss is measured against

    def before_train(self, run: Run) -> None:
        self.first = math.nan

    def after_step(self, run: Run) -> None:
        mean, epoch, step = run.mean_loss, run.epoch + 1, run.step + 1
        if mean is None:
            return
        if not math.isfinite(mean):
            raise TrainingFailed(
                f"loss became {mean} at epoch {epoch}, step {step}; lower train.lr or enable train.grad_clip"
            )
        self.first = mean if step == 1 else self.first
        if self.first > 0 and mean > DIVERGED * self.first:
            raise TrainingFailed(
                f"training diverged: the loss rose from {self.first:.3g} to {mean:.3g} by epoch {epoch}, "
                f"step {step}; lower train.lr (now {run.cfg.lr:g}; `medtransfer lr-find` suggests one)"
            )


def step_text(run: Run) -> str | None:
    """The progress text after a step: the running loss where it was read back, else ``None``."""
    if run.mean_loss is None:
        return None
    return f"epoch {run.epoch + 1}/{run.cfg.epochs} loss {run.mean_loss:.4f}"


class StepText(Callback):
    """Calls ``on_step(text)`` after every step with :func:`step_text` (``train_one_epoch`` outside ``fit``)."""

    def __init__(self, on_step: Callable[[str | None], Any]) -> None:
        self.on_step = on_step

    def after_step(self, run: Run) -> None:
        self.on_step(step_text(run))


class Progress(Callback):
    """The rich progress bar over all the run's steps (none with ``enabled=False``) and each epoch's log line."""

    def __init__(self, enabled: bool = True) -> None:
        self.enabled = enabled
        self.open = contextlib.ExitStack()
        self.bar, self.job = _NoBar(), 0

    def before_fit(self, run: Run) -> None:
        self.bar = self.open.enter_context(_progress(self.enabled))
        steps = len(run.train)
        self.job = self.bar.add_task("train", total=run.cfg.epochs * steps, completed=run.state.epoch * steps, info="")

    def after_step(self, run: Run) -> None:
        info = step_text(run)
        self.bar.update(self.job, advance=1, **({"info": info} if info else {}))

    def after_epoch(self, run: Run) -> None:
        n, epochs, loss, what = run.epoch + 1, run.cfg.epochs, run.loss, run.summary
        self.bar.update(self.job, info=f"epoch {n}/{epochs} loss {loss:.4f} {what}".rstrip())
        log.info("epoch %d/%d  loss %.4f  %s", n, epochs, loss, what)

    def after_fit(self, run: Run) -> None:
        self.open.close()


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

    return rich.progress.Progress(
        rich.progress.TextColumn("[bold]train"),
        rich.progress.BarColumn(),
        rich.progress.MofNCompleteColumn(),
        rich.progress.TimeRemainingColumn(),
        rich.progress.TextColumn("{task.fields[info]}"),
        transient=False,
    )
