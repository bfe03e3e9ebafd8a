"""Transfer strategies: small objects with hooks that decide freezing and per-group learning rates.

The model supplies ``layer_groups() -> list[list[nn.Parameter]]`` ordered from input to output, the last
group being the head, and a ``head`` module. A strategy never indexes layers itself: it counts groups from
the head ("the top"). Frozen parameters get ``requires_grad_(False)`` but stay in the optimizer: with
``optimizer.zero_grad(set_to_none=True)`` their ``.grad`` stays ``None`` and AdamW skips them entirely
(no update, no weight decay), so the optimizer and the scheduler are built once and never rebuilt.

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
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any, ClassVar

from torch import nn
from torch.nn.modules.batchnorm import _BatchNorm
from torch.optim import Optimizer

from medtransfer.config import TrainConfig, TransferConfig
from medtransfer.errors import ConfigError
from medtransfer.registry import Registry

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


# The defaults of the settings a strategy may override (``Strategy.defaults``) when the config leaves them null.
SETTING_DEFAULTS: dict[str, Any] = {
    "lr_mult": 0.3,
    "weight_decay": 1e-4,
    "warmup_pct": 0.25,
    "div_factor": 25.0,
    "final_div_factor": 1e5,
    "select_by": "auc",
    "unfreeze_at": None,
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


class Strategy:
    """Base strategy: every group trains at ``train.lr``; subclasses override the class attributes and
    :meth:`trainable_groups`.

    Example:
        >>> from medtransfer.config import TrainConfig, TransferConfig
        >>> s = build_strategy(TransferConfig(strategy="discriminative", lr_mult=0.5), TrainConfig(lr=0.1))
        >>> s.group_lrs(3)
        [0.025, 0.05, 0.1]
    """

    name: ClassVar[str] = ""
    # cosine to 0 over the run: with a constant rate the validation score of a from-scratch ResNet-18 jumped by up to
    # 17 px MAE between epochs on HC18, and the best epoch was a lucky one (docs/benchmarks.md, "Defaults against a
    # plain loop")
    default_lr_policy: ClassVar[str] = "cosine"
    discriminative: ClassVar[bool] = False  # lr * lr_mult ** depth_from_top instead of one lr
    reinit_head: ClassVar[bool] = False  # reset the head's parameters in on_train_start
    # Whether transfer.train_bn applies: fastai's freeze() keeps normalisation layers training because the
    # target's statistics differ from the source's, and a randomly initialised network with frozen BatchNorm
    # in eval mode passes unnormalised activations up (measured: recipe from scratch at N=50, issue [2/6]).
    honours_train_bn: ClassVar[bool] = True
    # Whether BatchNorm layers whose parameters are all frozen run in eval mode (statistics fixed). Romero et al.
    # freeze parameters only: their frozen BatchNorms stay in train mode and keep adapting their statistics.
    frozen_bn_eval: ClassVar[bool] = True
    stepped: ClassVar[bool] = False  # unfreezes by optimizer step (trainable_at_step), not by epoch
    defaults: ClassVar[dict[str, Any]] = {}  # this strategy's own defaults for SETTING_DEFAULTS keys

    def __init__(self, transfer: TransferConfig, train: TrainConfig) -> None:
        # Every value was range-checked when the config was loaded; strategy defaults are valid by construction.
        self.transfer = transfer
        self.train = train
        # Checkpointed state: groups trainable now (counted from the head; None = not applied yet),
        # the last epoch applied, and whether the head was already re-initialised.
        self.n_trainable: int | None = None
        self.epoch: int = -1
        self.head_reset: bool = False
        self.total_steps: int | None = None  # set by plan()
        self.steps_per_epoch: int | None = None
        self.n_groups: int | None = None  # the model's layer groups, known from on_train_start / load_state_dict

    def setting(self, key: str) -> Any:
        """A setting from ``transfer`` or ``train``, or this strategy's default where the config leaves it null.

        Example:
            >>> from medtransfer.config import TrainConfig, TransferConfig
            >>> build_strategy(TransferConfig(strategy="romero"), TrainConfig()).setting("select_by")
            'loss'
        """
        section = self.transfer if hasattr(self.transfer, key) else self.train
        value = getattr(section, key)
        if value is not None:
            return value
        return self.defaults.get(key, SETTING_DEFAULTS[key])

    def settings(self) -> dict[str, Any]:
        """Every resolved setting (what a run records next to its results)."""
        return {"strategy": self.name, **{key: self.setting(key) for key in SETTING_DEFAULTS}}

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
        return norm_params(model) if self.transfer.train_bn and self.honours_train_bn else set()

    @property
    def lr_policy(self) -> str:
        """The configured learning-rate policy, or this strategy's default."""
        return self.transfer.lr_policy or self.default_lr_policy

    # ------------------------------------------------------------------ what subclasses decide
    def trainable_groups(self, epoch: int, n_groups: int) -> int:
        """How many groups, counted from the head, train during ``epoch`` (0-based)."""
        return n_groups

    def group_lrs(self, n_groups: int) -> list[float]:
        """Learning rate of each group, input → head; the head always gets ``train.lr``."""
        lr = self.train.lr
        if not self.discriminative:
            return [lr] * n_groups
        mult = self.setting("lr_mult")
        return [lr * mult ** (n_groups - 1 - i) for i in range(n_groups)]

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
                if self.stepped
                else self.trainable_groups(max(self.epoch, 0), len(groups))
            )
            self.n_trainable = min(len(groups), first)
        set_trainable(groups, self.n_trainable, self._keep(model))
        if self.reinit_head and not self.head_reset:
            reset_head(model)
            self.head_reset = True

    def on_epoch_start(self, epoch: int, model: nn.Module, optimizer: Optimizer | None = None) -> None:
        """Unfreeze the groups due at ``epoch``; never re-freeze what is already unfrozen.

        ``optimizer`` (optional) is checked to hold every trainable parameter, so an unfrozen group
        cannot silently stay at its initial values.
        """
        groups = layer_groups(model)
        self.n_groups = len(groups)
        due = (self.n_trainable or 0) if self.stepped else min(len(groups), self.trainable_groups(epoch, len(groups)))
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

    def trainable_at_step(self, step: int, n_groups: int) -> int:
        """Step-scheduled strategies (``stepped``): how many groups, counted from the head, train at optimizer step
        ``step`` (0-based, over the whole run)."""
        raise NotImplementedError(f"{self.name} unfreezes by epoch (trainable_groups)")

    def on_step(self, step: int, model: nn.Module, optimizer: Optimizer | None = None) -> None:
        """Before optimizer step ``step`` (0-based, counted over the whole run): unfreeze what a step schedule
        has due, calling :meth:`on_unfreeze` when it does. Called every step, so it touches the model's layer
        groups only when something changes; a no-op for epoch-scheduled strategies."""
        if not self.stepped:
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
        """Put BatchNorm layers whose parameters are all frozen in eval mode; call after ``model.train()``.

        Their running statistics then stay those of the source model (with ``train_bn`` they are trainable,
        so they stay in train mode and adapt to the target). A BatchNorm without parameters
        (``affine=False``) is left alone: nothing tells whether it belongs to a frozen part.
        """
        if not self.frozen_bn_eval:
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


