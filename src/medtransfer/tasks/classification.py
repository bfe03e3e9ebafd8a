"""Classification kinds: ``binary`` (one 0/1 label), ``multilabel`` (several 0/1 findings, NaN = unknown) and
``multiclass`` (one-hot over K classes).

* loss: BCE-with-logits over the K columns with NaN labels masked out (optional ``pos_weight`` = n_neg / n_pos
  per label), or cross-entropy over classes (rows of unknown class ignored); the head's bias starts at the
  training prevalence (:meth:`ClassificationTask.init_head`);
* outputs: probabilities (sigmoid per label, softmax over classes);
* metric: macro AUC with a patient-bootstrap 95 % CI; thresholds by Youden's J on validation (not multiclass);
* calibration: Brier score and expected calibration error (10 equal-width bins) with the reliability bins, and
  optional temperature scaling fitted on validation (``eval.calibrate: temperature``);
* paired test between two models on the same images: DeLong's test of the macro AUC difference (per label,
  averaged p-values are not reported: the first label's test for one label, else the mean difference).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field, replace
from typing import Any, ClassVar

import numpy as np
import torch
import torch.nn.functional as F

from medtransfer.errors import ConfigError
from medtransfer.evaluation.calibration import calibration_metrics, fit_temperature
from medtransfer.evaluation.metrics import choose_threshold, macro_auc, per_label_auc, summarize
from medtransfer.evaluation.stats import delong_test, weighted_auc
from medtransfer.tasks.base import TASK_KINDS, TaskKind, nanmean_rows


@dataclass
class ClassificationTask:
    """What the training loop calls for a classification kind: loss, scores (probabilities), head init."""

    kind_name: str  # binary | multiclass | multilabel
    num_labels: int
    pos_weight: torch.Tensor | None = None
    prior_bias: torch.Tensor | None = None  # the output bias that predicts the training prevalence
    temperature: float = 1.0  # eval.calibrate: temperature: probabilities from logits / T, T fitted on validation
    exclusive: bool = field(init=False)  # the kind's one_hot, looked up once (loss and scores run every step)

    def __post_init__(self) -> None:
        self.exclusive = self.kind.one_hot

    @property
    def kind(self) -> TaskKind:
        return TASK_KINDS.get(self.kind_name)

    @property
    def num_outputs(self) -> int:
        return self.num_labels

    def to(self, device) -> ClassificationTask:
        """A copy whose tensors live on ``device`` (once, not a host → device copy inside every loss)."""
        if self.pos_weight is None:
            return self
        return replace(self, pos_weight=self.pos_weight.to(device))

    def state(self) -> dict[str, Any]:
        return {"temperature": self.temperature} if self.temperature != 1.0 else {}

    def init_head(self, model: torch.nn.Module) -> bool:
        """Set the bias of the head's last linear layer to :attr:`prior_bias` (RetinaNet's "prior" init).

        Why: pooled post-ReLU features are all positive, so at the start every weight gets a gradient of the
        same sign from the class imbalance alone; Adam moves all of them by ~lr per step and the head learns the
        prevalence through ``w · mean(features)`` instead of its bias, which fixes an arbitrary (here: wrong)
        ranking direction. Measured: a linear probe on random ResNet-18 features of PneumoniaMNIST (N = 50) got
        val AUC 0.36 with a zero-initialised bias. Returns whether a bias was set.
        """
        return set_head_bias(model, self.prior_bias, self.num_labels)

    def loss(self, logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        if self.exclusive:
            known = torch.isfinite(targets).all(dim=1)
            cls = torch.nan_to_num(targets).argmax(dim=1)
            # mean over known rows; a batch without any known row gives 0 (no gradient), not NaN
            per_row = F.cross_entropy(logits.float(), cls, reduction="none")
            return (per_row * known).sum() / known.sum().clamp(min=1)
        mask = torch.isfinite(targets)
        pw = self.pos_weight.to(logits.device) if self.pos_weight is not None else None
        per = F.binary_cross_entropy_with_logits(
            logits.float(), torch.nan_to_num(targets), pos_weight=pw, reduction="none"
        )
        return (per * mask).sum() / mask.sum().clamp(min=1)

    def scores(self, logits: torch.Tensor) -> torch.Tensor:
        """Probabilities: softmax over classes (multi-class) or per-label sigmoid, of ``logits / temperature``."""
        z = logits.float() / self.temperature
        return z.softmax(dim=1) if self.exclusive else z.sigmoid()

    def calibrate(self, logits: np.ndarray, labels: np.ndarray) -> float:
        """Fit the temperature on validation ``logits`` (temperature scaling); returns it and uses it from now on."""
        self.temperature = float(fit_temperature(logits, labels, exclusive=self.exclusive))
        return self.temperature


def set_head_bias(model: torch.nn.Module, bias: torch.Tensor | None, num_outputs: int) -> bool:
    """Copy ``bias`` into the bias of the head's last linear layer when it has ``num_outputs`` outputs."""
    if bias is None:
        return False
    linears = [m for m in getattr(model, "head", model).modules() if isinstance(m, torch.nn.Linear)]
    if not linears or linears[-1].bias is None or linears[-1].bias.shape[0] != num_outputs:
        return False
    with torch.no_grad():
        linears[-1].bias.copy_(bias.to(linears[-1].bias))
    return True


