"""The callback machinery of the training loop: the order of the events, cancelling, early stopping, resuming."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from medtransfer.config import TrainConfig
from medtransfer.errors import TrainingFailed
from medtransfer.training.batches import Batches
from medtransfer.training.callbacks import (
    EVENTS,
    Callback,
    Callbacks,
    CancelFit,
    DivergenceGuard,
    EarlyStopping,
    Run,
    StrategyHooks,
    standard_callbacks,
)
from medtransfer.training.loop import fit
from medtransfer.training.tasks import Task


def model() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Flatten(), nn.Linear(16, 2))


def batches(n: int = 12, batch_size: int = 4) -> Batches:
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, size=(n, 1, 4, 4), dtype=np.uint8)
    labels = (rng.random((n, 2)) < 0.5).astype(np.float32)
    return Batches(images, labels, np.arange(n), batch_size, [0.5], [0.25], torch.device("cpu"), shuffle=True)


class SpyStrategy:
    """Every strategy hook, recording its calls."""

    def __init__(self, calls: list) -> None:
        self.calls = calls

    def on_train_start(self, model):
        self.calls.append("on_train_start")

    def on_epoch_start(self, epoch, model, optimizer):
        assert optimizer is not None
        self.calls.append(("on_epoch_start", epoch))

    def set_train_mode(self, model):
        assert model.training
        self.calls.append("set_train_mode")

    def on_step(self, step, model, optimizer):
        self.calls.append(("on_step", step))

    def state_dict(self):
        return {}

    def load_state_dict(self, state, model):
        self.calls.append("load_state_dict")


class SpyTask(Task):
    def __init__(self, calls: list) -> None:
        super().__init__("multilabel", 2)
        self.calls = calls

    def init_head(self, model):
        self.calls.append("init_head")


class Recorder(Callback):
    """Records every event it sees with the loop's position ``(event, epoch, step)``."""

    def __init__(self) -> None:
        self.seen: list[tuple] = []


for _event in EVENTS:
    setattr(Recorder, _event, lambda self, run, _e=_event: self.seen.append((_e, run.epoch, run.step)))


def new_run(calls: list | None = None, **cfg) -> Run:
    calls = [] if calls is None else calls
    cfg = TrainConfig(**{"epochs": 2, "batch_size": 4, "lr": 0.01, **cfg})
    net = model()
    optimizer = torch.optim.AdamW(net.parameters(), lr=cfg.lr)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda _: 1.0)
    return Run(net, SpyTask(calls), SpyStrategy(calls), optimizer, scheduler, batches(), cfg, seed=0)


def test_events_fire_in_order_and_the_strategy_hooks_as_before():
    calls: list = []
    recorder = Recorder()
    state = fit(new_run(calls), [StrategyHooks(), recorder])
    per_epoch = lambda e: [  # noqa: E731
        ("before_epoch", e, 0 if e == 0 else 2),
        ("before_train", e, 0 if e == 0 else 2),
        *[event for s in range(3) for event in (("before_batch", e, s), ("after_step", e, s))],
        ("after_epoch", e, 2),
    ]
    assert recorder.seen == [("before_fit", 0, 0), *per_epoch(0), *per_epoch(1), ("after_fit", 1, 2)]
    epoch = lambda e: [("on_epoch_start", e), "set_train_mode", *[("on_step", 3 * e + s) for s in range(3)]]  # noqa: E731
    assert calls == ["on_train_start", "init_head", *epoch(0), *epoch(1)]  # steps counted over the run
    assert state.epoch == 2


def test_a_custom_callback_sees_every_event_of_a_standard_run_that_stops_early(tmp_path):
    # a constant score ties every epoch: patience 1 stops after the second; the callback after EarlyStopping still
    # sees that epoch's after_epoch, then after_fit
    recorder = Recorder()
    run = new_run(epochs=5, early_stop_patience=1)
    callbacks = [*standard_callbacks(run.cfg, tmp_path, score=lambda m: 1.0, progress=False), recorder]
    state = fit(run, callbacks)
    assert state.epoch == 2 and state.best_epoch == 1 and state.bad_epochs == 1
    events = [name for name, _, _ in recorder.seen]
    assert events.count("after_epoch") == 2 and events[-2:] == ["after_epoch", "after_fit"]
    assert events.count("before_batch") == events.count("after_step") == 6
    assert [row["val_score"] for row in state.history] == [1.0, 1.0]
    assert (tmp_path / "checkpoint.pt").is_file() and (tmp_path / "best.safetensors").is_file()


def test_early_stopping_only_stops_when_patience_runs_out():
    class Stagnant(Callback):
        def after_epoch(self, run):
            run.state.bad_epochs += 1

    run = new_run(epochs=6)
    assert fit(run, [Stagnant(), EarlyStopping(3)]).epoch == 3
    assert fit(new_run(epochs=4), [Stagnant(), EarlyStopping(None)]).epoch == 4


def test_cancelling_mid_epoch_skips_the_rest_but_not_after_fit():
    class StopAtStep(Callback):
        def after_step(self, run):
            if run.epoch == 1 and run.step == 1:
                raise CancelFit

    recorder = Recorder()
    state = fit(new_run(epochs=3), [StopAtStep(), recorder])
    assert recorder.seen[-2:] == [("after_step", 1, 1), ("after_fit", 1, 1)]  # the event reached the recorder too
    assert state.epoch == 1  # the cancelled epoch did not count


def test_after_fit_fires_when_the_run_fails():
    recorder = Recorder()

    class Nan(Callback):
        def before_batch(self, run):
            with torch.no_grad():
                next(run.model.parameters()).fill_(float("nan"))

    with pytest.raises(TrainingFailed, match="loss became nan at epoch 1, step 1"):
        fit(new_run(), [Nan(), DivergenceGuard(), recorder])
    assert recorder.seen[-1][0] == "after_fit" and ("after_epoch", 0, 0) not in recorder.seen


def test_every_callback_sees_an_event_before_a_cancel_takes_effect():
    seen = []

    class Cancel(Callback):
        def after_epoch(self, run):
            seen.append("cancel")
            raise CancelFit

    class Later(Callback):
        def after_epoch(self, run):
            seen.append("later")

    with pytest.raises(CancelFit):
        Callbacks([Cancel(), Later()])("after_epoch", new_run())
    assert seen == ["cancel", "later"]


def test_a_resumed_run_restores_the_strategy_instead_of_starting_it(tmp_path):
    first: list = []
    run = new_run(first, epochs=1)
    fit(run, standard_callbacks(run.cfg, tmp_path, progress=False))
    assert first[:2] == ["on_train_start", "init_head"]
    again: list = []
    run = new_run(again, epochs=2)
    state = fit(run, standard_callbacks(run.cfg, tmp_path, progress=False))
    assert run.resumed and again[0] == "load_state_dict" and "on_train_start" not in again
    assert again[1] == ("on_epoch_start", 1) and state.epoch == 2 and len(state.history) == 2