def reset_head(model: nn.Module) -> None:
    """Re-initialise every submodule of ``model.head`` that has ``reset_parameters`` (the Linear)."""
    head = getattr(model, "head", None)
    if not isinstance(head, nn.Module):
        raise TypeError(f"{type(model).__name__} has no `head` module to re-initialise")
    for module in head.modules():
        if callable(getattr(module, "reset_parameters", None)):
            module.reset_parameters()


STRATEGIES: Registry[type[Strategy]] = Registry("strategy")


def _register(cls: type[Strategy]) -> type[Strategy]:
    STRATEGIES.register(cls.name, cls)
    return cls


def build_strategy(transfer: TransferConfig, train: TrainConfig) -> Strategy:
    """The strategy named by ``transfer.strategy``; unknown names raise with close matches.

    Example:
        >>> build_strategy(TransferConfig(strategy="fastai"), TrainConfig()).name
        'fastai'
    """
    return STRATEGIES.get(transfer.strategy)(transfer, train)


@_register
class Scratch(Strategy):
    """Everything trains at one learning rate; meant for a randomly initialised model."""

    name = "scratch"


@_register
class LinearProbe(Strategy):
    """Only the head trains; the backbone is frozen and its BatchNorm statistics stay fixed."""

    name = "linear_probe"
    honours_train_bn = False

    def trainable_groups(self, epoch: int, n_groups: int) -> int:
        return 1


