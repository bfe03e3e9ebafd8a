"""Every registered strategy, epoch by epoch: which parameters train (by identity), at which learning rate,
that frozen parameters and BatchNorm statistics do not move, head re-init, and checkpoint/resume."""

from __future__ import annotations

import io

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from medtransfer.config import TrainConfig, TransferConfig
from medtransfer.errors import ConfigError, UnknownNameError
from medtransfer.training.schedules import build_scheduler
from medtransfer.transfer.strategies import STRATEGIES, Strategy, build_strategy, transfer_settings

EPOCHS, LR, MULT = 4, 1e-2, 0.5
ALL = [{0, 1, 2, 3}] * EPOCHS
GRADUAL = [{3}, {2, 3}, {1, 2, 3}, {0, 1, 2, 3}]
# Layer groups (0 = input side, 3 = head) that train at epochs 0..3 with head_epochs=1, unfreeze_every=1.
EXPECTED_TRAINABLE = {
    "scratch": ALL,
    "linear_probe": [{3}] * EPOCHS,
    "finetune": ALL,
    "discriminative": ALL,
    "gradual_unfreeze": GRADUAL,
    "decoder_finetune": [{2, 3}] * EPOCHS,  # TinyNet.encoder_groups = 2
}
ONE_LR = [LR] * 4
DISCRIMINATIVE = [LR * MULT**3, LR * MULT**2, LR * MULT, LR]
EXPECTED_LRS = {
    "scratch": ONE_LR,
    "linear_probe": ONE_LR,
    "finetune": ONE_LR,
    "discriminative": DISCRIMINATIVE,
    "gradual_unfreeze": ONE_LR,
    "decoder_finetune": ONE_LR,
}
# The published recipes unfreeze by optimizer step, not by epoch: tests/unit/transfer/test_recipes.py covers them.
STEP_SCHEDULED = {"romero", "fastai", "recipe"}
EPOCH_SCHEDULED = [n for n in STRATEGIES.names() if n not in STEP_SCHEDULED]


class TinyNet(nn.Module):
    """Stand-in for a medtransfer backbone: three body groups with BatchNorm; head = (Dropout, Linear)."""

    def __init__(self, num_outputs: int = 3) -> None:
        super().__init__()

        def block(c_in: int, c_out: int, stride: int) -> nn.Sequential:
            return nn.Sequential(nn.Conv2d(c_in, c_out, 3, stride, 1, bias=False), nn.BatchNorm2d(c_out), nn.ReLU())

        self.stem, self.block1, self.block2 = block(1, 4, 1), block(4, 8, 2), block(8, 8, 2)
        self.pool = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten())
        self.head = nn.Sequential(nn.Dropout(0.2), nn.Linear(8, num_outputs))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.pool(self.block2(self.block1(self.stem(x)))))

    encoder_groups = 2  # stem and block1 play the encoder for decoder_finetune

    def layer_groups(self) -> list[list[nn.Parameter]]:
        return [list(m.parameters()) for m in (self.stem, self.block1, self.block2, self.head)]

    def batchnorms(self) -> dict[int, nn.BatchNorm2d]:
        """BatchNorm of each body group, by group index."""
        return {0: self.stem[1], 1: self.block1[1], 2: self.block2[1]}


def make(name: str, **transfer: object) -> Strategy:
    options = {"lr_mult": MULT, "train_bn": False, **transfer}  # pure group freezing unless a test asks
    return build_strategy(transfer_settings(name, **options), TrainConfig(lr=LR, epochs=EPOCHS))


def group_ids(model: TinyNet, indices: set[int]) -> set[int]:
    groups = model.layer_groups()
    return {id(p) for i in indices for p in groups[i]}


def trainable_ids(model: nn.Module) -> set[int]:
    return {id(p) for p in model.parameters() if p.requires_grad}


def trainable_groups(model: TinyNet) -> set[int]:
    return {i for i, g in enumerate(model.layer_groups()) if all(p.requires_grad for p in g)}


