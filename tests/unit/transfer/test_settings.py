"""Strategies own their ``transfer`` keys: each declares a settings dataclass, the loader builds the section as the
chosen strategy's (another strategy's key refused, naming it), a new strategy with a key of its own is one module,
configs of earlier versions (one flat section with every key) still load, and a study checks its shared section for
each of its strategies."""

from __future__ import annotations

import ast
import dataclasses
import importlib.util
import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from medtransfer.config import Config, TrainConfig, TransferConfig, from_dict, load_config, to_dict, write_run_info
from medtransfer.errors import ConfigError, UnknownNameError
from medtransfer.studies.config import StudyConfig
from medtransfer.studies.grid import Trial
from medtransfer.studies.trial import StudyContext
from medtransfer.training.device import optimizer_and_scheduler
from medtransfer.transfer.base import own_keys
from medtransfer.transfer.strategies import STRATEGIES, arm_transfer, build_strategy, transfer_settings

# The flat section every resolved config had before strategies had settings of their own (finetune's).
OLD_FLAT = {
    "strategy": "finetune",
    "lr_policy": None,
    "lr_mult": None,
    "unfreeze_every": 1,
    "unfreeze_schedule": None,
    "head_epochs": 1,
    "unfreeze_at": None,
    "freeze_epochs": 1,
    "lr_div": 100.0,
    "train_bn": True,
    "unfreeze_encoder_at": None,
}
# Each built-in strategy's own keys (the rest of the section is shared).
OWN = {
    "scratch": {},
    "linear_probe": {},
    "finetune": {},
    "discriminative": {},
    "gradual_unfreeze": {"unfreeze_every": 1, "unfreeze_schedule": None, "head_epochs": 1},
    "decoder_finetune": {"unfreeze_encoder_at": None},
    "romero": {"unfreeze_at": None},
    "recipe": {"unfreeze_at": None},
    "fastai": {"freeze_epochs": 1, "lr_div": 100.0},
}


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "run.yaml"
    path.write_text(text)
    return path


class Net(nn.Module):
    """Four layer groups with BatchNorm: stem | block1 | block2 | head."""

    def __init__(self) -> None:
        super().__init__()

        def block(c_in: int, c_out: int) -> nn.Sequential:
            return nn.Sequential(nn.Conv2d(c_in, c_out, 3, padding=1, bias=False), nn.BatchNorm2d(c_out), nn.ReLU())

        self.stem, self.block1, self.block2 = block(1, 4), block(4, 4), block(4, 4)
        self.head = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(4, 2))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.block2(self.block1(self.stem(x))))

    def layer_groups(self) -> list[list[nn.Parameter]]:
        return [list(m.parameters()) for m in (self.stem, self.block1, self.block2, self.head)]


# ----------------------------------------------------------------------------- the registry
def test_importing_the_strategies_module_registers_nothing_and_has_no_circle() -> None:
    code = (
        "import sys, medtransfer.transfer.strategies as s; "
        "loaded = [m for m in ('simple', 'romero', 'fastai', 'recipe') if 'medtransfer.transfer.' + m in sys.modules]; "
        "sys.exit(f'registered {list(s.STRATEGIES._items)}, imported {loaded}' if s.STRATEGIES._items or loaded else 0)"
    )
    run = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert run.returncode == 0, run.stdout + run.stderr
    for module in ("base", "strategies"):  # the base modules import no built-in strategy module
        tree = ast.parse((Path(__file__).parents[3] / "src/medtransfer/transfer" / f"{module}.py").read_text())
        imported = {n.module for n in ast.walk(tree) if isinstance(n, ast.ImportFrom)}
        assert not imported & {f"medtransfer.transfer.{m}" for m in ("simple", "romero", "fastai", "recipe")}


def test_every_builtin_strategy_declares_its_own_keys() -> None:
    assert set(STRATEGIES.names()) == set(OWN)
    for name, keys in OWN.items():
        assert own_keys(STRATEGIES.get(name).Settings) == keys, name


