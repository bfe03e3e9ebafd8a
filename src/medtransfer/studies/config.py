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
from dataclasses import dataclass, field

from medtransfer.config import Config, at_least, bad_value


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
    executor: str = "local"  # local | ray; --executor overrides
    ray_address: str | None = None  # an existing Ray cluster ("auto", "ray://head:10001"); None = a local instance
    trial_cpus: float = 1.0  # CPUs a trial reserves on Ray (also its torch threads)
    trial_gpus: float = 0.0  # GPUs a trial reserves on Ray; a fraction (0.5) lets trials share a GPU
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
        if not self.trial_cpus > 0:
            raise bad_value("study.trial_cpus", self.trial_cpus, "a positive number of CPUs")
        at_least("study", self, 0, "trial_gpus")
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


@dataclass(frozen=True)
class StudyConfig(Config):
    """A comparison study: ``medtransfer study CONFIG``."""

    study: StudySection = field(default_factory=StudySection)
