"""Transfer strategies: the registry, building a strategy, and the ``transfer`` section each strategy owns.

A strategy is a small object with hooks (:class:`~medtransfer.transfer.base.Strategy`) and a frozen settings
dataclass (its ``Settings``: :class:`~medtransfer.config.TransferConfig`, the keys every strategy shares, or a
subclass with the strategy's own keys). Built-in strategies live in modules of their own that register on import:
``simple.py`` (scratch, linear_probe, finetune, discriminative, gradual_unfreeze, decoder_finetune), ``romero.py``,
``fastai.py`` and ``recipe.py`` (an alias); :data:`STRATEGIES` imports them on its first lookup, so importing this
module registers nothing and imports none of them. Adding a strategy is one module: a settings dataclass, a
:class:`Strategy` subclass naming it, ``@register_strategy`` (``tests/unit/transfer/toy_strategy.py``).

How the training loop calls the hooks::

    strategy = build_strategy(cfg.transfer, cfg.train)
    strategy.plan(total_steps, steps_per_epoch)               # step-indexed schedules need the length
    if resuming:
        strategy.load_state_dict(ckpt["strategy"], model)     # restores what was unfrozen
    else:
        strategy.on_train_start(model)                        # initial freezing, head re-init
    optimizer = torch.optim.AdamW(strategy.param_groups(model), **strategy.optimizer_options())
    schedule = strategy.schedule(len(layer_groups(model)))    # None: the lr_policy's torch scheduler
    scheduler = StepSchedule(optimizer, schedule) if schedule else build_scheduler(strategy.lr_policy, ...)
    # resuming: optimizer.load_state_dict(...), scheduler.load_state_dict(...)
    for epoch in range(start_epoch, cfg.train.epochs):
        strategy.on_epoch_start(epoch, model, optimizer)      # unfreeze on an epoch schedule
        model.train()
        strategy.set_train_mode(model)                        # frozen BatchNorm back to eval
        for each batch (global step k):
            strategy.on_step(k, model, optimizer)             # unfreeze on a step schedule (romero, fastai)
            ...  # zero_grad(set_to_none=True), backward, optimizer.step(), scheduler.step()
        checkpoint["strategy"] = strategy.state_dict()

Settings a strategy has its own default for (``transfer.lr_mult``, ``train.weight_decay``, ``train.warmup_pct``,
``train.div_factor``, ``train.final_div_factor``, ``train.select_by``, ``transfer.unfreeze_at``) are ``null`` in the
config unless the user sets them; :meth:`Strategy.setting` resolves them and :meth:`Strategy.settings` lists what a
run used (written to ``metrics.json``).

The YAML layout stays flat: ``transfer: {strategy: romero, unfreeze_at: [0.1, 0.2]}`` is built as the strategy's
settings dataclass (:func:`settings_from_dict`). In a study, ``transfer`` holds the keys of every strategy in
``study.strategies`` and each arm takes its own (:func:`study_transfer`, :func:`arm_transfer`).
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Iterable, Mapping
from typing import Any

from medtransfer.config import RESOLVERS, Config, TrainConfig, TransferConfig, apply_overrides, from_dict, to_dict
from medtransfer.errors import ConfigError, UnknownNameError
from medtransfer.registry import Registry, suggest
from medtransfer.transfer.base import (
    NORM_TYPES,
    SETTING_DEFAULTS,
    Strategy,
    as_settings,
    layer_groups,
    norm_params,
    own_keys,
    reset_head,
    set_trainable,
)

log = logging.getLogger(__name__)

__all__ = [
    "NORM_TYPES",
    "RECIPE",
    "SETTING_DEFAULTS",
    "STRATEGIES",
    "Strategy",
    "arm_transfer",
    "build_strategy",
    "layer_groups",
    "norm_params",
    "register_strategy",
    "reset_head",
    "set_trainable",
    "settings_class",
    "settings_for",
    "settings_from_dict",
    "study_transfer",
    "transfer_defaults",
    "transfer_settings",
]

STRATEGIES: Registry[type[Strategy]] = Registry(
    "strategy",
    builtins=tuple(f"medtransfer.transfer.{m}" for m in ("simple", "romero", "fastai", "recipe")),
)

# `recipe` names the published recipe that won our PneumoniaMNIST study (docs/results/pneumonia/notes.md); it is an
# alias (registered by recipe.py), never a schedule of its own.
RECIPE = "romero"

# The keys of the flat ``transfer`` section before strategies had settings of their own (every version wrote these
# seven, the later ones also unfreeze_at, freeze_epochs and lr_div). A section with all of them is a resolved config of
# such a version, which listed every strategy's keys and ignored the other strategies' ones: they are dropped.
LEGACY_KEYS = frozenset(
    {"lr_policy", "lr_mult", "unfreeze_every", "unfreeze_schedule", "head_epochs", "train_bn", "unfreeze_encoder_at"}
)


def register_strategy(cls: type[Strategy]) -> type[Strategy]:
    """Class decorator: register ``cls`` under ``cls.name``."""
    STRATEGIES.register(cls.name, cls)
    return cls


def build_strategy(transfer: TransferConfig, train: TrainConfig) -> Strategy:
    """The strategy named by ``transfer.strategy``; unknown names raise with close matches.

    Example:
        >>> build_strategy(TransferConfig(strategy="fastai"), TrainConfig()).name
        'fastai'
    """
    return STRATEGIES.get(transfer.strategy)(transfer, train)


def __getattr__(name: str) -> type[Strategy]:
    """The built-in strategy classes (``Scratch``, ``Romero`` ...), importable from here as before; looking one up
    imports the built-in modules (a plain ``import`` of this module does not)."""
    if not name.startswith("_"):
        for _, cls in STRATEGIES.items():
            if cls.__name__ == name:
                return cls
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


# --------------------------------------------------------------------------- settings
def settings_class(name: str, where: str = "transfer.strategy") -> type[TransferConfig]:
    """The settings dataclass of the strategy ``name``; an unknown name raises with close matches, naming ``where``."""
    try:
        return STRATEGIES.get(str(name)).Settings
    except UnknownNameError as e:
        raise UnknownNameError(f"{where}: {e}") from None


def _names(settings: type[TransferConfig]) -> set[str]:
    return {f.name for f in dataclasses.fields(settings)}


def _owners(key: str) -> dict[str, Any]:
    """The strategies whose own settings have ``key``: their name → its default there."""
    return {cls.name: own_keys(cls.Settings)[key] for _, cls in STRATEGIES.items() if key in own_keys(cls.Settings)}


def _at_default(key: str, value: Any) -> bool:
    return any(value == default for default in _owners(key).values())


def transfer_defaults() -> dict[str, Any]:
    """Every ``transfer`` key of every registered strategy with its default: the shared keys first.

    Example:
        >>> transfer_defaults()["unfreeze_at"], transfer_defaults()["strategy"]
        (None, 'finetune')
    """
    out = {f.name: f.default for f in dataclasses.fields(TransferConfig)}
    for _, cls in STRATEGIES.items():
        for key, default in own_keys(cls.Settings).items():
            out.setdefault(key, default)
    return out


def _unknown_key(key: str, strategy: str, own: Iterable[str], where: str) -> ConfigError:
    """The error for a key the strategy ``strategy`` does not have: whose key it is, or a close match."""
    owners = sorted(_owners(key))
    if owners:
        return ConfigError(
            f"{where}.{key} is a setting of strategy {' or '.join(owners)}, not of {strategy} ({where}.strategy); "
            f"set {where}.strategy: {owners[0]} or leave {key} out"
        )
    close = suggest(str(key), sorted(own))
    if close:
        return ConfigError(f"unknown config key '{where}.{key}'; did you mean {close[0]!r}?")
    other = suggest(str(key), [k for k in transfer_defaults() if k not in own])
    hint = (
        f"; did you mean {other[0]!r} (a setting of strategy {' or '.join(sorted(_owners(other[0])))})?"
        if other
        else f"; known keys: {sorted(own)}"
    )
    return ConfigError(f"unknown config key '{where}.{key}'{hint}")


def settings_from_dict(data: Mapping[str, Any] | None, where: str = "transfer") -> TransferConfig:
    """A ``transfer`` section as the settings dataclass of its ``strategy`` (what the config loader builds):
    unknown keys, types and ranges are checked as for every section.

    A key of another strategy is refused, naming that strategy, unless it is at that strategy's default (a resolved
    config switched with ``--set transfer.strategy=...`` keeps its keys) or the section is a resolved config written
    before strategies had settings of their own (:data:`LEGACY_KEYS`); such keys are dropped.

    Example:
        >>> settings_from_dict({"strategy": "romero", "unfreeze_at": [0.1, 0.3]}).unfreeze_at
        [0.1, 0.3]
    """
    data = dict(data or {})
    strategy = str(data.get("strategy", TransferConfig.strategy))
    settings = settings_class(strategy, f"{where}.strategy")
    own = _names(settings)
    legacy = LEGACY_KEYS <= data.keys()
    for key in [k for k in data if k not in own]:
        if not (legacy and _owners(key)) and not _at_default(key, data[key]):
            raise _unknown_key(key, strategy, own, where)
        del data[key]
    return from_dict(settings, data, prefix=where)


def transfer_settings(strategy: str = "finetune", **values: Any) -> TransferConfig:
    """The settings of ``strategy`` from keyword values, checked as the loader checks a ``transfer`` section.

    Example:
        >>> transfer_settings("gradual_unfreeze", head_epochs=2)
        GradualUnfreezeSettings(strategy='gradual_unfreeze', lr_policy=None, lr_mult=None, train_bn=True, \
unfreeze_every=1, unfreeze_schedule=None, head_epochs=2)
    """
    return settings_from_dict({"strategy": strategy, **values})


def settings_for(transfer: TransferConfig | Mapping[str, Any]) -> TransferConfig:
    """``transfer`` (settings of any class, or a mapping) as the settings dataclass of its strategy."""
    if isinstance(transfer, Mapping):
        return settings_from_dict(transfer)
    return as_settings(settings_class(transfer.strategy), transfer)


def resolve_transfer(value: TransferConfig | Mapping[str, Any], where: str = "transfer") -> TransferConfig:
    """The config loader's resolver of the ``transfer`` section (:data:`medtransfer.config.RESOLVERS`)."""
    return settings_from_dict(value, where) if isinstance(value, Mapping) else settings_for(value)