def test_no_function_in_transfer_is_longer_than_60_lines() -> None:
    for path in sorted((Path(__file__).parents[3] / "src/medtransfer/transfer").glob("*.py")):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
                assert node.end_lineno - node.lineno + 1 <= 60, f"{path.name}:{node.name}"


# ----------------------------------------------------------------------------- loading
@pytest.mark.parametrize("name", sorted(OWN))
def test_a_resolved_config_lists_the_strategys_keys_and_loads_back(tmp_path, name: str) -> None:
    cfg = load_config(None, [f"transfer.strategy={name}"])
    assert isinstance(cfg.transfer, STRATEGIES.get(name).Settings)
    section = to_dict(cfg)["transfer"]
    assert section == {"strategy": name, "lr_policy": None, "lr_mult": None, "train_bn": True, **OWN[name]}
    write_run_info(tmp_path, cfg)
    assert load_config(tmp_path / "config.yaml") == cfg
    # the keys a run records: the shared resolved ones and its own
    settings = build_strategy(cfg.transfer, cfg.train).settings()
    assert set(settings) == {"strategy", "lr_mult", "weight_decay", "warmup_pct", "div_factor", "final_div_factor",
                             "select_by", *OWN[name]}  # fmt: skip


@pytest.mark.parametrize(
    ("strategy", "key", "value", "owner"),
    [
        ("finetune", "unfreeze_at", "[0.1, 0.3]", "romero"),
        ("romero", "freeze_epochs", "2", "fastai"),
        ("fastai", "head_epochs", "0", "gradual_unfreeze"),
        ("gradual_unfreeze", "unfreeze_encoder_at", "3", "decoder_finetune"),
        ("linear_probe", "lr_div", "10", "fastai"),
    ],
)
def test_a_key_of_another_strategy_is_refused_naming_it(strategy, key, value, owner) -> None:
    with pytest.raises(ConfigError) as info:
        load_config(None, [f"transfer.strategy={strategy}", f"transfer.{key}={value}"])
    message = str(info.value)
    assert message.startswith(f"transfer.{key} is a setting of strategy {owner}, not of {strategy}"), message
    assert f"transfer.strategy: {owner}" in message


def test_unknown_keys_suggest_a_close_key_and_its_strategy() -> None:
    with pytest.raises(ConfigError, match=r"unknown config key 'transfer.unfreze_at'; did you mean 'unfreeze_at'\?"):
        load_config(None, ["transfer.strategy=romero", "transfer.unfreze_at=[0.1]"])
    with pytest.raises(ConfigError, match=r"did you mean 'head_epochs' \(a setting of strategy gradual_unfreeze\)"):
        load_config(None, ["transfer.head_epoch=2"])
    with pytest.raises(ConfigError, match=r"unknown config key 'transfer.zzz'; known keys: \["):
        load_config(None, ["transfer.zzz=2"])
    with pytest.raises(UnknownNameError, match=r"^transfer.strategy: unknown strategy 'fastia'; did you mean"):
        load_config(None, ["transfer.strategy=fastia"])


def test_switching_the_strategy_of_a_resolved_config(tmp_path) -> None:
    """A resolved config keeps its strategy's keys: at their defaults they do not stop --set transfer.strategy=..."""
    write_run_info(tmp_path, load_config(None, ["transfer.strategy=fastai"]))
    cfg = load_config(tmp_path / "config.yaml", ["transfer.strategy=romero"])
    assert to_dict(cfg)["transfer"] == {**to_dict(Config())["transfer"], "strategy": "romero", "unfreeze_at": None}
    write_run_info(tmp_path, load_config(None, ["transfer.strategy=fastai", "transfer.lr_div=10"]))
    with pytest.raises(ConfigError, match="transfer.lr_div is a setting of strategy fastai, not of romero"):
        load_config(tmp_path / "config.yaml", ["transfer.strategy=romero"])


