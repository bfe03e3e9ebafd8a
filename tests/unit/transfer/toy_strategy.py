"""A strategy with a key of its own, in one module: all that adding a strategy takes (test_settings.py imports it
afresh and removes its registration afterwards)."""

from __future__ import annotations

from dataclasses import dataclass

from medtransfer.config import TransferConfig, at_least
from medtransfer.transfer.base import Strategy
from medtransfer.transfer.strategies import register_strategy


@dataclass(frozen=True)
class ToySettings(TransferConfig):
    strategy: str = "toy"
    my_knob: int = 2  # layer groups, counted from the head, that train

    def __post_init__(self) -> None:
        super().__post_init__()
        at_least("transfer", self, 1, "my_knob")  # checked when the config loads


@register_strategy
class Toy(Strategy):
    """Trains the top ``transfer.my_knob`` layer groups, their BatchNorm statistics included."""

    name = "toy"
    Settings = ToySettings

    def freezes_bn_stats(self) -> bool:
        return False

    def trainable_groups(self, epoch: int, n_groups: int) -> int:
        return min(n_groups, self.transfer.my_knob)