class _Classification(TaskKind):
    ledger_keys = (
        "n_pos",
        "n_neg",
        "accuracy",
        "sensitivity",
        "specificity",
        "operating_point",
        "brier",
        "ece",
        "calibration",
    )
    metric = "auc"
    metric_label = "AUC"
    metric_phrase = "an AUC"
    higher_is_better = True
    unit_interval = True
    probabilities = True
    paired_test: ClassVar[str] = "DeLong test"
    one_hot: ClassVar[bool] = False

    def runtime(self, labels: np.ndarray, *, pos_weight: bool = False, loss: str | None = None) -> ClassificationTask:
        if loss is not None:
            raise ConfigError(f"train.loss applies to regression; task {self.name} has its own loss (set it to null)")
        self.check_labels(labels, ())
        k = labels.shape[1]
        pos = np.nansum(labels == 1, axis=0).astype(np.float64)
        neg = np.nansum(labels == 0, axis=0).astype(np.float64)
        pw = None
        if pos_weight and not self.one_hot:
            pw = torch.tensor(np.where(pos > 0, neg / np.maximum(pos, 1), 1.0), dtype=torch.float32)
        return ClassificationTask(self.name, k, pw, self._prior_bias(pos, neg, pw))

    def restore(self, num_outputs: int, state: dict[str, Any]) -> ClassificationTask:
        return ClassificationTask(self.name, num_outputs, temperature=float(state.get("temperature", 1.0)))

    def _prior_bias(self, pos: np.ndarray, neg: np.ndarray, pw: torch.Tensor | None) -> torch.Tensor:
        """log-odds of each label's prevalence (times ``pos_weight``, which moves the loss's optimum), or, for a
        multi-class task, the log class frequencies; clipped so that a label seen in one class only stays finite."""
        total = np.maximum(pos + neg, 1.0)
        p = np.clip(pos / total, 1e-3, 1 - 1e-3)
        if self.one_hot:
            bias = np.log(p / p.sum())
        else:
            bias = np.log(p / (1 - p))
            if pw is not None:
                bias = bias + np.log(pw.numpy().astype(np.float64))
        return torch.tensor(bias, dtype=torch.float32)

    def strata(self, labels: np.ndarray) -> np.ndarray:
        known = np.isfinite(labels)
        if labels.shape[1] == 0:
            return np.zeros(len(labels), dtype=np.int64)
        return np.where(known[:, 0], labels[:, 0], -1).astype(np.int64)

    def validation_score(self, labels: np.ndarray, outputs: np.ndarray) -> float:
        return macro_auc(per_label_auc(labels, outputs, [str(k) for k in range(labels.shape[1])]))

    def _summarize(self, labels, outputs, names, *, patient_ids, thresholds, n_boot, seed) -> dict[str, Any]:
        out = summarize(
            labels,
            outputs,
            names,
            exclusive=self.one_hot,
            patient_ids=patient_ids,
            thresholds=thresholds,
            n_boot=n_boot,
            seed=seed,
        )
        cal = calibration_metrics(labels, outputs, names, exclusive=self.one_hot)
        out.update(brier=cal["brier"], ece=cal["ece"], calibration=cal)
        return out

    def choose_thresholds(
        self, labels: np.ndarray, outputs: np.ndarray, names: list[str], rule: str = "youden"
    ) -> dict[str, float] | None:
        return {name: choose_threshold(labels[:, k], outputs[:, k], rule) for k, name in enumerate(names)}

    def logme_targets(self, column: np.ndarray) -> list[np.ndarray]:
        """Both classes of a 0/1 label as indicator targets (one-hot columns of a multi-class task: that class)."""
        if len(np.unique(column)) < 2:
            return []
        return [column] if self.one_hot else [column, 1.0 - column]

    def label_table(self, labels: np.ndarray, names: list[str]) -> tuple[list[str], list[list[str]], list[str]]:
        rows, problems = [], []
        for k, name in enumerate(names):
            col = labels[:, k]
            known = np.isfinite(col)
            n_pos, n_known = int((col[known] == 1).sum()), int(known.sum())
            prevalence = f"{n_pos / n_known:.1%}" if n_known else "-"
            rows.append([name, str(n_pos), str(n_known - n_pos), str(int((~known).sum())), prevalence])
            if n_known and n_pos in (0, n_known):
                problems.append(f"label '{name}' has only {'negatives' if n_pos == 0 else 'positives'}")
        return ["label", "positive", "negative", "unknown", "prevalence"], rows, problems

    def paired(
        self, labels: np.ndarray, outputs_a: np.ndarray, outputs_b: np.ndarray, groups: np.ndarray | None = None
    ) -> dict[str, float]:
        """DeLong's test per label (clustered by patient, Obuchowski 1997, when ``groups`` has patients with several
        images); with several labels the mean of a, b and delta (p, se and z need one label)."""
        res = [
            delong_test(labels[:, k], outputs_a[:, k], outputs_b[:, k], groups=groups) for k in range(labels.shape[1])
        ]
        if len(res) == 1:
            r = res[0]
            return {
                "delta": r["diff"],
                "p_value": r["p_value"],
                "a": r["auc_a"],
                "b": r["auc_b"],
                "se": r["se"],
                "z": r["z"],
            }
        mean = {k: float(np.nanmean([r[src] for r in res])) if res else math.nan for k, src in
                (("delta", "diff"), ("a", "auc_a"), ("b", "auc_b"))}  # fmt: skip
        return {**mean, "p_value": math.nan, "se": math.nan, "z": math.nan}

    def replicate_scores(self, labels: np.ndarray, outputs: np.ndarray, weights: np.ndarray) -> np.ndarray:
        """The macro AUC (mean over label columns, one-vs-rest for classes) under each row of case weights."""
        per_label = [weighted_auc(labels[:, k], outputs[:, k], weights) for k in range(labels.shape[1])]
        return nanmean_rows(per_label, len(weights))

    def constant_score(self, train_labels: np.ndarray | None, labels: np.ndarray | None) -> float:
        return 0.5  # a constant score ranks every pair as a tie


