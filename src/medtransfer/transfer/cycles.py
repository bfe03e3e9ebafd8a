"""The learning-rate and momentum curves of the published recipes, as pure functions of the step.

Written out here (not taken from ``torch.optim.lr_scheduler.OneCycleLR``) because the two recipes index their
curves differently from torch and from each other, and the tests pin every value to these formulas:

* fastai ``fit_one_cycle`` (``fastai/callback/schedule.py``): at step ``k`` of ``n`` the position is ``k / n``;
  ``combined_cos(pct, start, peak, end)`` anneals ``start → peak`` over the first ``pct`` of the positions and
  ``peak → end`` over the rest, each with ``SchedCos(a, b)(p) = a + (1 + cos(π (1 - p))) (b - a) / 2``; the LR
  runs ``lr/div → lr → lr/div_final`` and Adam's β1 ``0.95 → 0.85 → 0.95``.
* Romero et al. (``r0mer0m/DL-Medical-Images``, ``train_functions.TrainingPolicy``): ``n1 = int(n · pct)`` warm-up
  steps then ``n - n1`` annealing steps, each a ``cos_annealing(a, b, m)[i] = b + (a - b) / 2 · (1 + cos(i π / m))``;
  the LR runs ``lr/div → lr → (lr/div) · delta``.
"""

from __future__ import annotations

import math


def sched_cos(start: float, end: float, pos: float) -> float:
    """fastai's ``SchedCos``: cosine from ``start`` (pos 0) to ``end`` (pos 1).

    Example:
        >>> sched_cos(1.0, 3.0, 0.5)
        2.0
    """
    return start + (1 + math.cos(math.pi * (1 - pos))) * (end - start) / 2


def combined_cos(pos: float, pct: float, start: float, peak: float, end: float) -> float:
    """fastai's ``combined_cos(pct, start, peak, end)`` at ``pos`` in [0, 1).

    Example:
        >>> combined_cos(0.0, 0.25, 1.0, 10.0, 0.0), combined_cos(0.25, 0.25, 1.0, 10.0, 0.0)
        (1.0, 10.0)
    """
    if pos < pct:
        return sched_cos(start, peak, pos / pct)
    return sched_cos(peak, end, (pos - pct) / (1 - pct)) if pct < 1 else peak


def even_mults(start: float, stop: float, n: int) -> list[float]:
    """fastai's ``even_mults``: ``n`` values from ``start`` to ``stop``, evenly spaced on a log scale.

    Example:
        >>> [round(v, 6) for v in even_mults(1e-3, 1e-1, 3)]
        [0.001, 0.01, 0.1]
    """
    if n == 1:
        return [stop]
    step = (stop / start) ** (1 / (n - 1))
    return [start * step**i for i in range(n)]


def slice_lrs(lo: float | None, hi: float, n: int) -> list[float]:
    """The group rates fastai's ``Learner.lr_range`` makes of ``slice(lo, hi)`` (or ``slice(hi)``: ``lo=None``).

    Example:
        >>> slice_lrs(None, 2e-3, 3)
        [0.0002, 0.0002, 0.002]
    """
    if lo is None:
        return [hi / 10] * (n - 1) + [hi]
    return even_mults(lo, hi, n)


def cos_annealing(start: float, end: float, i: int, m: int) -> float:
    """Romero et al.'s ``cos_annealing(start, end, m)[i]``: ``start`` at ``i = 0``, approaching ``end``."""
    return end + (start - end) / 2 * (1 + math.cos(i * math.pi / m))


def romero_one_cycle(step: int, total: int, peak: float, pct: float, div: float, delta: float) -> float:
    """The LR of Romero et al.'s ``TrainingPolicy`` at ``step`` (0-based) of ``total``.

    Example:
        >>> round(romero_one_cycle(0, 10, 1e-3, 0.3, 25.0, 1e-4), 12)  # lr / 25
        4e-05
    """
    n1 = int(total * pct)
    start = peak / div
    if step < n1:
        return cos_annealing(start, peak, step, n1)
    return cos_annealing(peak, start * delta, step - n1, total - n1)