@pytest.fixture
def batch() -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(0)
    return torch.randn(8, 1, 16, 16, generator=g), torch.randint(0, 3, (8,), generator=g)


def test_every_registered_strategy_is_covered() -> None:
    assert set(STRATEGIES.names()) == set(EXPECTED_TRAINABLE) | STEP_SCHEDULED


@pytest.mark.parametrize("name", EPOCH_SCHEDULED)
def test_what_trains_when_and_at_which_lr(name: str, batch: tuple[torch.Tensor, torch.Tensor]) -> None:
    torch.manual_seed(0)
    model = TinyNet()
    strategy = make(name, lr_policy="constant")  # train_bn off: see test_train_bn_* below
    strategy.on_train_start(model)
    optimizer = torch.optim.AdamW(strategy.param_groups(model), weight_decay=0.1)  # decay must skip frozen
    scheduler = build_scheduler(strategy.lr_policy, optimizer, EPOCHS, 1, strategy.train)

    assert [g["lr"] for g in optimizer.param_groups] == pytest.approx(EXPECTED_LRS[name])
    for group, params in zip(optimizer.param_groups, model.layer_groups(), strict=True):
        assert [id(p) for p in group["params"]] == [id(p) for p in params]  # frozen groups stay in
    assert optimizer.param_groups[-1]["name"] == "head"

    x, y = batch
    for epoch in range(EPOCHS):
        strategy.on_epoch_start(epoch, model, optimizer)
        model.train()
        strategy.set_train_mode(model)
        expected = EXPECTED_TRAINABLE[name][epoch]
        assert trainable_ids(model) == group_ids(model, expected), f"epoch {epoch}"

        params = {id(p): p.detach().clone() for p in model.parameters()}
        stats = {i: bn.running_mean.clone() for i, bn in model.batchnorms().items()}
        optimizer.zero_grad(set_to_none=True)
        F.cross_entropy(model(x), y).backward()
        optimizer.step()
        scheduler.step()

        for p in model.parameters():
            if id(p) in group_ids(model, expected):
                assert not torch.equal(p, params[id(p)])
            else:
                assert p.grad is None and torch.equal(p, params[id(p)])
        for i, bn in model.batchnorms().items():
            frozen = i not in expected
            assert bn.training is not frozen
            assert torch.equal(bn.running_mean, stats[i]) is frozen


def bn_ids(model: TinyNet) -> set[int]:
    return {id(p) for bn in model.batchnorms().values() for p in bn.parameters()}


@pytest.mark.parametrize("name", ["gradual_unfreeze"])
def test_train_bn_keeps_normalisation_of_frozen_groups_training(name: str, batch) -> None:
    """fastai's freeze(train_bn=True): in a frozen group only the norm layers train, in train mode."""
    torch.manual_seed(0)
    model = TinyNet()
    assert TransferConfig().train_bn  # on by default, as in fastai
    strategy = make(name, lr_policy="constant", train_bn=True)
    strategy.on_train_start(model)
    optimizer = torch.optim.AdamW(strategy.param_groups(model), weight_decay=0.1)
    strategy.on_epoch_start(0, model, optimizer)
    model.train()
    strategy.set_train_mode(model)
    assert trainable_ids(model) == group_ids(model, {3}) | bn_ids(model)
    conv = model.stem[0].weight.detach().clone()
    stats = model.stem[1].running_mean.clone()
    gamma = model.stem[1].weight.detach().clone()
    optimizer.zero_grad(set_to_none=True)
    F.cross_entropy(model(*batch[:1]), batch[1]).backward()
    optimizer.step()
    assert model.stem[1].training
    assert torch.equal(model.stem[0].weight, conv)  # the frozen conv does not move
    assert not torch.equal(model.stem[1].running_mean, stats)  # its BatchNorm adapts to the target
    assert not torch.equal(model.stem[1].weight, gamma)
    # the state survives a checkpoint: a fresh strategy restores the same trainable set
    fresh = make(name, lr_policy="constant", train_bn=True)
    other = TinyNet()
    other.load_state_dict(model.state_dict())
    fresh.load_state_dict(strategy.state_dict(), other)
    assert {n for n, p in other.named_parameters() if p.requires_grad} == {
        n for n, p in model.named_parameters() if p.requires_grad
    }