class Binary(_Classification):
    name = "binary"

    def check_labels(self, labels, names) -> None:
        super().check_labels(labels, names)
        if labels.shape[1] != 1:
            raise ConfigError(
                f"task 'binary' needs one label column, the data has {labels.shape[1]}; select one with data.labels"
            )


class Multilabel(_Classification):
    name = "multilabel"
    several_columns = True

    def after_selecting(self, n_kept: int) -> str:
        return "binary" if n_kept == 1 else self.name

    def strata(self, labels: np.ndarray) -> np.ndarray:
        """The rarest positive finding of each row (``K`` = none), so rare findings spread over the splits."""
        n, k = labels.shape
        if k == 0:
            return np.zeros(n, dtype=np.int64)
        pos = np.nan_to_num(labels) > 0
        prevalence = pos.mean(axis=0)
        rarity_rank = np.argsort(np.argsort(prevalence, kind="stable"), kind="stable")  # 0 = rarest label
        score = np.where(pos, rarity_rank[None, :], k)
        return np.where(pos.any(axis=1), score.argmin(axis=1), k).astype(np.int64)


class Multiclass(_Classification):
    name = "multiclass"
    one_hot = True

    def strata(self, labels: np.ndarray) -> np.ndarray:
        known = np.isfinite(labels).all(axis=1)
        return np.where(known, np.nan_to_num(labels).argmax(axis=1), -1).astype(np.int64)

    def choose_thresholds(self, labels, outputs, names, rule="youden") -> None:
        return None  # the class with the highest probability is the decision

    def label_text(self, names: list[str], row: np.ndarray) -> str:
        return names[int(np.nanargmax(row))] if np.isfinite(row).any() else "unknown"


TASK_KINDS.register("binary", Binary())
TASK_KINDS.register("multilabel", Multilabel())
TASK_KINDS.register("multiclass", Multiclass())