def test_configs_of_earlier_versions_load_and_train_the_same(tmp_path) -> None:
    """Earlier versions wrote one flat section with every strategy's keys (the others' ignored): those are dropped,
    even where a study's shared section had set one for another arm (hippocampus: unfreeze_encoder_at)."""
    for strategy, extra in (("romero", {"unfreeze_at": [0.2, 0.4]}), ("finetune", {"unfreeze_encoder_at": 10})):
        section = {**OLD_FLAT, "strategy": strategy, **extra}
        cfg = from_dict(Config, {"transfer": section})
        assert type(cfg.transfer) is STRATEGIES.get(strategy).Settings
        assert {k: v for k, v in section.items() if k in to_dict(cfg)["transfer"]} == to_dict(cfg)["transfer"]
    older = {k: v for k, v in OLD_FLAT.items() if k not in ("unfreeze_at", "freeze_epochs", "lr_div")}  # 8 keys
    assert from_dict(Config, {"transfer": {**older, "strategy": "scratch"}}).transfer == TransferConfig("scratch")
    # built in code with the shared class, a strategy gets its own settings (its keys at their defaults)
    assert build_strategy(TransferConfig(strategy="fastai"), TrainConfig()).transfer == transfer_settings("fastai")
    with pytest.raises(ConfigError, match="transfer.head_epochs=3 is not a setting of strategy 'finetune'"):
        build_strategy(dataclasses.replace(transfer_settings("gradual_unfreeze", head_epochs=3), strategy="finetune"),
                       TrainConfig())  # fmt: skip


# ----------------------------------------------------------------------------- studies
def study(tmp_path: Path, transfer: dict, strategies: list[str], settings: dict | None = None) -> Path:
    import yaml

    data = {"transfer": transfer, "study": {"strategies": strategies, "strategy_settings": settings or {}}}
    path = tmp_path / "study.yaml"
    path.write_text(yaml.safe_dump(data))
    return path


def trial_transfer(cfg: StudyConfig, strategy: str):
    trial = Trial(f"scratch/{strategy}", "net", "scratch", strategy, "all", 10, 0)
    return StudyContext(cfg, "/tmp/study", {"scratch": "scratch"}).train_config(trial).transfer


def test_a_study_checks_its_shared_section_for_each_strategy(tmp_path) -> None:
    shared = {"lr_policy": "cosine", "unfreeze_encoder_at": 10}  # examples/hippocampus_study.yaml
    cfg = load_config(study(tmp_path, shared, ["finetune", "decoder_finetune"]), cls=StudyConfig)
    # the study's identity keeps the flat section earlier versions wrote: a study started before resumes
    assert cfg.transfer == {**OLD_FLAT, "lr_policy": "cosine", "unfreeze_encoder_at": 10}
    assert trial_transfer(cfg, "finetune") == TransferConfig(strategy="finetune", lr_policy="cosine")
    assert trial_transfer(cfg, "decoder_finetune").unfreeze_encoder_at == 10
    assert load_config(None, cls=StudyConfig).transfer == OLD_FLAT
    not_run = (
        r"is a setting of strategy decoder_finetune, which this study does not run \(study.strategies: \['finetune'\]"
    )
    with pytest.raises(ConfigError, match=f"^transfer.unfreeze_encoder_at {not_run}"):
        load_config(study(tmp_path, shared, ["finetune"]), cls=StudyConfig)
    with pytest.raises(ConfigError, match="^transfer.unfreeze_encoder_at must be >= 0"):
        load_config(study(tmp_path, {"unfreeze_encoder_at": -1}, ["decoder_finetune"]), cls=StudyConfig)
    with pytest.raises(UnknownNameError, match="^study.strategies: unknown strategy 'finetnue'"):
        load_config(study(tmp_path, {}, ["finetnue"]), cls=StudyConfig)


