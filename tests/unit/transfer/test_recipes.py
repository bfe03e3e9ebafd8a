"""The published recipes, pinned to their formulas: the LR of every layer group at chosen steps computed by hand,
what trains at each step, fastai's optimizer reset, weight-decay groups, and resume in the middle of a phase."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest
import torch
import torch.nn.functional as F
from safetensors.torch import load_file
from torch import nn

from medtransfer.config import TrainConfig, TransferConfig
from medtransfer.errors import ConfigError
from medtransfer.training import loop
from medtransfer.training.device import optimizer_and_scheduler
from medtransfer.transfer.strategies import RECIPE, STRATEGIES, build_strategy, transfer_settings


class Net(nn.Module):
    """Three layer groups, as the recipes split a backbone: early | late | head."""

    def __init__(self) -> None:
        super().__init__()
        self.early = nn.Sequential(nn.Conv2d(1, 4, 3, padding=1), nn.BatchNorm2d(4), nn.ReLU())
        self.late = nn.Sequential(nn.Conv2d(4, 4, 3, padding=1), nn.BatchNorm2d(4), nn.ReLU())
        self.pool = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten())
        self.head = nn.Sequential(nn.Dropout(0.0), nn.Linear(4, 2))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.pool(self.late(self.early(x))))

    def layer_groups(self) -> list[list[nn.Parameter]]:
        return [list(m.parameters()) for m in (self.early, self.late, self.head)]


def setup(name: str, total: int, per_epoch: int, lr: float, epochs: int = 4, **transfer):
    torch.manual_seed(0)
    model = Net()
    strategy = build_strategy(transfer_settings(name, **transfer), TrainConfig(lr=lr, epochs=epochs))
    optimizer, scheduler = optimizer_and_scheduler(
        strategy, model, strategy.train, torch.device("cpu"), total, per_epoch
    )
    strategy.on_train_start(model)
    return model, strategy, optimizer, scheduler


def run(model, strategy, optimizer, scheduler, steps: int):
    """Train ``steps`` steps; record per step (lr per layer group, beta1 of the head, trainable groups)."""
    g = torch.Generator().manual_seed(1)
    trace = []
    model.train()
    strategy.set_train_mode(model)
    for k in range(steps):
        strategy.on_step(k, model, optimizer)
        lrs = {}
        for group in optimizer.param_groups:
            lrs.setdefault(group["layer_group"], group["lr"])
        trainable = [all(p.requires_grad for p in grp) for grp in model.layer_groups()]
        trace.append(([lrs[i] for i in sorted(lrs)], optimizer.param_groups[-1]["betas"][0], trainable))
        x, y = torch.randn(4, 1, 8, 8, generator=g), torch.randint(0, 2, (4,), generator=g)
        optimizer.zero_grad(set_to_none=True)
        F.cross_entropy(model(x), y).backward()
        optimizer.step()
        scheduler.step()
    return trace


# ----------------------------------------------------------------------------- romero
def romero_lr(k: int, total: int = 100, lr: float = 1e-3) -> float:
    """By hand from Romero et al.'s TrainingPolicy: n1 = int(0.3 T) cosine steps lr/25 → lr, then lr → lr/25·1e-4."""
    n1 = int(0.3 * total)
    lo, end = lr / 25, lr / 25 * 1e-4
    if k < n1:
        return lr + (lo - lr) / 2 * (1 + math.cos(k * math.pi / n1))
    return end + (lr - end) / 2 * (1 + math.cos((k - n1) * math.pi / (total - n1)))


@pytest.mark.parametrize(
    ("step", "head_lr"),
    [(0, 4e-5), (15, 5.2e-4), (30, 1e-3), (65, (1e-3 + 4e-9) / 2), (99, None)],
)
def test_romero_lrs_at_chosen_steps(step: int, head_lr: float | None) -> None:
    model, strategy, optimizer, scheduler = setup("romero", 100, 10, 1e-3)
    trace = run(model, strategy, optimizer, scheduler, step + 1)
    lrs = trace[step][0]
    expected = romero_lr(step)
    if head_lr is not None:  # the closed form agrees with the numbers worked out on paper
        assert expected == pytest.approx(head_lr, rel=1e-9)
    assert lrs == pytest.approx([expected / 9, expected / 3, expected], rel=1e-9)
    assert lrs[0] < lrs[1] < lrs[2]  # no group silently at its neighbour's rate
    assert trace[step][1] == 0.9  # Adam's beta1 is not cycled (their momentum went to a key Adam ignores)


