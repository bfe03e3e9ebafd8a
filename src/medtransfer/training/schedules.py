"""Learning-rate policies, each a torch scheduler stepped once per optimizer step.

The peak (or constant) learning rate of each parameter group is the ``lr`` the strategy put in its
parameter groups, so discriminative rates carry through every policy. Build the scheduler once, on a
freshly built optimizer; when resuming, load its ``state_dict`` afterwards.

=============  ==========================================================================================
``one_cycle``  :class:`torch.optim.lr_scheduler.OneCycleLR`: cosine warm-up from lr/div_factor to lr over
               ``warmup_pct`` of the steps, cosine down to lr/(div_factor*final_div_factor); AdamW's beta1
               cycles 0.95 → 0.85 → 0.95 (fastai's ``fit_one_cycle``)
``constant``   the group learning rates, unchanged
``cosine``     :class:`~torch.optim.lr_scheduler.CosineAnnealingLR` from lr to 0 over all steps
``step``       :class:`~torch.optim.lr_scheduler.StepLR`: × ``gamma`` every ``step_size`` epochs
=============  ==========================================================================================
"""

from __future__ import annotations

from collections.abc import Callable

from torch.optim import Optimizer
from torch.optim import lr_scheduler as sched

from medtransfer.config import TrainConfig
from medtransfer.registry import Registry

SchedulerFactory = Callable[[Optimizer, int, int, TrainConfig], sched.LRScheduler]

LR_POLICIES: Registry[SchedulerFactory] = Registry("lr policy")

BASE_MOMENTUM, MAX_MOMENTUM = 0.85, 0.95  # fastai's moms=(0.95, 0.85, 0.95)


def build_scheduler(
    policy: str, optimizer: Optimizer, total_steps: int, steps_per_epoch: int, train_cfg: TrainConfig
) -> sched.LRScheduler:
    """The scheduler for ``policy``; call ``scheduler.step()`` after every ``optimizer.step()``.

    Example::

        optimizer = torch.optim.AdamW(strategy.param_groups(model), weight_decay=cfg.weight_decay)
        scheduler = build_scheduler(strategy.lr_policy, optimizer, cfg.epochs * len(loader), len(loader), cfg)
    """
    if total_steps < 1 or steps_per_epoch < 1:
        raise ValueError(f"need total_steps >= 1 and steps_per_epoch >= 1, got {total_steps}, {steps_per_epoch}")
    return LR_POLICIES.get(policy)(optimizer, int(total_steps), int(steps_per_epoch), train_cfg)


@LR_POLICIES.register("one_cycle")
def one_cycle(optimizer: Optimizer, total_steps: int, steps_per_epoch: int, cfg: TrainConfig) -> sched.LRScheduler:
    pct_start = float(_or(cfg.warmup_pct, 0.25))
    # torch peaks at step pct_start*total_steps - 1 and divides by zero when that is step 0 (e.g. 4 steps
    # at 0.25, common for N=50 with one batch per epoch); peak just before step 1 instead, as fastai does.
    if float(pct_start * total_steps) - 1 == 0:
        pct_start = min(1.0, (2 - 1e-6) / total_steps)
        if float(pct_start * total_steps) - 1 == 0:
            raise ValueError("one_cycle needs at least 2 optimizer steps")
    cycle_momentum = "betas" in optimizer.defaults or optimizer.defaults.get("momentum", 0) > 0
    return sched.OneCycleLR(
        optimizer,
        max_lr=[g["lr"] for g in optimizer.param_groups],
        total_steps=total_steps,
        pct_start=pct_start,
        anneal_strategy="cos",
        cycle_momentum=cycle_momentum,
        base_momentum=BASE_MOMENTUM,
        max_momentum=MAX_MOMENTUM,
        div_factor=_or(cfg.div_factor, 25.0),
        final_div_factor=_or(cfg.final_div_factor, 1e5),
    )


def _or(value, default):
    """A config value, or the policy's default where it is left ``null`` (the strategy's default)."""
    return default if value is None else value


def _one(_: int) -> float:
    return 1.0


@LR_POLICIES.register("constant")
def constant(optimizer: Optimizer, total_steps: int, steps_per_epoch: int, cfg: TrainConfig) -> sched.LRScheduler:
    return sched.LambdaLR(optimizer, _one)


@LR_POLICIES.register("cosine")
def cosine(optimizer: Optimizer, total_steps: int, steps_per_epoch: int, cfg: TrainConfig) -> sched.LRScheduler:
    return sched.CosineAnnealingLR(optimizer, T_max=total_steps)


@LR_POLICIES.register("step")
def step(optimizer: Optimizer, total_steps: int, steps_per_epoch: int, cfg: TrainConfig) -> sched.LRScheduler:
    if cfg.step_size < 1:
        raise ValueError(f"train.step_size must be >= 1 epoch, got {cfg.step_size}")
    return sched.StepLR(optimizer, step_size=cfg.step_size * steps_per_epoch, gamma=cfg.gamma)


class StepSchedule:
    """A scheduler that sets every parameter group's learning rate (and Adam's β1) from ``fn(step)``.

    ``fn(step)`` returns ``(lrs, beta1)``: one rate per *layer group* (a parameter group's ``"layer_group"`` key says
    which; groups without it use their own index) and β1 for every group, or ``None`` to leave β1 alone. Like a
    torch scheduler: the values of step 0 are set on construction and ``step()`` moves to the next optimizer step;
    ``state_dict()`` holds the step, so a resumed run continues the same curve.

    Example:
        >>> import torch
        >>> opt = torch.optim.AdamW([torch.nn.Parameter(torch.zeros(1))])
        >>> s = StepSchedule(opt, lambda k: ([0.1 * (k + 1)], None))
        >>> s.step(); round(opt.param_groups[0]["lr"], 6)
        0.2
    """

    def __init__(self, optimizer: Optimizer, fn: Callable[[int], tuple[list[float], float | None]]) -> None:
        self.optimizer, self.fn, self.last_epoch = optimizer, fn, 0
        self._apply()

    def _apply(self) -> None:
        lrs, beta1 = self.fn(self.last_epoch)
        for i, group in enumerate(self.optimizer.param_groups):
            group["lr"] = float(lrs[group.get("layer_group", i)])
            if beta1 is not None and "betas" in group:
                group["betas"] = (float(beta1), group["betas"][1])

    def step(self) -> None:
        self.last_epoch += 1
        self._apply()

    def get_last_lr(self) -> list[float]:
        return [g["lr"] for g in self.optimizer.param_groups]

    def state_dict(self) -> dict:
        return {"last_epoch": self.last_epoch}

    def load_state_dict(self, state: dict) -> None:
        self.last_epoch = int(state["last_epoch"])
        self._apply()
