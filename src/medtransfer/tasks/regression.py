"""``regression``: one or more continuous targets (bone age in months, a dose, a volume), NaN = unknown.

* targets are standardised with the training split's mean and standard deviation; the head is linear and its
  outputs are mapped back to the target's unit, so predictions, metrics and ``predict``'s CSV are in that unit;
* loss (``train.loss``): ``l1`` (default: the MAE is the primary metric), ``mse`` or ``huber`` (δ = 1 standard
  deviation), on the standardised targets, NaN entries masked out;
* augmentation: no random zoom unless ``train.zoom: true`` (the kind's default; a target in pixels changes with it);
* metrics: MAE (primary, lower is better), RMSE and R², with patient-bootstrap 95 % CIs
  (:mod:`medtransfer.evaluation.regression`);
* splits are stratified by quantile bins of the first target (5 bins), patient-grouped like the others;
* paired test between two models on the same images: a paired bootstrap over images of the MAE difference, so
  the sign of ΔMAE and its test are about the same statistic.
"""

from __future__ import annotations

import copy
import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from medtransfer.errors import ConfigError
from medtransfer.evaluation.regression import paired_errors_test, regression_metrics
from medtransfer.tasks.base import TASK_KINDS, TaskKind, nanmean_rows
from medtransfer.tasks.classification import set_head_bias

LOSSES = ("l1", "mse", "huber")
STRATA_BINS = 5