def test_a_studys_strategy_settings_are_checked_at_load(tmp_path) -> None:
    good = {"romero": ["train.lr=0.001", "transfer.unfreeze_at=[0.2, 0.4]"], "fastai": ["transfer.lr_div=10"]}
    cfg = load_config(study(tmp_path, {}, ["finetune", "romero", "fastai"], good), cls=StudyConfig)
    assert trial_transfer(cfg, "romero").unfreeze_at == [0.2, 0.4]
    assert trial_transfer(cfg, "fastai").lr_div == 10.0
    assert trial_transfer(cfg, "finetune") == TransferConfig()
    for settings, match in (
        ({"romero": ["transfer.unfreeze_at=[0.4, 0.2]"]}, "^study.strategy_settings.romero: transfer.unfreeze_at must"),
        ({"finetune": ["transfer.lr_div=10"]}, "^study.strategy_settings.finetune: transfer.lr_div is a setting of "
                                               "strategy fastai, not of finetune"),
    ):  # fmt: skip
        with pytest.raises(ConfigError, match=match):
            load_config(study(tmp_path, {}, ["finetune", "romero"], settings), cls=StudyConfig)


# ----------------------------------------------------------------------------- a new strategy is one module
@pytest.fixture
def toy(monkeypatch):
    """``toy_strategy.py`` imported afresh (it registers ``toy``); the module and its registration are removed after
    the test."""
    STRATEGIES.names()  # the built-ins first, as a lookup would load them
    spec = importlib.util.spec_from_file_location("toy_strategy", Path(__file__).with_name("toy_strategy.py"))
    module = importlib.util.module_from_spec(spec)
    monkeypatch.setitem(sys.modules, "toy_strategy", module)
    spec.loader.exec_module(module)
    try:
        yield module
    finally:
        STRATEGIES._items.pop("toy", None)  # the registry has no unregister: nothing else may remove a name


def test_a_new_strategy_with_a_key_of_its_own_is_one_module(toy, tmp_path) -> None:
    cfg = load_config(write(tmp_path, "transfer: {strategy: toy, my_knob: 3}\ntrain: {lr: 0.01, epochs: 2}\n"))
    assert cfg.transfer == toy.ToySettings(my_knob=3)
    with pytest.raises(ConfigError, match=r"^transfer.my_knob must be >= 1, got 0; fix it in the config or with --set"):
        load_config(write(tmp_path, "transfer: {strategy: toy, my_knob: 0}\n"))
    with pytest.raises(ConfigError, match="^transfer.my_knob is a setting of strategy toy, not of finetune"):
        load_config(write(tmp_path, "transfer: {my_knob: 3}\n"))
    with pytest.raises(ConfigError, match="^study.strategy_settings.toy: transfer.my_knob must be >= 1"):
        load_config(study(tmp_path, {}, ["finetune", "toy"], {"toy": ["transfer.my_knob=0"]}), cls=StudyConfig)
    arms = load_config(study(tmp_path, {"my_knob": 1}, ["finetune", "toy"]), cls=StudyConfig)
    assert trial_transfer(arms, "toy").my_knob == 1 and arm_transfer(arms.transfer, "finetune") == {
        "strategy": "finetune", "lr_policy": None, "lr_mult": None, "train_bn": True}  # fmt: skip

    # train a step: the top my_knob = 3 of 4 groups move, the stem does not
    torch.manual_seed(0)
    model = Net()
    strategy = build_strategy(cfg.transfer, cfg.train)
    assert strategy.settings()["my_knob"] == 3
    optimizer, scheduler = optimizer_and_scheduler(strategy, model, cfg.train, torch.device("cpu"), 4, 2)
    strategy.on_train_start(model)
    strategy.on_epoch_start(0, model, optimizer)
    model.train()
    strategy.set_train_mode(model)
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    x, y = torch.randn(4, 1, 8, 8), torch.tensor([0, 1, 0, 1])
    optimizer.zero_grad(set_to_none=True)
    F.cross_entropy(model(x), y).backward()
    optimizer.step()
    scheduler.step()
    moved = {n for n, p in model.named_parameters() if not torch.equal(p, before[n])}
    assert moved == set(before) - {"stem.0.weight"}  # the stem's conv is frozen; its BatchNorm trains (train_bn)
    assert model.stem[1].training  # the toy keeps frozen BatchNorm statistics adapting (freezes_bn_stats)
    json.dumps(strategy.settings())  # what metrics.json records