RESOLVERS.register("transfer", resolve_transfer)


def arm_transfer(section: Mapping[str, Any], strategy: str) -> dict[str, Any]:
    """The ``transfer`` section of one arm of a study: the keys of ``strategy`` from the study's shared section
    (:func:`study_transfer`), with ``strategy`` set."""
    own = _names(settings_class(strategy, "study.strategies"))
    return {**{k: v for k, v in section.items() if k in own}, "strategy": strategy}


def study_transfer(section: Mapping[str, Any] | TransferConfig | None, study: Any) -> dict[str, Any]:
    """A study's shared ``transfer`` section, checked for each strategy in ``study.strategies`` (with the
    ``transfer.*`` items of its ``study.strategy_settings``) and resolved: every key of every registered strategy,
    at its value or default, as a resolved config has always listed them.

    A key that no strategy of the study has is refused unless it is at its default (or the section is a legacy
    resolved config, :data:`LEGACY_KEYS`): it would be ignored.
    """
    if dataclasses.is_dataclass(section):
        section = dataclasses.asdict(section)
    section = dict(section or {})
    shared = str(section.get("strategy", TransferConfig.strategy))
    settings_class(shared)  # a misspelt name fails here, though each arm replaces it
    arms = {name: settings_class(name, "study.strategies") for name in study.strategies}
    ran = set().union(_names(TransferConfig), *map(_names, arms.values()))
    legacy = LEGACY_KEYS <= section.keys()
    resolved = {**transfer_defaults(), "strategy": shared}
    for key in [k for k in section if k not in ran]:
        if not _owners(key):
            raise _unknown_key(key, shared, ran, "transfer")
        if not (legacy or _at_default(key, section[key])):
            raise ConfigError(
                f"transfer.{key} is a setting of strategy {' or '.join(sorted(_owners(key)))}, which this study does "
                f"not run (study.strategies: {list(study.strategies)}); add it there or leave {key} out"
            )
        if legacy:
            resolved[key] = section[key]  # as written (no arm reads it), so the study's identity stays the same
    for name in arms:
        arm = arm_transfer(section, name)
        settings = settings_from_dict(arm)
        resolved.update({k: v for k, v in dataclasses.asdict(settings).items() if k != "strategy"})
        _check_arm_overrides(name, arm, (study.strategy_settings or {}).get(name))
    for name in study.strategy_settings or {}:
        if name not in arms:  # kept for a strategy the study does not run (a trimmed example); a misspelt one fails
            settings_class(name, "study.strategy_settings")
            log.warning("study.strategy_settings.%s is ignored: '%s' is not in study.strategies", name, name)
    return resolved