@dataclass
class RegressionTask:
    """Loss on standardised targets; ``scores`` returns predictions in the target's unit."""

    num_targets: int
    center: list[float] = field(default_factory=list)
    scale: list[float] = field(default_factory=list)
    loss_name: str = "l1"
    # the scale as tensors, made once (and moved once by ``to``), not in every loss and scores call
    _center: torch.Tensor = field(init=False, repr=False)
    _scale: torch.Tensor = field(init=False, repr=False)

    def __post_init__(self) -> None:
        self._center = torch.tensor(self.center, dtype=torch.float32)
        self._scale = torch.tensor(self.scale, dtype=torch.float32)

    @property
    def kind(self) -> TaskKind:
        return TASK_KINDS.get("regression")

    @property
    def num_outputs(self) -> int:
        return self.num_targets

    def to(self, device) -> RegressionTask:
        moved = copy.copy(self)
        moved._center, moved._scale = self._center.to(device), self._scale.to(device)
        return moved

    def state(self) -> dict[str, Any]:
        return {"center": self.center, "scale": self.scale, "loss": self.loss_name}

    def init_head(self, model: torch.nn.Module) -> bool:
        """The standardised targets have mean 0: a zero bias already predicts the training mean."""
        return set_head_bias(model, torch.zeros(self.num_targets), self.num_targets)

    def loss(self, logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        mask = torch.isfinite(targets)
        c, s = self._center.to(targets.device), self._scale.to(targets.device)  # no copy after ``to(device)``
        z = torch.nan_to_num((targets.float() - c) / s)
        out = logits.float()
        if self.loss_name == "mse":
            per = F.mse_loss(out, z, reduction="none")
        elif self.loss_name == "huber":
            per = F.huber_loss(out, z, reduction="none", delta=1.0)
        else:
            per = F.l1_loss(out, z, reduction="none")
        return (per * mask).sum() / mask.sum().clamp(min=1)

    def scores(self, logits: torch.Tensor) -> torch.Tensor:
        """Predictions in the target's unit."""
        return logits.float() * self._scale.to(logits.device) + self._center.to(logits.device)


class Regression(TaskKind):
    name = "regression"
    metric = "mae"
    metric_label = "MAE"
    metric_phrase = "an MAE"
    higher_is_better = False
    unit_interval = False
    metric_floor = 0.0
    probabilities = False
    paired_test = "paired bootstrap of the MAE difference over images"
    secondary_metrics = ("rmse", "r2")
    ledger_keys = ("rmse", "rmse_ci", "r2", "r2_ci", "per_target")
    several_columns = True
    # no random resized crop by default: a target in pixels (HC18's head circumference) changes with a zoom, and the
    # label noise it adds cost 4.6 px of validation MAE there (24.0 against 19.4; docs/benchmarks.md)
    zoom = False

    def check_labels(self, labels: np.ndarray, names) -> None:
        super().check_labels(labels, names)
        for k in range(labels.shape[1]):
            col = labels[:, k]
            known = col[np.isfinite(col)]
            name = names[k] if len(names) > k else f"target {k}"
            if len(known) < 2:
                raise ConfigError(f"regression target '{name}' has {len(known)} known value(s); it needs at least 2")
            if np.ptp(known) == 0:
                raise ConfigError(
                    f"regression target '{name}' is constant ({known[0]:g} in every row): nothing to learn; "
                    "check data.labels"
                )

    def runtime(self, labels: np.ndarray, *, pos_weight: bool = False, loss: str | None = None) -> RegressionTask:
        if pos_weight:
            raise ConfigError("train.pos_weight weights positive labels; a regression task has none: set it to false")
        loss = loss or "l1"
        if loss not in LOSSES:
            raise ConfigError(f"train.loss must be one of {list(LOSSES)} for regression, got {loss!r}")
        self.check_labels(labels, ())
        center = np.nanmean(labels, axis=0)
        scale = np.nanstd(labels, axis=0)
        return RegressionTask(labels.shape[1], center.tolist(), np.where(scale > 0, scale, 1.0).tolist(), loss)

    def restore(self, num_outputs: int, state: dict[str, Any]) -> RegressionTask:
        if not state.get("center"):
            raise ConfigError("the model file lacks its target scale (task_state); it was not written by this version")
        return RegressionTask(num_outputs, list(state["center"]), list(state["scale"]), state.get("loss", "l1"))

    def strata(self, labels: np.ndarray) -> np.ndarray:
        """Quantile bins of the first target (``-1``: unknown)."""
        if labels.shape[1] == 0:
            return np.zeros(len(labels), dtype=np.int64)
        y = labels[:, 0]
        known = np.isfinite(y)
        out = np.full(len(y), -1, dtype=np.int64)
        if known.sum() == 0:
            return out
        edges = np.unique(np.quantile(y[known], np.linspace(0, 1, STRATA_BINS + 1)[1:-1]))
        out[known] = np.searchsorted(edges, y[known], side="right")
        return out

    def validation_score(self, labels: np.ndarray, outputs: np.ndarray) -> float:
        err = np.abs(outputs - labels)
        return float(np.nanmean(err)) if np.isfinite(err).any() else math.inf

    def _summarize(self, labels, outputs, names, *, patient_ids, thresholds, n_boot, seed) -> dict[str, Any]:
        return regression_metrics(labels, outputs, names, patient_ids=patient_ids, n_boot=n_boot, seed=seed)

    def paired(
        self, labels: np.ndarray, outputs_a: np.ndarray, outputs_b: np.ndarray, groups: np.ndarray | None = None
    ) -> dict[str, float]:
        res = paired_errors_test(labels, outputs_a, outputs_b, groups=groups)
        a, b = self.validation_score(labels, outputs_a), self.validation_score(labels, outputs_b)
        return {"delta": res["delta_mae"], "p_value": res["p_value"], "a": a, "b": b, "se": res["se"], "z": math.nan}

    def replicate_scores(self, labels: np.ndarray, outputs: np.ndarray, weights: np.ndarray) -> np.ndarray:
        """The MAE (mean over targets) under each row of case weights ``(B, N)``."""
        per_target = []
        for k in range(labels.shape[1]):
            known = np.isfinite(labels[:, k]) & np.isfinite(outputs[:, k])
            w = weights[:, known]
            with np.errstate(invalid="ignore", divide="ignore"):
                per_target.append(w @ np.abs(outputs[known, k] - labels[known, k]) / w.sum(axis=1))
        return nanmean_rows(per_target, len(weights))

    def constant_score(self, train_labels: np.ndarray | None, labels: np.ndarray | None) -> float:
        """The MAE of predicting the training mean of each target (NaN without labels)."""
        if train_labels is None or labels is None or not np.isfinite(train_labels).any():
            return math.nan
        mean = np.nanmean(train_labels, axis=0)
        err = np.abs(labels - mean[None, :])
        return float(np.nanmean(np.nanmean(err, axis=0))) if np.isfinite(err).any() else math.nan

    def default_margin(self, reference: float) -> float:
        """5 % of the reference's MAE: an MAE has no scale of its own (pixels, mm, years)."""
        return 0.05 * abs(reference) if math.isfinite(reference) else math.nan

    def prediction_columns(self, names: list[str]) -> list[str]:
        return [f"pred_{n}" for n in names]

    def label_text(self, names: list[str], row: np.ndarray) -> str:
        return ", ".join(f"{n} = {v:.4g}" for n, v in zip(names, row, strict=False))

    def logme_targets(self, column: np.ndarray) -> list[np.ndarray]:
        """LogME is defined for regression (You et al. 2021): the standardised target itself."""
        sd = column.std()
        return [(column - column.mean()) / sd] if sd > 0 else []

    def label_table(self, labels: np.ndarray, names: list[str]) -> tuple[list[str], list[list[str]], list[str]]:
        """Mean, sd, range and a 10-bin histogram per target instead of a class table."""
        header = ["target", "known", "unknown", "mean", "sd", "min", "max", "histogram (10 bins, min → max)"]
        rows, problems = [], []
        for k, name in enumerate(names):
            col = labels[:, k]
            known = col[np.isfinite(col)]
            if len(known) == 0:
                rows.append([name, "0", str(len(col)), "-", "-", "-", "-", ""])
                problems.append(f"target '{name}' has no known value")
                continue
            counts, _ = np.histogram(known, bins=10)
            bars = "▁▂▃▄▅▆▇█"
            spark = "".join(bars[min(7, int(8 * c / max(counts.max(), 1)))] if c else " " for c in counts)
            rows.append(
                [
                    name,
                    str(len(known)),
                    str(len(col) - len(known)),
                    f"{known.mean():.4g}",
                    f"{known.std(ddof=1) if len(known) > 1 else 0:.4g}",
                    f"{known.min():.4g}",
                    f"{known.max():.4g}",
                    f"{spark}  {' '.join(str(int(c)) for c in counts)}",
                ]
            )
            if np.ptp(known) == 0:
                problems.append(f"target '{name}' is constant ({known[0]:g}): nothing to learn")
        return header, rows, problems


TASK_KINDS.register("regression", Regression())