def test_linear_probe_ignores_train_bn() -> None:
    model = TinyNet()
    strategy = make("linear_probe", train_bn=True)
    strategy.on_train_start(model)
    assert trainable_ids(model) == group_ids(model, {3})


@pytest.mark.parametrize("name", STRATEGIES.names())
def test_only_the_published_recipes_reinitialise_the_head(name: str) -> None:
    torch.manual_seed(0)
    model = TinyNet()
    head, body = model.head[1].weight.detach().clone(), model.stem[0].weight.detach().clone()
    romero = STRATEGIES.get(name) is STRATEGIES.get("romero")  # `recipe` is an alias of it
    strategy = make(name, **({"unfreeze_at": [0.1, 0.2, 0.3]} if romero else {}))  # TinyNet: 4 groups
    strategy.plan(40, 10)
    strategy.on_train_start(model)
    fresh = name in STEP_SCHEDULED
    assert torch.equal(model.head[1].weight, head) is not fresh
    assert torch.equal(model.stem[0].weight, body)
    assert strategy.state_dict()["head_reset"] is fresh


@pytest.mark.parametrize("name", EPOCH_SCHEDULED)
def test_resume_keeps_what_was_unfrozen(name: str) -> None:
    torch.manual_seed(0)
    model = TinyNet()
    strategy = make(name)
    strategy.on_train_start(model)
    uninterrupted = []
    for epoch in range(EPOCHS):
        strategy.on_epoch_start(epoch, model)
        uninterrupted.append(trainable_groups(model))
        if epoch == 1:  # checkpoint written at the end of epoch 1
            buffer = io.BytesIO()
            torch.save({"strategy": strategy.state_dict(), "model": model.state_dict()}, buffer)
    assert uninterrupted == EXPECTED_TRAINABLE[name]

    buffer.seek(0)
    ckpt = torch.load(buffer, weights_only=True)
    fresh = TinyNet()
    fresh.load_state_dict(ckpt["model"])
    resumed = make(name)
    resumed.load_state_dict(ckpt["strategy"])
    resumed.on_train_start(fresh)
    assert trainable_groups(fresh) == uninterrupted[1]  # not re-frozen to the initial pattern
    assert torch.equal(fresh.head[1].weight, ckpt["model"]["head.1.weight"])  # head not re-initialised again
    for epoch in (2, 3):
        resumed.on_epoch_start(epoch, fresh)
        assert trainable_ids(fresh) == group_ids(fresh, uninterrupted[epoch])

    other = TinyNet()  # the loop's resume path: load_state_dict(state, model), no on_train_start
    make(name).load_state_dict(ckpt["strategy"], other)
    assert trainable_groups(other) == uninterrupted[1]


def test_a_fresh_strategy_would_refreeze() -> None:
    """Why the state is checkpointed: without it, on_train_start starts over from the head."""
    model = TinyNet()
    make("gradual_unfreeze").on_train_start(model)
    assert trainable_groups(model) == {3}


def test_stale_grads_of_frozen_params_are_cleared(batch: tuple[torch.Tensor, torch.Tensor]) -> None:
    """A grad left from before freezing would let AdamW decay a frozen weight."""
    model = TinyNet()
    x, y = batch
    F.cross_entropy(model(x), y).backward()
    strategy = make("linear_probe")
    strategy.on_train_start(model)
    body = [p.detach().clone() for p in model.stem.parameters()]
    optimizer = torch.optim.AdamW(strategy.param_groups(model), weight_decay=0.5)
    optimizer.step()
    assert all(p.grad is None for p in model.stem.parameters())
    assert all(torch.equal(p, b) for p, b in zip(model.stem.parameters(), body, strict=True))


