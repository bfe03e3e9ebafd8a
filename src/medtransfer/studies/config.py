"""The study config: a train config plus a ``study:`` section (documented in docs/config.md).

Example::

    # examples/pneumonia_study.yaml (abridged)
    data: {format: medmnist, image_size: 64}
    model: {backbone: resnet18, dropout: 0.2}
    train: {epochs: 15, batch_size: 32, lr: 0.002}
    study:
      n: [50, 100, 200, all]
      sources: [scratch, cxr-ssl-resnet18, hand-ssl-resnet18]
      strategies: [finetune, recipe]
      seeds: [0, 1, 2]
      baselines: [radiomics]
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field, is_dataclass
from pathlib import Path
from typing import Any

from medtransfer.baselines.base import get_baseline
from medtransfer.config import RESOLVERS, Config, at_least, bad_value, to_dict
from medtransfer.errors import ConfigError
from medtransfer.registry import suggest


@dataclass(frozen=True)
class StudyTestSection:
    """An external test set used instead of the study's own test split."""

    path: str | None = None
    format: str | None = None
    split: str | None = None  # e.g. "test" for a MedMNIST file; None = every image of ``path``


@dataclass(frozen=True)
class StudySection:
    n: list[int | str] = field(default_factory=lambda: [50, 100, "all"])  # training-set sizes; "all" = the pool
    sources: list[str] = field(default_factory=lambda: ["scratch"])  # scratch | imagenet | catalogue name | folder
    strategies: list[str] = field(default_factory=lambda: ["finetune"])
    seeds: list[int] = field(default_factory=lambda: [0, 1, 2])
    baselines: list[str] = field(default_factory=list)  # e.g. [radiomics]
    exclude: list[str] = field(default_factory=list)  # arms of the source × strategy cross not to run
    # per-strategy overrides of the train config, e.g. {romero: ["train.lr=0.001"]}: a recipe at its authors' rate
    strategy_settings: dict[str, list[str]] = field(default_factory=dict)
    reference: str | None = None  # the arm others are compared with; None = the first arm from scratch
    test: StudyTestSection | None = None
    rank: bool = True  # score the sources' transferability (LogME) before training, for the report
    workers: int = 1  # trials run at once (local executor); --workers overrides
    executor: str = "local"  # a registered executor: local | ray; --executor overrides
    # each executor's own settings by its name, e.g. {ray: {address: auto, cpus_per_trial: 2}}: built into the
    # executor's settings dataclass (keys, types, ranges checked) when the section is built; the chosen executor's
    # defaults are filled in. Not part of the study's identity unless the executor says so (``fingerprint_keys``).
    executors: dict[str, Any] = field(default_factory=dict)
    radiomics_workers: int = 1  # processes for radiomics feature extraction (features are cached per image)
    sources_dir: str | None = None  # the catalogue folder for source names; None = $MEDTRANSFER_SOURCES
    notes: str | None = None  # a markdown file whose text goes into the report's discussion
    # what the report concludes with: a metric to reach ({auc: 0.95} or {mae: 12}) for "how many labels", the
    # non-inferiority margin of "matches the baseline" (None: the kind's default, 0.02 AUC/Dice, 5 % of an MAE), the
    # unit of a regression target (tables and axes name it), whether degenerate trials count in means and tests
    target: dict[str, float] = field(default_factory=dict)
    margin: float | None = None
    unit: str | None = None
    keep_degenerate: bool = False
    # Before executors had their own settings (2026-12) the Ray executor's were here. Still read, so that the
    # config.yaml of an older study folder loads (--resume, --repair): a value other than the old default moves to
    # executors.ray (see LEGACY_KEYS); every config written now has them null.
    ray_address: str | None = None
    trial_cpus: float | None = None
    trial_gpus: float | None = None

    def __post_init__(self) -> None:
        if not self.n:
            raise bad_value("study.n", self.n, "a non-empty list of training-set sizes (integers >= 1 or 'all')")
        for size in self.n:
            if size != "all" and not (isinstance(size, int) and size >= 1):
                raise bad_value("study.n", self.n, "a list of integers >= 1 or 'all'")
        if len(set(map(str, self.n))) != len(self.n):
            raise bad_value("study.n", self.n, "a list without duplicates")
        if not self.seeds:
            raise bad_value("study.seeds", self.seeds, "a non-empty list of seeds, e.g. [0, 1, 2]")
        if len(set(self.seeds)) != len(self.seeds) or any(x < 0 for x in self.seeds):
            raise bad_value("study.seeds", self.seeds, "distinct integers >= 0 (no duplicates)")
        at_least("study", self, 1, "workers", "radiomics_workers")
        self._move_legacy_keys()
        object.__setattr__(self, "executors", RESOLVERS.get("executors")(self))
        if len(self.target) > 1:
            raise bad_value("study.target", self.target, "one metric and its value, e.g. {auc: 0.95} or {mae: 12}")
        for metric, value in self.target.items():
            if not isinstance(value, int | float) or isinstance(value, bool) or not math.isfinite(value):
                raise bad_value("study.target", self.target, "a number for the metric, e.g. {auc: 0.95}")
            if metric in ("auc", "dice") and not 0 < value <= 1:
                raise bad_value(f"study.target.{metric}", value, "a value in (0, 1]")
            if value < 0:
                raise bad_value(f"study.target.{metric}", value, "a value >= 0")
        if self.test is not None and not self.test.path and (self.test.format or self.test.split):
            raise bad_value("study.test.path", None, "the external test set's file or folder (--set study.test.path=…)")
        if self.margin is not None and not (isinstance(self.margin, int | float) and 0 < self.margin < math.inf):
            raise bad_value("study.margin", self.margin, "a positive number in the metric's unit, e.g. 0.02 (AUC)")
        self._check_arms()

    def arms(self) -> list[tuple[str, str, str | None, str | None]]:
        """``(arm, kind, source, strategy)`` of every arm: each source × strategy (``net``) not in ``exclude``, then
        each baseline (``baseline``, its name as arm and strategy)."""
        nets = [
            (f"{source_label(src)}/{strategy}", "net", src, strategy)
            for src in self.sources
            for strategy in self.strategies
        ]
        return [a for a in nets if a[0] not in self.exclude] + [(b, "baseline", None, b) for b in self.baselines]

    def _check_arms(self) -> None:
        """The grid's names, checked when the config loads: baselines, ``strategy_settings``' form, ``exclude`` and
        ``reference`` among the arms, no two arms alike (strategy names: by the strategies, ``study_transfer``)."""
        for name in self.baselines:
            get_baseline(name)  # an unknown name raises with close matches
        for name, overrides in self.strategy_settings.items():
            if not isinstance(overrides, list) or not all(isinstance(o, str) and "=" in o for o in overrides):
                raise bad_value(f"study.strategy_settings.{name}", overrides, "a list of 'key.sub=value' overrides")
        if not self.sources and not self.baselines:
            raise ConfigError("the study has no arm: give study.sources (and strategies) or study.baselines")
        if self.sources and not self.strategies:
            raise bad_value("study.strategies", self.strategies, "at least one strategy, e.g. [finetune]")
        nets = [f"{source_label(src)}/{strategy}" for src in self.sources for strategy in self.strategies]
        for name in self.exclude:
            if name not in nets:
                close = suggest(name, nets)
                hint = f"; did you mean {close[0]!r}?" if close else ""
                raise ConfigError(f"study.exclude: {name!r} is not an arm of the study{hint}")
        names = [a[0] for a in self.arms()]
        dup = sorted({a for a in names if names.count(a) > 1})
        if dup:
            raise ConfigError(f"two study arms have the same name {dup}; list each source and strategy once")
        if self.reference is not None and self.reference not in names:
            close = suggest(self.reference, names)
            hint = f"; did you mean {close[0]!r}?" if close else ""
            raise ConfigError(f"study.reference {self.reference!r} is not an arm of the study{hint} (arms: {names})")

    def _move_legacy_keys(self) -> None:
        """``ray_address`` / ``trial_cpus`` / ``trial_gpus`` → ``executors.ray`` (a value at the old default is
        dropped); one given both ways must agree."""
        executors = dict(self.executors or {})
        for old, (executor, new, default) in LEGACY_KEYS.items():
            value = getattr(self, old)
            if value is None:
                continue
            object.__setattr__(self, old, None)
            if value == default:
                continue
            settings = executors.get(executor)
            settings = dict(to_dict(settings) if is_dataclass(settings) else settings or {})
            if new in settings and settings[new] != value:
                raise bad_value(
                    f"study.{old}",
                    value,
                    f"left out: it is study.executors.{executor}.{new} now, which says {settings[new]!r}",
                )
            settings[new] = value
            executors[executor] = settings
        object.__setattr__(self, "executors", executors)


