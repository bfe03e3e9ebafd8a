"""The base of every transfer strategy: :class:`Strategy` with its hooks and the behaviour a strategy may change,
and the helpers strategies share (layer groups, freezing, head re-initialisation, settings classes).

The model supplies ``layer_groups() -> list[list[nn.Parameter]]`` ordered from input to output, the last group being
the head, and a ``head`` module. A strategy never indexes layers itself: it counts groups from the head ("the top").
Frozen parameters get ``requires_grad_(False)`` but stay in the optimizer: with
``optimizer.zero_grad(set_to_none=True)`` their ``.grad`` stays ``None`` and AdamW skips them entirely (no update, no
weight decay), so the optimizer and the scheduler are built once and never rebuilt.

This module registers nothing and imports no strategy: the built-in strategies (``simple.py``, ``romero.py``,
``fastai.py``) import it, and :data:`medtransfer.transfer.strategies.STRATEGIES` imports them on its first lookup.
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Callable
from typing import Any, ClassVar

from torch import nn
from torch.nn.modules.batchnorm import _BatchNorm
from torch.optim import Optimizer

from medtransfer.config import TrainConfig, TransferConfig
from medtransfer.errors import ConfigError

log = logging.getLogger(__name__)


def layer_groups(model: nn.Module) -> list[list[nn.Parameter]]:
    """The model's layer groups (input → output, head last), checked to cover every parameter once."""
    if not hasattr(model, "layer_groups"):
        raise TypeError(f"{type(model).__name__} has no layer_groups(); build it with medtransfer.models")
    groups = [list(g) for g in model.layer_groups()]
    if not groups:
        raise ValueError(f"{type(model).__name__}.layer_groups() returned no groups")
    seen: dict[int, int] = {}
    for i, group in enumerate(groups):
        for p in group:
            if id(p) in seen:
                raise ValueError(f"a parameter is in layer groups {seen[id(p)]} and {i}")
            seen[id(p)] = i
    # A parameter outside every group would never reach the optimizer and silently stay at its init.
    missing = [name for name, p in model.named_parameters() if id(p) not in seen]
    if missing:
        raise ValueError(f"parameters not in any layer group of {type(model).__name__}: {missing[:5]}")
    return groups


NORM_TYPES = (_BatchNorm, nn.modules.instancenorm._InstanceNorm, nn.LayerNorm, nn.GroupNorm)


def norm_params(model: nn.Module) -> set[int]:
    """Ids of the parameters of the model's normalisation layers (the ones ``train_bn`` keeps training)."""
    return {id(p) for m in model.modules() if isinstance(m, NORM_TYPES) for p in m.parameters(recurse=False)}


# The defaults of the shared settings a strategy may override (``Strategy.default``) when the config leaves them null.
SETTING_DEFAULTS: dict[str, Any] = {
    "lr_mult": 0.3,
    "weight_decay": 1e-4,
    "warmup_pct": 0.25,
    "div_factor": 25.0,
    "final_div_factor": 1e5,
    "select_by": "auc",
}


def set_trainable(groups: list[list[nn.Parameter]], n_trainable: int, keep: set[int] = frozenset()) -> None:
    """Let the top ``n_trainable`` groups train and freeze the others (clearing their stale grads);
    parameters whose id is in ``keep`` train wherever they are."""
    n_frozen = max(0, len(groups) - n_trainable)
    for i, group in enumerate(groups):
        for p in group:
            frozen = i < n_frozen and id(p) not in keep
            p.requires_grad_(not frozen)
            if frozen:
                p.grad = None  # a leftover grad would let AdamW update (and decay) a frozen parameter


def geometric_lrs(lr: float, mult: float, n_groups: int) -> list[float]:
    """Discriminative rates, input → head: a group ``d`` groups below the head trains at ``lr * mult**d``.

    Example:
        >>> geometric_lrs(0.1, 0.5, 3)
        [0.025, 0.05, 0.1]
    """
    return [lr * mult ** (n_groups - 1 - i) for i in range(n_groups)]


def reset_head(model: nn.Module) -> None:
    """Re-initialise every submodule of ``model.head`` that has ``reset_parameters`` (the Linear)."""
    head = getattr(model, "head", None)
    if not isinstance(head, nn.Module):
        raise TypeError(f"{type(model).__name__} has no `head` module to re-initialise")
    for module in head.modules():
        if callable(getattr(module, "reset_parameters", None)):
            module.reset_parameters()


