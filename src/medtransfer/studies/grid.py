"""The study grid: arms (source × strategy, plus baselines) × training-set sizes N × seeds.

Pairing: at a given (N, seed) every arm reads the same split file (``splits/seed<S>.csv``), whose nested ranks
make the subset of size N the same for every arm and a prefix of the subset of any larger N; every arm is
tested on the same images (the study's test split or ``study.test``).
"""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass
from pathlib import Path

from medtransfer.errors import ConfigError
from medtransfer.studies.config import StudySection

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Trial:
    """One cell of the grid; ``id`` is its key in the ledger and ``folder`` its output folder in the study."""

    arm: str  # "cxr-ssl/recipe", or a baseline's name
    kind: str  # "net" | "baseline"
    source: str | None  # the source as the study config names it (None for baselines)
    strategy: str | None  # the transfer strategy, or the baseline's name
    n_label: str  # "50" … or "all"
    n: int  # the number of training images
    seed: int

    @property
    def id(self) -> str:
        return f"{self.arm}|n={self.n_label}|seed={self.seed}"

    @property
    def folder(self) -> Path:
        return Path("trials") / safe_name(self.arm) / f"n{self.n_label}-s{self.seed}"

    @property
    def n_train(self) -> int | None:
        """``train.n_train`` for this trial (None = the whole pool)."""
        return None if self.n_label == "all" else self.n


def safe_name(text: str) -> str:
    """A folder name for an arm: ``cxr-ssl/recipe`` → ``cxr-ssl__recipe``."""
    return re.sub(r"[^A-Za-z0-9._-]+", "_", text.replace("/", "__")).strip("_") or "arm"


def resolve_sizes(values: list[int | str], pool: int) -> list[tuple[str, int]]:
    """``study.n`` (checked when the config loaded) → sorted unique ``(label, n)``; sizes not below the pool collapse
    into ``all``."""
    if pool < 1:
        raise ConfigError("the training split is empty: a study needs training images")
    sizes: dict[str, int] = {}
    for v in values:
        if isinstance(v, str):
            sizes["all"] = pool
        elif v >= pool:
            log.warning("study.n: %d is not below the %d training images; it is run as 'all'", v, pool)
            sizes["all"] = pool
        else:
            sizes[str(v)] = int(v)
    return sorted(sizes.items(), key=lambda kv: kv[1])


def expand(study: StudySection, pool: int) -> list[Trial]:
    """Every trial of the study, small N first (the learning curve fills from its cheap end).

    Example:
        >>> s = StudySection(n=[10, "all"], sources=["scratch"], strategies=["finetune"], seeds=[0], baselines=[])
        >>> [t.id for t in expand(s, 40)]
        ['scratch/finetune|n=10|seed=0', 'scratch/finetune|n=all|seed=0']
    """
    arms = study.arms()  # names checked when the config loaded
    return [
        Trial(arm, kind, source, strategy, label, n, seed)
        for label, n in resolve_sizes(list(study.n), pool)
        for seed in study.seeds
        for arm, kind, source, strategy in arms
    ]


def reference_arm(study: StudySection, trials: list[Trial]) -> str | None:
    """``study.reference`` (checked), else the first arm from scratch, else the first arm."""
    arms = list(dict.fromkeys(t.arm for t in trials))
    if study.reference is not None:  # an arm of the study, checked when the config loaded
        return study.reference
    scratch = [t.arm for t in trials if t.source == "scratch"]
    return scratch[0] if scratch else (arms[0] if arms else None)