#: The flat keys of older configs: old key → (executor, its setting, the old default, which is not carried over).
LEGACY_KEYS: dict[str, tuple[str, str, Any]] = {
    "ray_address": ("ray", "address", None),
    "trial_cpus": ("ray", "cpus_per_trial", 1.0),
    "trial_gpus": ("ray", "gpus_per_trial", 0.0),
}

#: How (and where) a study's trials run, not what they do: left out of its identity (studies/identity.py); an
#: executor's settings that do change results come back through its ``fingerprint_keys``.
HOW_IT_RUNS = ("workers", "radiomics_workers", "executor", "executors", *LEGACY_KEYS)


@dataclass(frozen=True)
class StudyConfig(Config):
    """A comparison study: ``medtransfer study CONFIG``."""

    # every arm's transfer keys in one section: the shared ones and those of each strategy in study.strategies (each
    # arm takes its own); checked per strategy and resolved at load (medtransfer.transfer.strategies.study_transfer)
    transfer: dict[str, Any] = field(default_factory=dict)
    study: StudySection = field(default_factory=StudySection)

    def _resolve_transfer(self) -> None:
        object.__setattr__(self, "transfer", RESOLVERS.get("study_transfer")(self.transfer, self.study))
        RESOLVERS.get("study_arms")(self)  # each strategy built with its arm's config: a bad setting fails at load


def source_label(source: str) -> str:
    """How an arm names its source: a catalogue name as given, a folder by its last component."""
    text = source.strip().rstrip("/")
    return Path(text).name if ("/" in text or text.startswith("~")) else text