# --------------------------------------------------------------------------- settings classes
def field_default(f: dataclasses.Field) -> Any:
    """The default of a dataclass field (``MISSING`` when it has none)."""
    return f.default_factory() if f.default_factory is not dataclasses.MISSING else f.default


def own_keys(settings: type[TransferConfig]) -> dict[str, Any]:
    """The keys a settings class adds to the shared :class:`TransferConfig`, with their defaults.

    Example:
        >>> own_keys(TransferConfig)
        {}
    """
    shared = {f.name for f in dataclasses.fields(TransferConfig)}
    return {f.name: field_default(f) for f in dataclasses.fields(settings) if f.name not in shared}


def as_settings(settings: type[TransferConfig], transfer: TransferConfig) -> TransferConfig:
    """``transfer`` as an instance of ``settings`` (a strategy's settings class): the shared keys are carried over,
    the strategy's own keys take their defaults, a key of another settings class must be at its default.

    Example:
        >>> as_settings(TransferConfig, TransferConfig(strategy="scratch")).strategy
        'scratch'
    """
    if type(transfer) is settings:
        return transfer
    mine = {f.name for f in dataclasses.fields(settings)}
    values = {}
    for f in dataclasses.fields(transfer):
        value = getattr(transfer, f.name)
        if f.name in mine:
            values[f.name] = value
        elif value != field_default(f):
            raise ConfigError(
                f"transfer.{f.name}={value!r} is not a setting of strategy '{transfer.strategy}' (it is one of "
                f"{type(transfer).__name__}); leave it out or pick the strategy it belongs to"
            )
    return settings(**values)