def test_romero_unfreezes_by_fraction_of_all_steps() -> None:
    model, strategy, optimizer, scheduler = setup("romero", 100, 10, 1e-3)
    trace = run(model, strategy, optimizer, scheduler, 100)
    trainable = [t[2] for t in trace]
    assert trainable[:10] == [[False, False, True]] * 10  # head only (norm layers frozen too)
    assert trainable[10:20] == [[False, True, True]] * 10  # the middle group at 10 %
    assert trainable[20:] == [[True, True, True]] * 80  # the bottom at 20 %, before the peak at 30 %
    # their frozen BatchNorms stay in train mode: statistics adapt although the weights do not move
    assert model.early[1].training


def test_romero_frozen_groups_do_not_move_but_their_batchnorm_statistics_do() -> None:
    model, strategy, optimizer, scheduler = setup("romero", 100, 10, 1e-3)
    weight, stats = model.early[0].weight.detach().clone(), model.early[1].running_mean.clone()
    run(model, strategy, optimizer, scheduler, 5)
    assert torch.equal(model.early[0].weight, weight)
    assert not torch.equal(model.early[1].running_mean, stats)


def test_romero_defaults_and_overrides() -> None:
    s = build_strategy(TransferConfig(strategy="romero"), TrainConfig())
    assert s.settings() == {
        "strategy": "romero",
        "lr_mult": pytest.approx(1 / 3),
        "weight_decay": 0.0,
        "warmup_pct": 0.3,
        "div_factor": 25.0,
        "final_div_factor": pytest.approx(1e4),
        "select_by": "loss",
        "unfreeze_at": [0.1, 0.2],
    }
    s = build_strategy(
        transfer_settings("romero", unfreeze_at=[0.0, 0.5], lr_mult=0.5),
        TrainConfig(select_by="auc", warmup_pct=0.2),
    )
    s.plan(10, 5)
    assert [s.trainable_at_step(k, 3) for k in (0, 4, 5)] == [2, 2, 3]
    assert s.setting("select_by") == "auc"
    with pytest.raises(ConfigError, match="unfreeze_at"):
        build_strategy(transfer_settings("romero", unfreeze_at=[0.3, 0.1]), TrainConfig())
    s = build_strategy(transfer_settings("romero", unfreeze_at=[0.1]), TrainConfig())
    s.plan(10, 5)
    with pytest.raises(ConfigError, match="3 layer groups"):
        s.trainable_at_step(0, 3)


# ----------------------------------------------------------------------------- fastai
def cos(a: float, b: float, p: float) -> float:
    return a + (1 + math.cos(math.pi * (1 - p))) * (b - a) / 2


def one_cycle(pos: float, pct: float, lo: float, peak: float, end: float) -> float:
    return cos(lo, peak, pos / pct) if pos < pct else cos(peak, end, (pos - pct) / (1 - pct))


BASE = 2e-3
PHASE1 = [BASE / 10, BASE / 10, BASE]  # slice(base_lr)
PHASE2 = [BASE / 2 / 100, BASE / 2 / 10, BASE / 2]  # base_lr /= 2; slice(base_lr/100, base_lr), even_mults


def fastai_expected(step: int, per_epoch: int = 10, total: int = 40) -> tuple[list[float], float]:
    if step < per_epoch:  # fit_one_cycle(1, slice(base), pct_start=0.99): div 25, div_final 1e5
        pos = step / per_epoch
        return [one_cycle(pos, 0.99, m / 25, m, m / 1e5) for m in PHASE1], one_cycle(pos, 0.99, 0.95, 0.85, 0.95)
    pos = (step - per_epoch) / (total - per_epoch)  # fit_one_cycle(3, slice(...), pct_start=0.3, div=5)
    return [one_cycle(pos, 0.3, m / 5, m, m / 1e5) for m in PHASE2], one_cycle(pos, 0.3, 0.95, 0.85, 0.95)


