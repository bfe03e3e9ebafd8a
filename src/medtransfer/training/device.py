"""Device set-up around the loop: micro-batch size, cuDNN autotuning, the optimizer, ``torch.compile``.

Kept apart from ``loop.py`` so that the loop itself stays short enough to read in one sitting.
"""

from __future__ import annotations

import contextlib
import logging
import shutil
from collections.abc import Iterator

import torch

from medtransfer.config import TrainConfig
from medtransfer.training.schedules import StepSchedule, build_scheduler

log = logging.getLogger(__name__)


@contextlib.contextmanager
def cudnn_autotune(enabled: bool) -> Iterator[None]:
    """Let cuDNN pick the fastest convolution algorithms while training (batches have one fixed shape), and
    restore the previous setting afterwards: a process-wide flag must not outlive the loop that wants it."""
    previous = torch.backends.cudnn.benchmark
    torch.backends.cudnn.benchmark = previous or enabled
    try:
        yield
    finally:
        torch.backends.cudnn.benchmark = previous


def make_optimizer(param_groups, cfg: TrainConfig, device: torch.device, **options) -> torch.optim.AdamW:
    """AdamW over the strategy's parameter groups; the fused kernel (one launch for all parameters) on CUDA and CPU.

    Example:
        >>> opt = make_optimizer(torch.nn.Linear(2, 1).parameters(), TrainConfig(), torch.device("cpu"))
        >>> type(opt).__name__
        'AdamW'
    """
    # The fused kernel exists for CUDA and CPU; on a CPU it is 5-7x faster than the default per-tensor loop for
    # ResNet-18 (benchmarks/optimizer_step.py; numbers in docs/benchmarks.md), a fifth of a small-image step.
    fused = {"fused": True} if device.type in ("cuda", "cpu") else {}
    options.setdefault("weight_decay", 1e-4 if cfg.weight_decay is None else cfg.weight_decay)
    return torch.optim.AdamW(param_groups, lr=cfg.lr, **options, **fused)


def optimizer_and_scheduler(
    strategy, model: torch.nn.Module, cfg: TrainConfig, device, total_steps: int, steps_per_epoch: int
):
    """The optimizer and scheduler a strategy asks for, for ``total_steps`` optimizer steps (classification and
    segmentation runs share it): AdamW over ``strategy.param_groups`` with ``strategy.optimizer_options()``, then
    the strategy's own step schedule (romero, fastai) or the torch scheduler of its ``lr_policy``.

    Example::

        optimizer, scheduler = optimizer_and_scheduler(strategy, model, cfg.train, device, epochs * len(b), len(b))
    """

    strategy.plan(total_steps, steps_per_epoch)
    optimizer = make_optimizer(strategy.param_groups(model), cfg, device, **strategy.optimizer_options())
    groups = {g["layer_group"] for g in optimizer.param_groups}
    schedule = strategy.schedule(len(groups))
    if schedule is not None:
        return optimizer, StepSchedule(optimizer, schedule)
    return optimizer, build_scheduler(strategy.lr_policy, optimizer, total_steps, steps_per_epoch, cfg)


def maybe_compile(model: torch.nn.Module, device: torch.device) -> bool:
    """``torch.compile`` the model's forward in place where that can work; returns whether it did.

    In place (``nn.Module.compile``) keeps parameter identity and ``state_dict`` keys, so strategies,
    checkpoints and weight files are unaffected. Skipped with a warning when TorchDynamo is unsupported, when a
    CUDA model has no Triton, or when a CPU model has no C++ compiler. Each change of the trainable set (gradual
    unfreezing) or of train/eval mode compiles the forward again.

    Example:
        >>> maybe_compile(torch.nn.Linear(2, 1), torch.device("cpu"))  # doctest: +SKIP
        True
    """
    why = _compile_unsupported(device)
    if why:
        log.warning("train.compile: skipped, %s; training runs eagerly", why)
        return False
    model.compile()
    log.info("train.compile: the model's forward is compiled with torch.compile (first steps are slow)")
    return True


def _compile_unsupported(device: torch.device) -> str | None:

    import torch._dynamo

    if not torch._dynamo.is_dynamo_supported():
        return f"torch.compile does not support this Python/platform (torch {torch.__version__})"
    if device.type == "cuda":
        from torch.utils._triton import has_triton

        if not has_triton():
            return "no usable Triton for this GPU"
    elif device.type == "cpu":
        if not any(shutil.which(c) for c in ("g++", "c++", "clang++")):
            return "no C++ compiler on PATH for CPU code generation"
    else:
        return f"device type {device.type!r} is not supported here"
    return None
