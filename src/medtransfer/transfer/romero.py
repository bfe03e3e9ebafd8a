"""Strategy ``romero``: the schedule of Romero et al. (Med Phys 2020) as their code runs it.

From ``r0mer0m/DL-Medical-Images`` (``architectures.py``, ``train_functions.py``, ``transfer_learning_methods``):

* three layer groups (DenseNet-121 ``features[:7] | features[7:] | new Linear head``; see ``models.backbones``);
* Adam, weight decay 0, β1 0.9 (their momentum schedule is written to a key Adam ignores);
* **one** one-cycle over all iterations (:func:`~medtransfer.transfer.cycles.romero_one_cycle`): cosine warm-up over
  the first 30 % from lr/25 to lr, cosine anneal to (lr/25)·1e-4;
* discriminative rates ``[lr/9, lr/3, lr]`` (``alpha = 1/3``; ``transfer.lr_mult``);
* gradual unfreezing by **fraction of all iterations** (``transfer.unfreeze_at``, top first): the middle group at
  10 %, the bottom group at 20 %, so everything trains before the LR peaks;
* frozen groups freeze their parameters (norm layers included) but their BatchNorms stay in train mode;
* the checkpoint with the best validation *loss* (``train.select_by``); a new head.

Their balanced training sets (``train.balance``), 4x test-time augmentation (``eval.tta: 3``) and dropout 0
(``model.dropout``) are options of the run, not of the strategy.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from medtransfer.config import TrainConfig, TransferConfig, bad_value  # noqa: F401 - TrainConfig: the docstring example
from medtransfer.errors import ConfigError
from medtransfer.transfer.base import Strategy, geometric_lrs
from medtransfer.transfer.cycles import romero_one_cycle
from medtransfer.transfer.strategies import register_strategy

DELTA = 1e-4  # the anneal ends at (lr / div) * DELTA; train.final_div_factor = 1 / DELTA
# Their settings, the defaults of the shared keys (and of unfreeze_at) that the config leaves null.
DEFAULTS: dict[str, Any] = {
    "lr_mult": 1 / 3,
    "weight_decay": 0.0,
    "warmup_pct": 0.3,
    "div_factor": 25.0,
    "final_div_factor": 1 / DELTA,
    "select_by": "loss",
    "unfreeze_at": [0.1, 0.2],
}


@dataclass(frozen=True)
class RomeroSettings(TransferConfig):
    """``romero``'s key (docs/config.md)."""

    strategy: str = "romero"
    # fractions of all steps at which the groups below the head unfreeze, top first; None = [0.1, 0.2]
    unfreeze_at: list[float] | None = None

    def __post_init__(self) -> None:
        super().__post_init__()
        at = self.unfreeze_at
        if at is not None and (
            not at or any(not 0 <= f <= 1 for f in at) or any(b < a for a, b in zip(at, at[1:], strict=False))
        ):
            raise bad_value("transfer.unfreeze_at", at, "fractions in [0, 1] in increasing order (top group first)")


@register_strategy
class Romero(Strategy):
    """Romero et al.'s gradual unfreezing under one one-cycle, unfreezing by fraction of all iterations.

    Example:
        >>> s = Romero(RomeroSettings(), TrainConfig(lr=1e-3))
        >>> s.plan(100, 10)
        >>> [s.trainable_at_step(k, 3) for k in (0, 9, 10, 19, 20, 99)]
        [1, 1, 2, 2, 3, 3]
        >>> [round(lr, 9) for lr in s.schedule(3)(30)[0]]  # the peak, at 30 % of the steps
        [0.000111111, 0.000333333, 0.001]
    """

    name = "romero"
    Settings = RomeroSettings

    def default_lr_policy(self) -> str:
        return "romero"

    def keeps_norm_training(self) -> bool:
        return False  # frozen groups freeze their norm layers' parameters too

    def freezes_bn_stats(self) -> bool:
        return False  # ... but their BatchNorms stay in train mode: the statistics keep adapting

    def unfreezes_by_step(self) -> bool:
        return True

    def reinitialises_head(self) -> bool:
        return True

    def default(self, key: str) -> Any:
        return DEFAULTS[key] if key in DEFAULTS else super().default(key)

    def group_lrs(self, n_groups: int) -> list[float]:
        return geometric_lrs(self.train.lr, self.setting("lr_mult"), n_groups)

    def optimizer_options(self) -> dict[str, Any]:
        return {"weight_decay": float(self.setting("weight_decay")), "betas": (0.9, 0.999), "eps": 1e-8}

    def trainable_at_step(self, step: int, n_groups: int) -> int:
        at = self.setting("unfreeze_at")
        if len(at) != n_groups - 1:
            raise ConfigError(
                f"transfer.unfreeze_at has {len(at)} fraction(s) but the model has {n_groups} layer groups: give one "
                f"per group below the head ({n_groups - 1})"
            )
        total = self._total()
        return 1 + sum(1 for f in at if step >= int(total * f))

    def schedule(self, n_groups: int) -> Callable[[int], tuple[list[float], float | None]]:
        total = self._total()
        pct, div = self.setting("warmup_pct"), self.setting("div_factor")
        delta = 1.0 / self.setting("final_div_factor")
        mult = self.setting("lr_mult")

        def at(step: int) -> tuple[list[float], None]:
            lr = romero_one_cycle(min(step, total - 1), total, self.train.lr, pct, div, delta)
            return [lr * mult**depth for depth in range(n_groups - 1, -1, -1)], None

        return at

    def _total(self) -> int:
        if self.total_steps is None:
            raise RuntimeError("call plan(total_steps, steps_per_epoch) before training with romero")
        return self.total_steps
