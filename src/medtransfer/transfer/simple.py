"""The strategies that unfreeze by epoch: ``scratch``, ``linear_probe``, ``finetune``, ``discriminative``,
``gradual_unfreeze`` and, for segmentation, ``decoder_finetune``; registered on import (the registry imports this
module on its first lookup)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from torch import nn
from torch.optim import Optimizer

from medtransfer.config import TrainConfig, TransferConfig, at_least, bad_value  # noqa: F401 - the docstring example
from medtransfer.errors import ConfigError
from medtransfer.transfer.base import Strategy, geometric_lrs
from medtransfer.transfer.strategies import register_strategy


@register_strategy
class Scratch(Strategy):
    """Everything trains at one learning rate; meant for a randomly initialised model."""

    name = "scratch"


@register_strategy
class LinearProbe(Strategy):
    """Only the head trains; the backbone is frozen and its BatchNorm statistics stay fixed."""

    name = "linear_probe"

    def keeps_norm_training(self) -> bool:
        return False  # a probe of frozen features: transfer.train_bn does not apply

    def trainable_groups(self, epoch: int, n_groups: int) -> int:
        return 1


@register_strategy
class FineTune(Strategy):
    """Everything trains at one learning rate, starting from transferred weights."""

    name = "finetune"


@register_strategy
class Discriminative(Strategy):
    """Everything trains; the learning rate shrinks by ``lr_mult`` per group toward the input."""

    name = "discriminative"

    def group_lrs(self, n_groups: int) -> list[float]:
        return geometric_lrs(self.train.lr, self.setting("lr_mult"), n_groups)


@dataclass(frozen=True)
class GradualUnfreezeSettings(TransferConfig):
    """``gradual_unfreeze``'s keys (docs/config.md)."""

    strategy: str = "gradual_unfreeze"
    unfreeze_every: int = 1  # one more group every k epochs
    unfreeze_schedule: list[int] | None = None  # explicit epochs at which the next group unfreezes
    head_epochs: int = 1  # epochs with only the head training before unfreezing starts

    def __post_init__(self) -> None:
        super().__post_init__()
        at_least("transfer", self, 1, "unfreeze_every")
        at_least("transfer", self, 0, "head_epochs")
        if any(e < 0 for e in self.unfreeze_schedule or []):
            raise bad_value("transfer.unfreeze_schedule", self.unfreeze_schedule, "a list of epochs >= 0")


@register_strategy
class GradualUnfreeze(Strategy):
    """The head alone for ``head_epochs`` epochs, then one more group from the top every ``unfreeze_every``
    epochs, or one more at each epoch listed in ``unfreeze_schedule`` (a repeated epoch unfreezes several).

    Example:
        >>> s = GradualUnfreeze(GradualUnfreezeSettings(head_epochs=1), TrainConfig())
        >>> [s.trainable_groups(e, 4) for e in range(5)]
        [1, 2, 3, 4, 4]
    """

    name = "gradual_unfreeze"
    Settings = GradualUnfreezeSettings

    def trainable_groups(self, epoch: int, n_groups: int) -> int:
        schedule = self.transfer.unfreeze_schedule
        if schedule is not None:
            unfrozen = sum(1 for e in schedule if e <= epoch)
        elif epoch < self.transfer.head_epochs:
            unfrozen = 0
        else:
            unfrozen = (epoch - self.transfer.head_epochs) // self.transfer.unfreeze_every + 1
        return min(n_groups, 1 + unfrozen)


@dataclass(frozen=True)
class DecoderFinetuneSettings(TransferConfig):
    """``decoder_finetune``'s key (docs/config.md)."""

    strategy: str = "decoder_finetune"
    unfreeze_encoder_at: int | None = None  # epoch at which the encoder joins (None = never)

    def __post_init__(self) -> None:
        super().__post_init__()
        at_least("transfer", self, 0, "unfreeze_encoder_at", optional=True)


@register_strategy
class DecoderFinetune(Strategy):
    """Segmentation (Humpire-Mamani et al. 2023): the encoder stays frozen, decoder and head train; with
    ``transfer.unfreeze_encoder_at`` the encoder joins at that epoch. The model says how many of its layer groups
    (from the input) form the encoder through ``encoder_groups``."""

    name = "decoder_finetune"
    Settings = DecoderFinetuneSettings

    def keeps_norm_training(self) -> bool:
        return False  # "encoder frozen" means all of it, its normalisation layers included

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
