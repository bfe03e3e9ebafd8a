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

import math
from typing import Any, ClassVar

import numpy as np
import pandas as pd

from medtransfer.config import RESOLVERS
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
    family: ClassVar[str] = "images"  # the data family whose pipeline runs it (medtransfer.pipelines: images, volumes)
    unit: ClassVar[str] = "images"  # what a test set counts and per-unit paired tests resample: images, or cases
    # the per-trial predictions file(s) the report reads, first found wins (a study's external test set first)
    prediction_files: ClassVar[tuple[str, ...]] = ("predictions_external.csv", "predictions.csv")
    paired_test: ClassVar[str] = ""  # the per-seed paired test between two arms, as the report names it
    secondary_metrics: ClassVar[tuple[str, ...]] = ()  # further top-level keys results.csv shows (rmse, r2)
    # the keys of its metrics.json a study's ledger keeps besides everyone's (the primary metric and its CI are kept
    # anyway); the trial folder keeps the whole file
    ledger_keys: ClassVar[tuple[str, ...]] = ()
    # train.zoom's default (``null`` in the config): whether the augmentation's random resized crop rescales the
    # image. A class does not change with a zoom; a continuous target may be a length in pixels, which does.
    zoom: ClassVar[bool] = True

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

    def choose_thresholds(
        self, labels: np.ndarray, outputs: np.ndarray, names: list[str], rule: str = "youden"
    ) -> dict[str, float] | None:
        """Decision thresholds chosen on validation by ``rule`` (``eval.threshold``; ``None`` when the kind has
        none)."""
        return None

    def paired(
        self, labels: np.ndarray, outputs_a: np.ndarray, outputs_b: np.ndarray, groups: np.ndarray | None = None
    ) -> dict[str, float]:
        """Model a vs model b on the same images: ``{"delta", "p_value", "a", "b", "se", "z"}`` with ``a``, ``b`` the
        metric of each and ``delta`` = a - b (``se`` and ``z`` NaN where the test has none); ``groups`` (patient ids)
        makes the test treat a patient's images as one cluster."""
        raise NotImplementedError

    # ------------------------------------------------------------------ study statistics
    def replicate_scores(self, labels: np.ndarray, outputs: np.ndarray, weights: np.ndarray) -> np.ndarray:
        """The primary metric under each row of integer case weights ``(B, N)`` (a bootstrap replicate is one row):
        what the two-level bootstrap of a study resamples. ``labels``/``outputs`` are ``(N, K)``."""
        raise NotImplementedError(f"task {self.name} has no bootstrap of its metric")

    def constant_score(self, train_labels: np.ndarray | None, labels: np.ndarray | None) -> float:
        """The metric of a model that ignores the image (a constant prediction fitted to ``train_labels``), on
        ``labels``: a trial no better than this did not learn. NaN where unknown."""
        return math.nan

    def default_margin(self, reference: float) -> float:
        """The non-inferiority margin when ``study.margin`` is not set, given the reference's metric."""
        return 0.02

    def collapse_reason(self, metrics: dict[str, Any]) -> str | None:
        """Why a finished trial counts as *degenerate* (its model did not learn), or None.

        * its validation score at the chosen epoch is no better than a constant predictor's;
        * its test score's CI lies entirely on the wrong side of the constant predictor's score.

        The constant predictor's scores come from ``metrics["constant"]`` (``{"val", "test"}``, written by the study's
        trial) or, where it does not depend on the data (AUC: 0.5, Dice: 0), from :meth:`constant_score`.
        A non-finite training loss already fails the trial (``TrainingFailed``).
        """
        const = metrics.get("constant") or {}
        label = self.metric_label

        def constant(which: str) -> float:
            v = const.get(which)
            v = self.constant_score(None, None) if v is None else v
            return float(v) if v is not None and math.isfinite(float(v)) else math.nan

        def better(a: float, b: float) -> bool:
            return a > b if self.higher_is_better else a < b

        reasons = []
        val = metrics.get("val") if isinstance(metrics.get("val"), dict) else {}
        v, c = _float(val.get("score", val.get(self.metric or ""))), constant("val")
        if math.isfinite(v) and math.isfinite(c) and not better(v, c):
            reasons.append(
                f"validation {label} {v:.3f} at the chosen epoch is no better than a constant predictor's {c:.3f}"
            )
        ci = metrics.get("score_ci") or metrics.get(f"{self.metric}_ci") or [None, None]
        lo, hi = (_float(x) for x in (list(ci) + [None, None])[:2])
        c = constant("test")
        worse_side = hi if self.higher_is_better else lo
        if math.isfinite(worse_side) and math.isfinite(c) and better(c, worse_side):
            reasons.append(
                f"test {label} 95% CI [{lo:.3f}, {hi:.3f}] lies entirely "
                f"{'below' if self.higher_is_better else 'above'} a constant predictor's {c:.3f}"
            )
        return "; ".join(reasons) or None

    def logme_targets(self, column: np.ndarray) -> list[np.ndarray]:
        """The target vectors LogME scores for one known label column (its evidence is averaged over them)."""
        return []

    def after_selecting(self, n_kept: int) -> str:
        """The kind of the dataset that keeps ``n_kept`` of its label columns (``data.labels``)."""
        return self.name

    def prediction_columns(self, names: list[str]) -> list[str]:
        """Column names of the outputs in ``predict``'s CSV."""
        return [f"prob_{n}" for n in names]

    def label_text(self, names: list[str], row: np.ndarray) -> str:
        """One image's label as a caption (``--show-batch``): the names whose value is 1, else ``negative``."""
        on = [n for n, v in zip(names, row, strict=False) if v == 1]
        return ", ".join(on) if on else ("negative" if names else "")

    def prediction_arrays(self, table: pd.DataFrame) -> tuple[pd.Series, pd.Series, np.ndarray, np.ndarray] | None:
        """``(ids, groups, labels, outputs)`` of one trial's predictions table (one of :attr:`prediction_files`), or
        None when it has no usable columns: ``image_id``, ``patient_id``, ``label:<name>``, ``score:<name>``."""
        labels = [str(c)[6:] for c in table.columns if str(c).startswith("score:")]
        if "image_id" not in table.columns or not labels:
            return None
        ids = table["image_id"].astype(str)
        groups = table["patient_id"].astype(str) if "patient_id" in table.columns else ids
        lab = np.column_stack([pd.to_numeric(table.get(f"label:{n}"), errors="coerce") for n in labels]).astype(float)
        out = np.column_stack([pd.to_numeric(table[f"score:{n}"], errors="coerce") for n in labels]).astype(float)
        return ids, groups, lab, out

    def label_table(self, labels: np.ndarray, names: list[str]) -> tuple[list[str], list[list[str]], list[str]]:
        """What ``data inspect`` shows of the labels: a table (header, rows) and problems found."""
        return ([], [], [])


