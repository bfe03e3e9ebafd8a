"""The pipeline of a data family: everything that differs between 2-D images and 3-D volumes, in one object.

A task kind names its family (:attr:`medtransfer.tasks.base.TaskKind.family`: ``images`` or ``volumes``); the
callers (``train``, ``evaluate``, the study planner, a study's trial) look the pipeline up once with
:func:`pipeline_for` and never ask which family they hold. A pipeline

* checks the names a config uses (:meth:`Pipeline.preflight`) and what of a study it cannot do
  (:meth:`Pipeline.check_study`) before anything is read or written;
* loads the data (:meth:`Pipeline.load`), makes the base split and one re-seeded split per study seed
  (:meth:`Pipeline.split`, :meth:`Pipeline.reseed`) and loads a split file again (:meth:`Pipeline.read_split`);
* checks a study's sources against the data (:meth:`Pipeline.preflight_sources`) and warms the data for the workers
  (:meth:`Pipeline.warm`);
* trains one run folder (:meth:`Pipeline.train`), scores a finished run on other data (:meth:`Pipeline.evaluate`),
  and says what a trial's constant predictor scores (:meth:`Pipeline.constant_scores`);
* prints the one-line results of ``train`` and ``evaluate`` (:meth:`Pipeline.summary`).

Adding a family is one module that subclasses :class:`Pipeline` and registers an instance in :data:`PIPELINES`
(plus its name in the registry's built-ins for a built-in family); a task kind with ``family = "<name>"`` uses it.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, ClassVar

from medtransfer.config import Config
from medtransfer.data.splits import Split, load_split
from medtransfer.errors import UserError
from medtransfer.registry import Registry
from medtransfer.tasks.base import TaskKind, kind_names, task_kind
from medtransfer.training.checkpoint import run_task


class Pipeline:
    """Base class of the data families' pipelines; subclasses implement what applies."""

    name: ClassVar[str] = ""
    unit: ClassVar[str] = "images"  # what a dataset counts (the planner's log, error messages)
    ranks_sources: ClassVar[bool] = False  # ``study.rank`` applies (transferability of sources before training)

    # ------------------------------------------------------------------ before anything is read
    def preflight(self, cfg: Config) -> None:
        """Resolve the names of ``cfg`` (network, weights, strategy) without loading data or large files."""

    def check_study(self, cfg: Any) -> None:
        """Raise :class:`UserError` for study settings this family cannot run (before the study folder exists)."""

    # ------------------------------------------------------------------ data and splits
    def load(self, cfg: Config) -> Any:
        """The dataset ``cfg.data`` names."""
        raise NotImplementedError

    def split(self, cfg: Config, ds: Any, progress: bool = True) -> Split:
        """The base split of ``ds``: ``data.split_file``, or one made with ``cfg.seed``."""
        raise NotImplementedError

    def reseed(self, base: Split, ds: Any, seed: int) -> Split:
        """The same train/val/test assignment with the nested training subsets drawn again with ``seed``."""
        raise NotImplementedError

    def read_split(self, path: str | Path, ds: Any) -> Split:
        """A split file written for ``ds`` (its fingerprint checked)."""
        return load_split(path, ds)

    def preflight_sources(self, cfg: Config, sources: dict[str, str], ds: Any) -> None:
        """Build each source's model once so that a source that cannot load fails before any training."""

    def preflight_test(self, cfg: Any, ds: Any) -> None:
        """Check a study's external test set (``study.test``) against the data."""

    def warm(self, cfg: Config, ds: Any, progress: bool) -> None:
        """Whatever the workers should find ready (decoded images), done once by the planner."""

    # ------------------------------------------------------------------ runs
    def prepared(self, cfg: Config, split_file: str | Path) -> Any:
        """The data with ``split_file``'s split, loaded once per process (what the trials of one study share);
        ``None`` where the family reloads per run."""
        return None

    def train(self, cfg: Config, out: str | Path, resume: bool = False, progress: bool = True, prepared=None) -> dict:
        """Train and evaluate one run folder; returns what ``metrics.json`` holds."""
        raise NotImplementedError

    def evaluate(self, run: str | Path, data: str, out: str | Path, **options: Any) -> dict:
        """Score a finished run on ``data``; write and return ``metrics.json``."""
        raise NotImplementedError

    def constant_scores(self, kind: TaskKind, prepared: Any, n_train: int | None, test_labels) -> dict[str, float]:
        """What a model that ignores the image scores (``{"val", "test"}``) for a trial's collapse check;
        ``test_labels``: the labels of an external test set, or None for the data's own test split."""
        return {"val": kind.constant_score(None, None), "test": kind.constant_score(None, None)}

    def plan_run(self, cfg: Config, out: str | Path | None = None, timed: bool = True) -> Any:
        """``--dry-run``: the run resolved as ``train`` would resolve it (and a few steps timed), nothing written."""
        raise UserError(f"--dry-run and --show-batch plan 2-D image runs; {cfg.task} runs are not planned yet")

    def write_batch_grid(self, cfg: Config, plan: Any, path: str | Path) -> int:
        """``--show-batch``: a PNG grid of augmented training images with their labels; returns how many."""
        raise UserError(f"--show-batch draws 2-D image batches; {cfg.task} runs have none")

    def summary(self, metrics: dict, command: str, out: Path) -> list[str]:
        """The lines ``train`` or ``evaluate`` (``command``) prints of the metrics it wrote to ``out``."""
        return []


PIPELINES: Registry[Pipeline] = Registry(
    "data family", builtins=("medtransfer.pipelines.images", "medtransfer.pipelines.volumes")
)


def pipeline_for(task: str | None) -> Pipeline:
    """The pipeline of the task kind ``task`` (``None``: the kind is read from the data, which only the 2-D image
    sources do: the images pipeline)."""
    return PIPELINES.get(task_kind(task).family if task else "images")


def pipeline_of_run(run_dir: str | Path) -> Pipeline:
    """The pipeline of a finished run folder, from the task its ``model.safetensors`` records."""
    task = run_task(run_dir)
    return pipeline_for(task if task in kind_names() else None)
