"""Learning-rate policies: one-cycle against torch's OneCycleLR and fastai's closed form; the others."""

from __future__ import annotations

import math

import pytest
import torch

from medtransfer.config import TrainConfig
from medtransfer.errors import UnknownNameError
from medtransfer.training.schedules import LR_POLICIES, build_scheduler

LRS = [1e-4, 1e-3, 1e-2]  # discriminative group rates, input → head


def optimizer(lrs: list[float] = LRS) -> torch.optim.AdamW:
    return torch.optim.AdamW([{"params": [torch.nn.Parameter(torch.zeros(2))], "lr": lr} for lr in lrs])


def trace(opt: torch.optim.Optimizer, scheduler: object, steps: int) -> list[tuple[list[float], list[float]]]:
    """(group lrs, group beta1) before each of ``steps`` optimizer steps."""
    out = []
    for _ in range(steps):
        out.append(([g["lr"] for g in opt.param_groups], [g["betas"][0] for g in opt.param_groups]))
        opt.step()
        scheduler.step()
    return out


def _cos(start: float, end: float, pos: float) -> float:
    """fastai's SchedCos."""
    return start + (1 + math.cos(math.pi * (1 - pos))) * (end - start) / 2


def fastai_one_cycle(pos: float, lr: float, pct: float, div: float, div_final: float) -> float:
    """fastai's combined_cos(pct, lr/div, lr, lr/(div*div_final)) at training position ``pos`` in [0, 1]."""
    if pos < pct:
        return _cos(lr / div, lr, pos / pct)
    return _cos(lr, lr / (div * div_final), (pos - pct) / (1 - pct))


def test_registered_policies() -> None:
    assert LR_POLICIES.names() == ["constant", "cosine", "one_cycle", "step"]


@pytest.mark.parametrize("total", [10, 37, 200])
def test_one_cycle_equals_torch(total: int) -> None:
    cfg = TrainConfig(warmup_pct=0.3, div_factor=10.0, final_div_factor=1e3)
    ours = optimizer()
    scheduler = build_scheduler("one_cycle", ours, total, 5, cfg)
    ref = optimizer()
    reference = torch.optim.lr_scheduler.OneCycleLR(
        ref,
        max_lr=LRS,
        total_steps=total,
        pct_start=0.3,
        div_factor=10.0,
        final_div_factor=1e3,
        anneal_strategy="cos",
        cycle_momentum=True,
        base_momentum=0.85,
        max_momentum=0.95,
    )
    assert trace(ours, scheduler, total) == trace(ref, reference, total)


def test_one_cycle_follows_the_closed_form() -> None:
    """Cosine warm-up lr/div → lr over pct_start of the steps, then cosine down to lr/(div*final_div).

    torch reaches the peak at step pct*T - 1 and the floor at the last step T - 1: exact in that indexing.
    """
    total, pct, div, final = 80, 0.25, 25.0, 1e5  # fastai's defaults
    cfg = TrainConfig(warmup_pct=pct, div_factor=div, final_div_factor=final)
    opt = optimizer()
    steps = trace(opt, build_scheduler("one_cycle", opt, total, 8, cfg), total)
    peak = pct * total - 1
    for t, (lrs, betas) in enumerate(steps):
        pos = t / peak * pct if t <= peak else pct + (t - peak) / (total - 1 - peak) * (1 - pct)
        assert lrs == pytest.approx([fastai_one_cycle(pos, lr, pct, div, final) for lr in LRS], rel=1e-9)
        mom = _cos(0.95, 0.85, pos / pct) if pos <= pct else _cos(0.85, 0.95, (pos - pct) / (1 - pct))
        assert betas == pytest.approx([mom] * len(LRS), rel=1e-9)
    assert steps[0][0] == pytest.approx([lr / div for lr in LRS])
    assert steps[int(peak)][0] == pytest.approx(LRS)
    assert steps[-1][0] == pytest.approx([lr / (div * final) for lr in LRS])


def test_one_cycle_matches_fastai_indexing_for_long_runs() -> None:
    """fastai evaluates the schedule at pos = t/T; the two indexings differ by under a step."""
    total, pct, div, final = 1000, 0.25, 25.0, 1e5
    opt = optimizer([1.0])
    steps = trace(opt, build_scheduler("one_cycle", opt, total, 10, TrainConfig(final_div_factor=final)), total)
    for t, (lrs, _) in enumerate(steps):
        assert lrs[0] == pytest.approx(fastai_one_cycle(t / total, 1.0, pct, div, final), abs=5e-3)


def test_one_cycle_with_a_single_warmup_step_does_not_divide_by_zero() -> None:
    """torch's OneCycleLR raises ZeroDivisionError for 4 steps at pct_start=0.25 (N=50, 4 epochs)."""
    opt = optimizer([1.0])
    lrs = [lr[0] for lr, _ in trace(opt, build_scheduler("one_cycle", opt, 4, 1, TrainConfig()), 4)]
    assert lrs[0] == pytest.approx(1 / 25)
    assert lrs[1] == pytest.approx(1.0, rel=1e-5)
    assert lrs[1] > lrs[2] > lrs[3] == pytest.approx(1 / 25 / 1e5)  # the one_cycle policy's defaults


def test_one_cycle_resumes_from_its_state_dict() -> None:
    cfg, total = TrainConfig(), 30
    opt = optimizer()
    scheduler = build_scheduler("one_cycle", opt, total, 3, cfg)
    full = trace(opt, scheduler, total)

    first = optimizer()
    s1 = build_scheduler("one_cycle", first, total, 3, cfg)
    trace(first, s1, 12)
    second = optimizer()
    s2 = build_scheduler("one_cycle", second, total, 3, cfg)
    second.load_state_dict(first.state_dict())
    s2.load_state_dict(s1.state_dict())
    assert trace(second, s2, total - 12) == full[12:]


def test_constant_keeps_the_group_rates() -> None:
    opt = optimizer()
    steps = trace(opt, build_scheduler("constant", opt, 20, 4, TrainConfig()), 20)
    assert all(lrs == LRS for lrs, _ in steps)


def test_cosine_anneals_over_all_steps() -> None:
    opt = optimizer()
    steps = trace(opt, build_scheduler("cosine", opt, 20, 4, TrainConfig()), 21)
    for t in (0, 5, 10, 20):
        expected = [lr * (1 + math.cos(math.pi * t / 20)) / 2 for lr in LRS]
        assert steps[t][0] == pytest.approx(expected, abs=1e-12)


def test_step_decays_every_step_size_epochs() -> None:
    opt = optimizer()
    cfg = TrainConfig(step_size=2, gamma=0.5)
    steps = trace(opt, build_scheduler("step", opt, 18, 3, cfg), 18)
    for t, (lrs, _) in enumerate(steps):
        assert lrs == pytest.approx([lr * 0.5 ** (t // 6) for lr in LRS])


def test_unknown_policy_suggests_close_names() -> None:
    with pytest.raises(UnknownNameError, match=r"did you mean \['one_cycle'\]"):
        build_scheduler("one_cycl", optimizer(), 10, 1, TrainConfig())
