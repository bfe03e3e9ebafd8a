"""Strategy ``fastai``: ``Learner.fine_tune`` as fastai runs it.

From ``fastai/callback/schedule.py`` (``fine_tune``, ``fit_one_cycle``), ``fastai/optimizer.py`` and
``fastai/vision/learner.py``:

* **phase 1** (``transfer.freeze_epochs``, default 1): the body frozen except its norm layers (``train_bn``);
  ``fit_one_cycle(freeze_epochs, slice(lr), pct_start=0.99)``: group rates ``[lr/10, …, lr/10, lr]``, div 25,
  div_final 1e5;
* **phase 2** (the other ``train.epochs - freeze_epochs``): ``lr /= 2``, unfreeze, the optimizer state is reset
  (``freeze_to`` clears it), and a *new* ``fit_one_cycle(epochs, slice(lr/lr_div, lr), pct_start=0.3, div=5)``:
  rates spread geometrically over the groups (``even_mults``), ``transfer.lr_div`` 100, div_final 1e5;
* both cycles: the LR curve ``combined_cos`` (:mod:`medtransfer.transfer.cycles`), Adam's β1 cycled
  0.95 → 0.85 → 0.95, β2 0.99, eps 1e-5, decoupled weight decay 0.01 and none on norm-layer and bias parameters
  (``wd_bn_bias=False``); a new head.

``train.lr`` is ``base_lr`` (fastai's default 2e-3); ``train.warmup_pct``, ``train.div_factor`` and
``train.final_div_factor`` shape phase 2; phase 1 keeps fastai's fixed ``pct_start=0.99`` and ``div=25``.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from torch import nn
from torch.optim import Optimizer

from medtransfer.config import TrainConfig, TransferConfig, at_least
from medtransfer.errors import ConfigError
from medtransfer.transfer.base import Strategy, norm_params
from medtransfer.transfer.cycles import combined_cos, slice_lrs
from medtransfer.transfer.strategies import register_strategy

PHASE1_PCT, PHASE1_DIV = 0.99, 25.0  # fine_tune's first fit_one_cycle: pct_start=0.99, fit_one_cycle's div
MOMS = (0.95, 0.85, 0.95)  # fastai's default moms: Adam's beta1 over a cycle
BETA2, EPS = 0.99, 1e-5  # fastai's Adam: sqr_mom, eps
# fine_tune's settings, the defaults of the shared keys that the config leaves null (phase 2 for the cycle's shape).
DEFAULTS: dict[str, Any] = {"weight_decay": 0.01, "warmup_pct": 0.3, "div_factor": 5.0, "final_div_factor": 1e5}


@dataclass(frozen=True)
class FastAISettings(TransferConfig):
    """``fastai``'s keys (docs/config.md)."""

    strategy: str = "fastai"
    freeze_epochs: int = 1  # epochs of the frozen first phase (head and norm layers only)
    lr_div: float = 100.0  # phase-2 rates slice(lr / 2 / lr_div, lr / 2) spread over the groups

    def __post_init__(self) -> None:
        super().__post_init__()
        at_least("transfer", self, 0, "freeze_epochs")
        at_least("transfer", self, 1, "lr_div")


@register_strategy
class FastAI(Strategy):
    """fastai's ``fine_tune``: a frozen one-cycle for the head, then everything with a second one-cycle.

    Example:
        >>> s = FastAI(FastAISettings(), TrainConfig(lr=2e-3, epochs=3))
        >>> s.plan(30, 10)
        >>> [s.trainable_at_step(k, 3) for k in (0, 9, 10, 29)]
        [1, 1, 3, 3]
        >>> [round(v, 9) for v in s.schedule(3)(10)[0]]  # phase 2 starts at lr/2/div: slice(1e-5, 1e-3) / 5
        [2e-06, 2e-05, 0.0002]
    """

    name = "fastai"
    Settings = FastAISettings

    def __init__(self, transfer: TransferConfig, train: TrainConfig) -> None:
        super().__init__(transfer, train)
        if self.transfer.freeze_epochs >= train.epochs:  # each value is checked at load; this pair only here
            raise ConfigError(
                f"transfer.freeze_epochs={self.transfer.freeze_epochs} leaves no epoch to fine-tune: train.epochs "
                f"({train.epochs}) counts both phases, so it must be larger"
            )

    def default_lr_policy(self) -> str:
        return "fastai"

    def unfreezes_by_step(self) -> bool:
        return True

    def reinitialises_head(self) -> bool:
        return True

    def default(self, key: str) -> Any:
        return DEFAULTS[key] if key in DEFAULTS else super().default(key)

    @property
    def phase1_steps(self) -> int:
        if self.steps_per_epoch is None:
            raise RuntimeError("call plan(total_steps, steps_per_epoch) before training with fastai")
        return self.transfer.freeze_epochs * self.steps_per_epoch

    def optimizer_options(self) -> dict[str, Any]:
        return {"weight_decay": float(self.setting("weight_decay")), "betas": (MOMS[0], BETA2), "eps": EPS}

    def param_groups(self, model: nn.Module) -> list[dict[str, Any]]:
        """Two optimizer groups per layer group: with weight decay, and without (norm-layer and bias parameters)."""
        no_decay = norm_params(model) | {id(p) for n, p in model.named_parameters() if n.endswith("bias")}
        out = []
        for group in super().param_groups(model):
            decay = [p for p in group["params"] if id(p) not in no_decay]
            rest = [p for p in group["params"] if id(p) in no_decay]
            if decay:
                out.append({**group, "params": decay})
            if rest:
                out.append({**group, "params": rest, "name": group["name"] + "_no_wd", "weight_decay": 0.0})
        return out

    def trainable_at_step(self, step: int, n_groups: int) -> int:
        return 1 if step < self.phase1_steps else n_groups

    def on_unfreeze(self, model: nn.Module, optimizer: Optimizer | None) -> None:
        if optimizer is not None:
            optimizer.state.clear()  # fastai's freeze_to -> opt.clear_state(): phase 2 starts with zero moments

    def schedule(self, n_groups: int) -> Callable[[int], tuple[list[float], float | None]]:
        p1 = self.phase1_steps
        p2 = self.total_steps - p1
        lr = self.train.lr
        head = slice_lrs(None, lr, n_groups)
        body = slice_lrs(lr / 2 / self.transfer.lr_div, lr / 2, n_groups)
        pct, div, div_final = self.setting("warmup_pct"), self.setting("div_factor"), self.setting("final_div_factor")

        def at(step: int) -> tuple[list[float], float]:
            if step < p1:
                pos, top, phase = step / p1, head, (PHASE1_PCT, PHASE1_DIV, 1e5)
            else:
                pos, top, phase = min(step - p1, p2 - 1) / p2, body, (pct, div, div_final)
            c, d, f = phase
            return [combined_cos(pos, c, m / d, m, m / f) for m in top], combined_cos(pos, c, *MOMS)

        return at