def check_study_arms(cfg: Any) -> None:
    """Build each strategy of a study once with its arm's config (the shared ``transfer`` keys it owns, then its
    ``study.strategy_settings``, ``train.*`` overrides included): a bad setting, or one that does not fit the
    training (fastai's ``freeze_epochs`` against ``train.epochs``), fails when the study's config loads."""
    base = {k: v for k, v in to_dict(cfg).items() if k != "study"}
    for name in cfg.study.strategies:
        data = apply_overrides(
            {**base, "transfer": arm_transfer(base["transfer"], name)},
            (cfg.study.strategy_settings or {}).get(name, []),
        )
        try:
            arm = from_dict(Config, data)
            build_strategy(arm.transfer, arm.train)
        except ConfigError as e:
            raise ConfigError(f"study strategy '{name}': {e}") from None


RESOLVERS.register("study_transfer", study_transfer)  # a study section's shared transfer keys, at load
RESOLVERS.register("study_arms", check_study_arms)


def _check_arm_overrides(name: str, arm: dict[str, Any], overrides: Any) -> None:
    """The ``transfer.*`` items of ``study.strategy_settings[name]`` applied to the arm's section and checked (other
    items are checked when the study starts; a malformed list is reported by the grid)."""
    if not isinstance(overrides, list) or not all(isinstance(o, str) for o in overrides):
        return
    mine = [o for o in overrides if o.strip().startswith("transfer.")]
    if not mine:
        return
    try:
        settings_from_dict(apply_overrides({"transfer": arm}, mine)["transfer"])
    except ConfigError as e:
        raise ConfigError(f"study.strategy_settings.{name}: {e}") from None