@pytest.mark.parametrize("step", [0, 5, 9, 10, 19, 25, 39])
def test_fastai_lrs_and_beta1_at_chosen_steps(step: int) -> None:
    model, strategy, optimizer, scheduler = setup("fastai", 40, 10, BASE)
    trace = run(model, strategy, optimizer, scheduler, step + 1)
    lrs, beta1, _ = trace[step]
    want_lrs, want_beta1 = fastai_expected(step)
    assert lrs == pytest.approx(want_lrs, rel=1e-9)
    assert beta1 == pytest.approx(want_beta1, rel=1e-9)
    if step >= 10:
        assert lrs[0] < lrs[1] < lrs[2]  # phase 2: every group its own rate
    else:
        assert lrs[0] == lrs[1] < lrs[2]  # phase 1: slice(hi) gives the body hi/10


def test_fastai_hand_worked_values() -> None:
    # phase 2 starts at slice(1e-5, 1e-3) / div 5 and peaks at 30 % of its 30 steps (step 10 + 9)
    assert fastai_expected(10)[0] == pytest.approx([2e-6, 2e-5, 2e-4])
    assert fastai_expected(19)[0] == pytest.approx([1e-5, 1e-4, 1e-3])
    assert fastai_expected(19)[1] == pytest.approx(0.85)
    assert fastai_expected(0)[0] == pytest.approx([8e-6, 8e-6, 8e-5])


def test_fastai_phases_what_trains_and_the_optimizer_reset() -> None:
    model, strategy, optimizer, scheduler = setup("fastai", 40, 10, BASE)
    trace = run(model, strategy, optimizer, scheduler, 10)
    bn = {id(p) for m in (model.early[1], model.late[1]) for p in m.parameters()}
    for _, _, trainable in trace:
        assert trainable == [False, False, True]
    # train_bn: inside the frozen groups exactly the norm layers train
    frozen = [p for grp in model.layer_groups()[:2] for p in grp]
    assert {id(p) for p in frozen if p.requires_grad} == bn
    assert optimizer.state  # phase 1 built Adam moments
    conv = model.early[0].weight.detach().clone()
    strategy.on_step(10, model, optimizer)
    assert all(p.requires_grad for p in model.parameters())
    assert len(optimizer.state) == 0  # freeze_to -> clear_state: phase 2 starts from zero moments
    assert torch.equal(model.early[0].weight, conv)
    g = torch.Generator().manual_seed(2)
    x, y = torch.randn(4, 1, 8, 8, generator=g), torch.randint(0, 2, (4,), generator=g)
    optimizer.zero_grad(set_to_none=True)
    F.cross_entropy(model(x), y).backward()
    grad = model.early[0].weight.grad.clone()
    optimizer.step()
    state = optimizer.state[model.early[0].weight]
    beta1 = optimizer.param_groups[0]["betas"][0]
    assert float(state["step"]) == 1  # a fresh moment, not one continued from phase 1
    assert torch.allclose(state["exp_avg"], (1 - beta1) * grad)


def test_fastai_weight_decay_spares_norm_and_bias() -> None:
    model, strategy, optimizer, _ = setup("fastai", 40, 10, BASE)
    decayed = {id(p) for g in optimizer.param_groups if g["weight_decay"] > 0 for p in g["params"]}
    spared = {id(p) for g in optimizer.param_groups if g["weight_decay"] == 0 for p in g["params"]}
    norms = {id(p) for m in (model.early[1], model.late[1]) for p in m.parameters()}
    norm_and_bias = norms | {id(p) for n, p in model.named_parameters() if n.endswith("bias")}
    assert spared == norm_and_bias and decayed.isdisjoint(spared)
    assert {g["weight_decay"] for g in optimizer.param_groups} == {0.0, 0.01}
    assert {g["eps"] for g in optimizer.param_groups} == {1e-5} and optimizer.param_groups[0]["betas"][1] == 0.99


