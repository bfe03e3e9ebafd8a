"""The task-kind abstraction: one registered object per kind says everything the rest of medtransfer asks.

A :class:`TaskKind` says
* how labels are validated (:meth:`TaskKind.check_labels`) and how splits are stratified (:meth:`TaskKind.strata`);
* the loss and the head: :meth:`TaskKind.runtime` builds the object the training loop calls (``loss``,
  ``scores``, ``init_head``, ``state``), :meth:`TaskKind.restore` rebuilds it from a saved model's metadata;
* the primary metric (:attr:`TaskKind.metric`, :attr:`TaskKind.higher_is_better`) with its CI
  (:meth:`TaskKind.summarize` writes ``metric``, ``score`` and ``score_ci`` beside the kind's own keys);
* the paired test between two models on the same images (:meth:`TaskKind.paired`);
* what the report shows (:attr:`TaskKind.metric_label`, :attr:`TaskKind.unit_interval`, :attr:`TaskKind.axis`).

Adding a kind is one module that subclasses :class:`TaskKind` and registers an instance in :data:`TASK_KINDS`
(``docs/architecture.md`` shows a toy one); callers never compare task names.
"""

from __future__ import annotations

import importlib
import math
from typing import Any, ClassVar

import numpy as np

from medtransfer.errors import ConfigError
from medtransfer.registry import Registry


class TaskKind:
    """Base class of the task kinds; subclasses set the class attributes and override what applies."""

    name: ClassVar[str] = ""
    metric: ClassVar[str | None] = None  # the primary metric's key in metrics.json (auc, mae, dice)
    metric_label: ClassVar[str] = ""  # as the report and the console write it
    metric_phrase: ClassVar[str] = ""  # with its article, for the report's sentences: 'an AUC', 'an MAE'
    higher_is_better: ClassVar[bool] = True
    unit_interval: ClassVar[bool] = True  # the metric lies in [0, 1] (its CIs are clipped there)
    metric_floor: ClassVar[float | None] = None  # otherwise its lowest possible value (MAE: 0), where CIs are clipped
    probabilities: ClassVar[bool] = False  # outputs are probabilities: thresholds and calibration apply
    supervised: ClassVar[bool] = True  # a model can be trained on its labels
    one_hot: ClassVar[bool] = False  # labels are one-hot over K exclusive classes (multiclass)
    several_columns: ClassVar[bool] = False  # the data may give it several label columns (multilabel, regression)
    volumetric: ClassVar[bool] = False  # 3-D cases and masks (segmentation) rather than 2-D images and labels
    paired_test: ClassVar[str] = ""  # the per-seed paired test between two arms, as the report names it
    secondary_metrics: ClassVar[tuple[str, ...]] = ()  # further top-level keys results.csv shows (rmse, r2)

    @property
    def axis(self) -> str:
        """The learning-curve axis label, with the direction that is better."""
        return f"{self.metric_label} ({'higher' if self.higher_is_better else 'lower'} is better)"

    # ------------------------------------------------------------------ labels and splits
    def check_labels(self, labels: np.ndarray, names: tuple[str, ...] | list[str]) -> None:
        """Raise :class:`ConfigError` when ``labels`` cannot be trained as this kind."""
        if labels.ndim != 2 or labels.shape[1] == 0:
            raise ConfigError(f"the dataset has no labels; task {self.name} needs label columns (set data.labels)")

    def strata(self, labels: np.ndarray) -> np.ndarray:
        """One stratum per row for patient-grouped, stratified splits (``-1``: label unknown)."""
        return np.zeros(len(labels), dtype=np.int64)

    # ------------------------------------------------------------------ training
    def runtime(self, labels: np.ndarray, *, pos_weight: bool = False, loss: str | None = None):
        """The object the training loop uses (loss, scores, head init, saved state), fitted to training labels."""
        raise ConfigError(f"task {self.name} cannot be trained by `medtransfer train` as a classifier")

    def restore(self, num_outputs: int, state: dict[str, Any]):
        """The runtime object of a saved model, from :meth:`runtime`'s ``state()``."""
        raise ConfigError(f"task {self.name} has no saved 2-D model form")

    def validation_score(self, labels: np.ndarray, outputs: np.ndarray) -> float:
        """The primary metric on validation outputs (AUC, MAE ...), as the loop logs it and picks the best epoch
        (the highest, or the lowest when :attr:`higher_is_better` is false)."""
        raise NotImplementedError

    # ------------------------------------------------------------------ evaluation
    def summarize(
        self,
        labels: np.ndarray,
        outputs: np.ndarray,
        names: list[str],
        *,
        patient_ids: np.ndarray | None = None,
        thresholds: dict[str, float] | None = None,
        n_boot: int = 1000,
        seed: int = 0,
    ) -> dict[str, Any]:
        """``metrics.json`` of one test set: the kind's own keys plus ``metric``, ``score`` and ``score_ci``."""
        out = self._summarize(
            labels, outputs, names, patient_ids=patient_ids, thresholds=thresholds, n_boot=n_boot, seed=seed
        )
        return with_score(self, out)

    def _summarize(self, labels, outputs, names, *, patient_ids, thresholds, n_boot, seed) -> dict[str, Any]:
        raise NotImplementedError

    def choose_thresholds(self, labels: np.ndarray, outputs: np.ndarray, names: list[str]) -> dict[str, float] | None:
        """Decision thresholds chosen on validation (``None`` when the kind has none)."""
        return None

    def paired(self, labels: np.ndarray, outputs_a: np.ndarray, outputs_b: np.ndarray) -> dict[str, float]:
        """Model a vs model b on the same images: ``{"delta", "p_value", "a", "b", "se", "z"}`` with ``a``, ``b`` the
        metric of each and ``delta`` = a - b (``se`` and ``z`` NaN where the test has none)."""
        raise NotImplementedError

    def logme_targets(self, column: np.ndarray) -> list[np.ndarray]:
        """The target vectors LogME scores for one known label column (its evidence is averaged over them)."""
        return []

    def after_selecting(self, n_kept: int) -> str:
        """The kind of the dataset that keeps ``n_kept`` of its label columns (``data.labels``)."""
        return self.name

    def prediction_columns(self, names: list[str]) -> list[str]:
        """Column names of the outputs in ``predict``'s CSV."""
        return [f"prob_{n}" for n in names]

    def label_table(self, labels: np.ndarray, names: list[str]) -> tuple[list[str], list[list[str]], list[str]]:
        """What ``data inspect`` shows of the labels: a table (header, rows) and problems found."""
        return ([], [], [])