class Strategy:
    """Base strategy: every group trains at ``train.lr``; subclasses override :meth:`trainable_groups` and the
    behaviour methods below where they differ, and declare their own settings dataclass as ``Settings``.

    Example:
        >>> from medtransfer.transfer.strategies import build_strategy
        >>> s = build_strategy(TransferConfig(strategy="discriminative", lr_mult=0.5), TrainConfig(lr=0.1))
        >>> s.group_lrs(3)
        [0.025, 0.05, 0.1]
    """

    name: ClassVar[str] = ""
    # The strategy's settings: TransferConfig (the shared keys) or a frozen subclass with the strategy's own keys,
    # checked in its __post_init__ when the config loads. A key belongs to the strategies whose Settings declare it.
    Settings: ClassVar[type[TransferConfig]] = TransferConfig

    def __init__(self, transfer: TransferConfig, train: TrainConfig) -> None:
        # Every value was range-checked when the config was loaded; strategy defaults are valid by construction.
        self.transfer = as_settings(self.Settings, transfer)
        self.train = train
        # Checkpointed state: groups trainable now (counted from the head; None = not applied yet),
        # the last epoch applied, and whether the head was already re-initialised.
        self.n_trainable: int | None = None
        self.epoch: int = -1
        self.head_reset: bool = False
        self.total_steps: int | None = None  # set by plan()
        self.steps_per_epoch: int | None = None
        self.n_groups: int | None = None  # the model's layer groups, known from on_train_start / load_state_dict

    # ------------------------------------------------------------------ behaviour a strategy may change
    def default_lr_policy(self) -> str:
        """The LR policy when ``transfer.lr_policy`` is null. Cosine to 0 over the run: with a constant rate the
        validation score of a from-scratch ResNet-18 jumped by up to 17 px MAE between epochs on HC18, and the
        best epoch was a lucky one (docs/benchmarks.md, "Defaults against a plain loop")."""
        return "cosine"

    def keeps_norm_training(self) -> bool:
        """Whether the normalisation layers of frozen groups keep training (``transfer.train_bn``): fastai's
        freeze() keeps them training because the target's statistics differ from the source's, and a randomly
        initialised network with frozen BatchNorm in eval mode passes unnormalised activations up (measured:
        recipe from scratch at N=50, issue [2/6])."""
        return self.transfer.train_bn

    def freezes_bn_stats(self) -> bool:
        """Whether BatchNorm layers whose parameters are all frozen run in eval mode (statistics fixed). Romero et
        al. freeze parameters only: their frozen BatchNorms stay in train mode and keep adapting their statistics."""
        return True

    def unfreezes_by_step(self) -> bool:
        """Whether the strategy unfreezes by optimizer step (:meth:`trainable_at_step`) rather than by epoch
        (:meth:`trainable_groups`)."""
        return False

    def reinitialises_head(self) -> bool:
        """Whether :meth:`on_train_start` resets the head's parameters (the published recipes start a new head)."""
        return False

    def default(self, key: str) -> Any:
        """This strategy's default for a setting the config leaves null (:data:`SETTING_DEFAULTS`, or a strategy
        knob whose null means "the strategy's default")."""
        return SETTING_DEFAULTS.get(key)

    # ------------------------------------------------------------------ settings
    def setting(self, key: str) -> Any:
        """A setting from ``transfer`` or ``train``, or this strategy's default where the config leaves it null.

        Example:
            >>> from medtransfer.transfer.strategies import build_strategy
            >>> build_strategy(TransferConfig(strategy="romero"), TrainConfig()).setting("select_by")
            'loss'
        """
        section = self.transfer if hasattr(self.transfer, key) else self.train
        value = getattr(section, key)
        return self.default(key) if value is None else value

    def settings(self) -> dict[str, Any]:
        """Every resolved setting (what a run records next to its results): the shared ones and the strategy's own."""
        keys = [*SETTING_DEFAULTS, *own_keys(self.Settings)]
        return {"strategy": self.name, **{key: self.setting(key) for key in keys}}

    @property
    def lr_policy(self) -> str:
        """The configured learning-rate policy, or this strategy's default."""
        return self.transfer.lr_policy or self.default_lr_policy()

    def plan(self, total_steps: int, steps_per_epoch: int) -> None:
        """Tell the strategy how long training is (optimizer steps in all, and per epoch); call before
        :meth:`on_train_start`. Step-indexed strategies (romero, fastai) need it."""
        if total_steps < 1 or steps_per_epoch < 1:
            raise ValueError(f"need total_steps >= 1 and steps_per_epoch >= 1, got {total_steps}, {steps_per_epoch}")
        self.total_steps, self.steps_per_epoch = int(total_steps), int(steps_per_epoch)

    def optimizer_options(self) -> dict[str, Any]:
        """Keyword arguments for AdamW besides the parameter groups (weight decay, betas, eps)."""
        return {"weight_decay": float(self.setting("weight_decay"))}

    def schedule(self, n_groups: int) -> Callable[[int], tuple[list[float], float | None]] | None:
        """``step -> (one LR for each of the n_groups layer groups, Adam's β1 or None)`` for strategies with their own
        curve; ``None`` means the torch scheduler of :attr:`lr_policy`."""
        return None

    def _keep(self, model: nn.Module) -> set[int]:
        return norm_params(model) if self.keeps_norm_training() else set()

    # ------------------------------------------------------------------ what subclasses decide
    def trainable_groups(self, epoch: int, n_groups: int) -> int:
        """How many groups, counted from the head, train during ``epoch`` (0-based)."""
        return n_groups

    def trainable_at_step(self, step: int, n_groups: int) -> int:
        """Step-scheduled strategies (:meth:`unfreezes_by_step`): how many groups, counted from the head, train at
        optimizer step ``step`` (0-based, over the whole run)."""
        raise NotImplementedError(f"{self.name} unfreezes by epoch (trainable_groups)")

    def group_lrs(self, n_groups: int) -> list[float]:
        """Learning rate of each group, input → head; the head always gets ``train.lr``."""
        return [self.train.lr] * n_groups

    # ------------------------------------------------------------------ hooks
    def param_groups(self, model: nn.Module) -> list[dict[str, Any]]:
        """Optimizer parameter groups, one per layer group, frozen ones included.

        Example::

            optimizer = torch.optim.AdamW(strategy.param_groups(model), weight_decay=1e-4)
        """
        groups = layer_groups(model)
        lrs = self.group_lrs(len(groups))
        names = [f"group{i}" for i in range(len(groups) - 1)] + ["head"]
        return [
            {"params": g, "lr": lr, "name": n, "layer_group": i}
            for i, (g, lr, n) in enumerate(zip(groups, lrs, names, strict=True))
        ]

    def on_train_start(self, model: nn.Module) -> None:
        """Apply the initial (or restored) freezing; re-initialise the head if the strategy says so.

        Call once at the start of a fresh run, before or after building the optimizer (frozen parameters
        stay in it, and the head is reset in place). When resuming, :meth:`load_state_dict` replaces it.
        """
        groups = layer_groups(model)
        self.n_groups = len(groups)
        if self.n_trainable is None:
            first = (
                self.trainable_at_step(0, len(groups))
                if self.unfreezes_by_step()
                else self.trainable_groups(max(self.epoch, 0), len(groups))
            )
            self.n_trainable = min(len(groups), first)
        set_trainable(groups, self.n_trainable, self._keep(model))
        if self.reinitialises_head() and not self.head_reset:
            reset_head(model)
            self.head_reset = True

    def on_epoch_start(self, epoch: int, model: nn.Module, optimizer: Optimizer | None = None) -> None:
        """Unfreeze the groups due at ``epoch``; never re-freeze what is already unfrozen.

        ``optimizer`` (optional) is checked to hold every trainable parameter, so an unfrozen group
        cannot silently stay at its initial values.
        """
        groups = layer_groups(model)
        self.n_groups = len(groups)
        by_step = self.unfreezes_by_step()
        due = (self.n_trainable or 0) if by_step else min(len(groups), self.trainable_groups(epoch, len(groups)))
        n = max(due, self.n_trainable or 0)
        if n != self.n_trainable:
            log.info("epoch %d: %s trains the top %d of %d layer groups", epoch, self.name, n, len(groups))
        self.n_trainable, self.epoch = n, epoch
        set_trainable(groups, n, self._keep(model))
        if optimizer is not None:
            held = {id(p) for g in optimizer.param_groups for p in g["params"]}
            lost = [name for name, p in model.named_parameters() if p.requires_grad and id(p) not in held]
            if lost:
                raise ValueError(f"trainable parameters missing from the optimizer: {lost[:5]}")

    def on_step(self, step: int, model: nn.Module, optimizer: Optimizer | None = None) -> None:
        """Before optimizer step ``step`` (0-based, counted over the whole run): unfreeze what a step schedule
        has due, calling :meth:`on_unfreeze` when it does. Called every step, so it touches the model's layer
        groups only when something changes; a no-op for epoch-scheduled strategies."""
        if not self.unfreezes_by_step():
            return
        if self.n_groups is None:
            self.n_groups = len(layer_groups(model))
        due = self.trainable_at_step(step, self.n_groups)
        if due <= (self.n_trainable or 0):
            return
        groups = layer_groups(model)
        log.info("step %d: %s trains the top %d of %d layer groups", step, self.name, due, len(groups))
        self.n_trainable = min(due, len(groups))
        set_trainable(groups, self.n_trainable, self._keep(model))
        if model.training:
            self.set_train_mode(model)
        self.on_unfreeze(model, optimizer)

    def on_unfreeze(self, model: nn.Module, optimizer: Optimizer | None) -> None:
        """Called when a step schedule unfroze groups (fastai resets the optimizer state here)."""

    def set_train_mode(self, model: nn.Module) -> None:
        """Put BatchNorm layers whose parameters are all frozen in eval mode (:meth:`freezes_bn_stats`); call after
        ``model.train()``.

        Their running statistics then stay those of the source model (with ``train_bn`` they are trainable,
        so they stay in train mode and adapt to the target). A BatchNorm without parameters
        (``affine=False``) is left alone: nothing tells whether it belongs to a frozen part.
        """
        if not self.freezes_bn_stats():
            return
        for module in model.modules():
            params = list(module.parameters(recurse=False))
            if isinstance(module, _BatchNorm) and params and not any(p.requires_grad for p in params):
                module.eval()

    def state_dict(self) -> dict[str, Any]:
        """What a checkpoint needs so that a resumed run keeps the same groups unfrozen."""
        return {
            "name": self.name,
            "n_trainable": self.n_trainable,
            "epoch": self.epoch,
            "head_reset": self.head_reset,
        }

    def load_state_dict(self, state: dict[str, Any], model: nn.Module | None = None) -> None:
        """Restore a checkpointed state; with ``model``, also apply its freezing right away (otherwise
        :meth:`on_train_start` or the next :meth:`on_epoch_start` does)."""
        if state.get("name", self.name) != self.name:
            raise ValueError(f"checkpoint holds the state of strategy '{state['name']}', not '{self.name}'")
        self.n_trainable = state["n_trainable"]
        self.epoch = int(state["epoch"])
        self.head_reset = bool(state["head_reset"])
        if model is not None:
            groups = layer_groups(model)
            self.n_groups = len(groups)
            if self.n_trainable is not None:
                set_trainable(groups, self.n_trainable, self._keep(model))