@pytest.mark.parametrize(
    ("options", "expected"),
    [
        ({"head_epochs": 1}, [1, 2, 3, 4, 4, 4]),
        ({"head_epochs": 0}, [2, 3, 4, 4, 4, 4]),
        ({"head_epochs": 2, "unfreeze_every": 2}, [1, 1, 2, 2, 3, 3]),
        ({"unfreeze_schedule": [1, 3]}, [1, 2, 2, 3, 3, 3]),
        ({"unfreeze_schedule": [2, 2]}, [1, 1, 3, 3, 3, 3]),
    ],
)
def test_gradual_schedules(options: dict, expected: list[int]) -> None:
    strategy = make("gradual_unfreeze", **options)
    assert [strategy.trainable_groups(e, 4) for e in range(6)] == expected


def test_unknown_strategy_suggests_close_names() -> None:
    with pytest.raises(UnknownNameError, match=r"did you mean \['gradual_unfreeze'\]") as info:
        make("gradual_unfreez")
    assert isinstance(info.value, KeyError)


def test_invalid_settings_are_rejected() -> None:
    with pytest.raises(ConfigError, match="lr_mult"):
        make("discriminative", lr_mult=0.0)
    with pytest.raises(ConfigError, match="unfreeze_every"):
        make("gradual_unfreeze", unfreeze_every=0)


def test_parameters_outside_the_groups_or_the_optimizer_are_reported() -> None:
    model = TinyNet()
    model.layer_groups = lambda: [list(model.stem.parameters()), list(model.head.parameters())]
    with pytest.raises(ValueError, match="not in any layer group"):
        make("finetune").param_groups(model)

    model = TinyNet()
    optimizer = torch.optim.AdamW(model.head.parameters())
    with pytest.raises(ValueError, match="missing from the optimizer"):
        make("finetune").on_epoch_start(0, model, optimizer)


def test_decoder_finetune_unfreezes_the_encoder_on_schedule_and_needs_an_encoder() -> None:
    model = TinyNet()
    strategy = make("decoder_finetune", unfreeze_encoder_at=2)
    strategy.on_train_start(model)
    seen = []
    for epoch in range(EPOCHS):
        strategy.on_epoch_start(epoch, model)
        seen.append(trainable_groups(model))
    assert seen == [{2, 3}, {2, 3}, {0, 1, 2, 3}, {0, 1, 2, 3}]
    from medtransfer.models.backbones import build_model

    with pytest.raises(ConfigError, match="encoder"):
        make("decoder_finetune").on_train_start(build_model("tiny", 2, in_chans=1))


@pytest.mark.parametrize("name", [n for n in EPOCH_SCHEDULED if n != "decoder_finetune"])
def test_smoke_with_the_real_tiny_backbone(name: str) -> None:
    try:
        from medtransfer.models.backbones import build_model

        model = build_model("tiny", 2, in_chans=1)
    except Exception as e:  # the backbone module is written in parallel
        pytest.skip(f"medtransfer.models.backbones not usable: {e}")
    strategy = make(name)
    strategy.on_train_start(model)
    optimizer = torch.optim.AdamW(strategy.param_groups(model), weight_decay=0.1)
    scheduler = build_scheduler(strategy.lr_policy, optimizer, 2, 1, strategy.train)
    groups = model.layer_groups()
    x = torch.randn(4, 1, 32, 32)
    for epoch in range(2):
        strategy.on_epoch_start(epoch, model, optimizer)
        model.train()
        strategy.set_train_mode(model)
        n = strategy.trainable_groups(epoch, len(groups))
        assert trainable_ids(model) == {id(p) for g in groups[len(groups) - n :] for p in g}
        before = {id(p): p.detach().clone() for p in model.parameters()}
        optimizer.zero_grad(set_to_none=True)
        model(x).float().pow(2).mean().backward()
        optimizer.step()
        scheduler.step()
        assert all(torch.equal(p, before[id(p)]) for p in model.parameters() if not p.requires_grad)