def test_fastai_needs_a_second_phase() -> None:
    with pytest.raises(ConfigError, match="freeze_epochs"):
        build_strategy(transfer_settings("fastai", freeze_epochs=3), TrainConfig(epochs=3))
    with pytest.raises(ConfigError, match="lr_div"):
        build_strategy(transfer_settings("fastai", lr_div=0.5), TrainConfig())


def test_recipe_is_an_alias_of_the_study_winner() -> None:
    assert STRATEGIES.get("recipe") is STRATEGIES.get(RECIPE)
    assert RECIPE in ("romero", "fastai")


def test_the_loop_counts_steps_over_the_whole_run() -> None:
    seen = []

    class Spy:
        def on_step(self, step, model, optimizer):
            seen.append(step)

        def set_train_mode(self, model):
            pass

    from medtransfer.training.batches import Batches
    from medtransfer.training.tasks import Task

    images, labels = np.zeros((12, 1, 8, 8), np.uint8), np.zeros((12, 1), np.float32)
    batches = Batches(images, labels, np.arange(12), 4, [0.5], [0.25], torch.device("cpu"), shuffle=True)
    model = nn.Sequential(nn.Flatten(), nn.Linear(64, 1))
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda k: 1.0)
    cfg = TrainConfig(epochs=2, batch_size=4, grad_clip=None)
    for epoch in range(2):
        loop.train_model_epoch(model, Task("binary", 1), Spy(), opt, sched, batches, cfg, 0, epoch, lambda i: None)
    assert seen == [0, 1, 2, 3, 4, 5]


# ----------------------------------------------------------------------------- resume mid-phase
def tiny(strategy: str, **transfer):
    from medtransfer.config import Config, from_dict

    return from_dict(
        Config,
        {
            "task": "binary",
            "seed": 3,
            "data": {"path": "synthetic:chest,n=160,visibility=0.9,seed=1", "image_size": 32},
            "model": {"backbone": "tiny", "dropout": 0.0},
            "transfer": {"strategy": strategy, **transfer},
            "train": {"epochs": 4, "batch_size": 32, "lr": 0.01},
        },
    )


@pytest.mark.parametrize(
    ("strategy", "transfer", "crash_at"),
    [
        ("fastai", {"freeze_epochs": 2}, 2),  # after epoch 1 of 2 frozen ones: the middle of phase 1
        ("fastai", {"freeze_epochs": 1}, 3),  # after epoch 2, the middle of phase 2
        ("romero", {}, 2),
    ],
)
def test_resume_in_the_middle_of_a_phase_equals_an_uninterrupted_run(
    tmp_path, monkeypatch, strategy, transfer, crash_at
):
    from medtransfer.training.run import train_run

    cfg = tiny(strategy, **transfer)
    full = train_run(cfg, tmp_path / "full", progress=False)
    real, calls = loop.train_one_epoch, {"n": 0}

    def crashing(*args, **kwargs):
        calls["n"] += 1
        if calls["n"] == crash_at:
            raise KeyboardInterrupt
        return real(*args, **kwargs)

    monkeypatch.setattr(loop, "train_one_epoch", crashing)
    with pytest.raises(KeyboardInterrupt):
        train_run(cfg, tmp_path / "part", progress=False)
    monkeypatch.setattr(loop, "train_one_epoch", real)
    resumed = train_run(cfg, tmp_path / "part", resume=True, progress=False)
    wf, wr = (
        load_file(str(tmp_path / "full" / "model.safetensors")),
        load_file(str(tmp_path / "part" / "model.safetensors")),
    )
    assert all(torch.equal(wf[k], wr[k]) for k in wf)
    assert resumed["auc"] == full["auc"]
    hf, hr = pd.read_csv(tmp_path / "full" / "history.csv"), pd.read_csv(tmp_path / "part" / "history.csv")
    assert np.allclose(hf["train_loss"], hr["train_loss"]) and np.allclose(hf["lr"], hr["lr"])
    assert full["strategy"]["strategy"] == strategy