def with_score(kind: TaskKind, metrics: dict[str, Any]) -> dict[str, Any]:
    """Add the uniform keys every kind's metrics carry: ``metric`` (its name), ``score`` and ``score_ci``."""
    if kind.metric is None:
        return metrics
    value = metrics.get(kind.metric, math.nan)
    return {**metrics, "metric": kind.metric, "score": value, "score_ci": metrics.get(f"{kind.metric}_ci")}


TASK_KINDS: Registry[TaskKind] = Registry("task kind")

BUILTIN_MODULES = ("classification", "regression", "segmentation", "unlabelled")


def builtin_kinds() -> Registry[TaskKind]:
    """The registry with the built-in kinds imported (by explicit module name; idempotent)."""
    for module in BUILTIN_MODULES:
        importlib.import_module(f"medtransfer.tasks.{module}")
    return TASK_KINDS


def task_kind(name: str) -> TaskKind:
    """The registered kind ``name`` (an unknown name fails with close matches)."""
    return builtin_kinds().get(name)


def kind_names() -> list[str]:
    return builtin_kinds().names()


def kind_of_metric(metric: str) -> TaskKind:
    """The (first registered) kind whose primary metric is ``metric``; unknown metrics fail with the known ones."""
    reg = builtin_kinds()
    found = [reg.get(n) for n in reg.names() if reg.get(n).metric == metric]
    if not found:
        known = sorted({reg.get(n).metric for n in reg.names() if reg.get(n).metric})
        raise ValueError(f"metric must be one of {known}, got {metric!r}")
    return found[0]


def metric_label(metric: str) -> str:
    """How the report writes a metric key (``auc`` → ``AUC``), from the kind that has it."""
    try:
        return kind_of_metric(metric).metric_label
    except ValueError:
        return metric
