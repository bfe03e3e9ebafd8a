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
from typing import Any, ClassVar

from medtransfer.config import TrainConfig, TransferConfig  # noqa: F401 - the docstring example
from medtransfer.errors import ConfigError
from medtransfer.transfer.cycles import romero_one_cycle
from medtransfer.transfer.strategies import Strategy, _register

DELTA = 1e-4  # the anneal ends at (lr / div) * DELTA; train.final_div_factor = 1 / DELTA


@_register
class Romero(Strategy):
    """Romero et al.'s gradual unfreezing under one one-cycle, unfreezing by fraction of all iterations.

    Example:
        >>> s = Romero(TransferConfig(strategy="romero"), TrainConfig(lr=1e-3))
        >>> s.plan(100, 10)
        >>> [s.trainable_at_step(k, 3) for k in (0, 9, 10, 19, 20, 99)]
        [1, 1, 2, 2, 3, 3]
        >>> [round(lr, 9) for lr in s.schedule(3)(30)[0]]  # the peak, at 30 % of the steps
        [0.000111111, 0.000333333, 0.001]
    """

    name = "romero"
    default_lr_policy = "romero"
    discriminative = True
    reinit_head = True
    honours_train_bn = False
    frozen_bn_eval = False
    stepped = True
    defaults: ClassVar[dict[str, Any]] = {
        "lr_mult": 1 / 3,
        "weight_decay": 0.0,
        "warmup_pct": 0.3,
        "div_factor": 25.0,
        "final_div_factor": 1 / DELTA,
        "select_by": "loss",
        "unfreeze_at": [0.1, 0.2],
    }

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