def _float(v: Any) -> float:
    try:
        return float(v) if v is not None else math.nan
    except (TypeError, ValueError):
        return math.nan


def nanmean_rows(columns: list[np.ndarray], rows: int) -> np.ndarray:
    """The mean over ``columns`` (each ``(rows,)``) ignoring NaN, NaN where all are NaN, without warnings."""
    if not columns:
        return np.full(rows, np.nan)
    stack = np.stack(columns, axis=1)
    finite = np.isfinite(stack)
    count = finite.sum(axis=1)
    out = np.full(rows, np.nan)
    np.divide(np.where(finite, stack, 0.0).sum(axis=1), count, out=out, where=count > 0)
    return out


def with_score(kind: TaskKind, metrics: dict[str, Any]) -> dict[str, Any]:
    """Add the uniform keys every kind's metrics carry: ``metric`` (its name), ``score`` and ``score_ci``."""
    if kind.metric is None:
        return metrics
    value = metrics.get(kind.metric, math.nan)
    return {**metrics, "metric": kind.metric, "score": value, "score_ci": metrics.get(f"{kind.metric}_ci")}


TASK_KINDS: Registry[TaskKind] = Registry(
    "task kind",
    builtins=tuple(f"medtransfer.tasks.{m}" for m in ("classification", "regression", "segmentation", "unlabelled")),
)


def builtin_kinds() -> Registry[TaskKind]:
    """The registry of task kinds (its built-in modules are imported on the first lookup)."""
    return TASK_KINDS


def task_kind(name: str) -> TaskKind:
    """The registered kind ``name`` (an unknown name fails with close matches)."""
    return builtin_kinds().get(name)


RESOLVERS.register("task", task_kind)  # the config loader checks ``task:`` with it


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