@_register
class FineTune(Strategy):
    """Everything trains at one learning rate, starting from transferred weights."""

    name = "finetune"


@_register
class Discriminative(Strategy):
    """Everything trains; the learning rate shrinks by ``lr_mult`` per group toward the input."""

    name = "discriminative"
    discriminative = True


@_register
class GradualUnfreeze(Strategy):
    """The head alone for ``head_epochs`` epochs, then one more group from the top every ``unfreeze_every``
    epochs, or one more at each epoch listed in ``unfreeze_schedule`` (a repeated epoch unfreezes several).

    Example:
        >>> s = build_strategy(TransferConfig(strategy="gradual_unfreeze", head_epochs=1), TrainConfig())
        >>> [s.trainable_groups(e, 4) for e in range(5)]
        [1, 2, 3, 4, 4]
    """

    name = "gradual_unfreeze"

    def trainable_groups(self, epoch: int, n_groups: int) -> int:
        schedule = self.transfer.unfreeze_schedule
        if schedule is not None:
            unfrozen = sum(1 for e in schedule if e <= epoch)
        elif epoch < self.transfer.head_epochs:
            unfrozen = 0
        else:
            unfrozen = (epoch - self.transfer.head_epochs) // self.transfer.unfreeze_every + 1
        return min(n_groups, 1 + unfrozen)


@_register
class DecoderFinetune(Strategy):
    """Segmentation (Humpire-Mamani et al. 2023): the encoder stays frozen, decoder and head train; with
    ``transfer.unfreeze_encoder_at`` the encoder joins at that epoch. The model says how many of its layer groups
    (from the input) form the encoder through ``encoder_groups``."""

    name = "decoder_finetune"
    honours_train_bn = False  # "encoder frozen" means all of it, its normalisation layers included

    def on_train_start(self, model: nn.Module) -> None:
        self.encoder_groups = _encoder_groups(model)
        super().on_train_start(model)

    def on_epoch_start(self, epoch: int, model: nn.Module, optimizer: Optimizer | None = None) -> None:
        self.encoder_groups = _encoder_groups(model)
        super().on_epoch_start(epoch, model, optimizer)

    def load_state_dict(self, state: dict[str, Any], model: nn.Module | None = None) -> None:
        if model is not None:
            self.encoder_groups = _encoder_groups(model)
        super().load_state_dict(state, model)

    def trainable_groups(self, epoch: int, n_groups: int) -> int:
        at = self.transfer.unfreeze_encoder_at
        if at is not None and epoch >= at:
            return n_groups
        return n_groups - getattr(self, "encoder_groups", 0)


def _encoder_groups(model: nn.Module) -> int:
    n = getattr(model, "encoder_groups", None)
    if not isinstance(n, int) or n < 1:
        raise ConfigError(
            f"transfer.strategy=decoder_finetune needs an encoder-decoder network; {type(model).__name__} does not "
            "say which layer groups form its encoder (use a segmentation network)"
        )
    return n


# The published recipes live in modules of their own and register themselves on import (after everything above
# exists, which they import).
from medtransfer.transfer import fastai, romero  # noqa: E402, F401

# `recipe` names the published recipe that won our PneumoniaMNIST study (docs/results/pneumonia/notes.md); it is an
# alias, never a schedule of its own.
RECIPE = "romero"
STRATEGIES.register("recipe", STRATEGIES.get(RECIPE))
