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

from medtransfer.baselines.base import get_baseline
from medtransfer.errors import ConfigError
from medtransfer.registry import suggest
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


def source_label(source: str) -> str:
    """How an arm names its source: a catalogue name as given, a folder by its last component."""
    text = source.strip().rstrip("/")
    return Path(text).name if ("/" in text or text.startswith("~")) else text


def resolve_sizes(values: list[int | str], pool: int) -> list[tuple[str, int]]:
    """``study.n`` → sorted unique ``(label, n)``; sizes not below the pool collapse into ``all``."""
    if pool < 1:
        raise ConfigError("the training split is empty: a study needs training images")
    if not values:
        raise ConfigError("study.n is empty; give training-set sizes such as [50, 100, all]")
    sizes: dict[str, int] = {}
    for v in values:
        if isinstance(v, str):
            if v.strip().lower() != "all":
                raise ConfigError(f"study.n: {v!r} is neither a number nor 'all'")
            sizes["all"] = pool
        elif v < 1:
            raise ConfigError(f"study.n: {v} must be at least 1")
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
    # deferred: it imports torch, and this module stays torch-free (the executors of the CLI name its Trial)
    from medtransfer.transfer.strategies import STRATEGIES

    for name in study.strategies:
        STRATEGIES.get(name)  # unknown names raise with close matches
    for name, overrides in study.strategy_settings.items():
        if name not in study.strategies:
            if name not in STRATEGIES.names():  # a misspelt strategy: refuse, with the close matches
                close = suggest(str(name), [*study.strategies, *STRATEGIES.names()])
                hint = f"; did you mean {close[0]!r}?" if close else f"; the study's strategies are {study.strategies}"
                raise ConfigError(f"study.strategy_settings names '{name}', which is not a strategy{hint}")
            # settings kept for a strategy the study does not run (a trimmed example): not an error
            log.warning("study.strategy_settings.%s is ignored: '%s' is not in study.strategies", name, name)
        if not isinstance(overrides, list) or not all(isinstance(o, str) and "=" in o for o in overrides):
            raise ConfigError(f"study.strategy_settings.{name} must be a list of 'key.sub=value' overrides")
    for name in study.baselines:
        get_baseline(name)
    if not study.seeds:
        raise ConfigError("study.seeds is empty")
    if len(set(study.seeds)) != len(study.seeds):
        raise ConfigError(f"study.seeds has duplicates: {study.seeds}")
    if not study.sources and not study.baselines:
        raise ConfigError("the study has no arm: give study.sources (and strategies) or study.baselines")
    if study.sources and not study.strategies:
        raise ConfigError("study.strategies is empty; give at least one, e.g. [finetune]")
    arms: list[tuple[str, str, str | None, str | None]] = []
    for source in study.sources:
        for strategy in study.strategies:
            arms.append((f"{source_label(source)}/{strategy}", "net", source, strategy))
    known = [a[0] for a in arms]
    for name in study.exclude:
        if name not in known:
            close = suggest(name, known)
            hint = f"; did you mean {close[0]!r}?" if close else ""
            raise ConfigError(f"study.exclude: {name!r} is not an arm of the study{hint}")
    arms = [a for a in arms if a[0] not in study.exclude]
    arms += [(name, "baseline", None, name) for name in study.baselines]
    names = [a[0] for a in arms]
    dup = sorted({a for a in names if names.count(a) > 1})
    if dup:
        raise ConfigError(f"two study arms have the same name {dup}; list each source and strategy once")
    return [
        Trial(arm, kind, source, strategy, label, n, seed)
        for label, n in resolve_sizes(list(study.n), pool)
        for seed in study.seeds
        for arm, kind, source, strategy in arms
    ]


def reference_arm(study: StudySection, trials: list[Trial]) -> str | None:
    """``study.reference`` (checked), else the first arm from scratch, else the first arm."""
    arms = list(dict.fromkeys(t.arm for t in trials))
    if study.reference is not None:
        if study.reference not in arms:
            close = suggest(study.reference, arms)
            hint = f"; did you mean {close[0]!r}?" if close else ""
            raise ConfigError(f"study.reference {study.reference!r} is not an arm of the study{hint} (arms: {arms})")
        return study.reference
    scratch = [t.arm for t in trials if t.source == "scratch"]
    return scratch[0] if scratch else (arms[0] if arms else None)
