"""Task objects turn a batch into a loss and scores; models hold no loss code.

* ``binary`` / ``multilabel``: BCE-with-logits over the K columns, NaN labels masked out (a finding not
  annotated for an image contributes nothing), optional ``pos_weight`` = n_neg / n_pos per label;
* ``multiclass``: cross-entropy over K classes; rows with unknown class are ignored.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

from medtransfer.errors import ConfigError


@dataclass
class Task:
    kind: str  # binary | multiclass | multilabel
    num_labels: int
    pos_weight: torch.Tensor | None = None
    prior_bias: torch.Tensor | None = None  # the output bias that predicts the training prevalence

    def init_head(self, model: torch.nn.Module) -> bool:
        """Set the bias of the head's last linear layer to :attr:`prior_bias` (RetinaNet's "prior" init).

        Why: pooled post-ReLU features are all positive, so at the start every weight gets a gradient of the
        same sign from the class imbalance alone; Adam moves all of them by ~lr per step and the head learns the
        prevalence through ``w · mean(features)`` instead of its bias, which fixes an arbitrary (here: wrong)
        ranking direction. Measured: a linear probe on random ResNet-18 features of PneumoniaMNIST (N = 50) got
        val AUC 0.36 with a zero-initialised bias. Returns whether a bias was set.
        """
        if self.prior_bias is None:
            return False
        linears = [m for m in getattr(model, "head", model).modules() if isinstance(m, torch.nn.Linear)]
        if not linears or linears[-1].bias is None or linears[-1].bias.shape[0] != self.num_labels:
            return False
        with torch.no_grad():
            linears[-1].bias.copy_(self.prior_bias.to(linears[-1].bias))
        return True

    def loss(self, logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        if self.kind == "multiclass":
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
        """Probabilities: softmax over classes (multi-class) or per-label sigmoid."""
        return logits.float().softmax(dim=1) if self.kind == "multiclass" else logits.float().sigmoid()


def make_task(kind: str, labels: np.ndarray, pos_weight: bool = False) -> Task:
    """Build the task for a training label array ``(N, K)``."""
    if kind not in ("binary", "multiclass", "multilabel"):
        raise ConfigError(f"task '{kind}' cannot be trained; use binary, multiclass or multilabel (data has labels?)")
    k = labels.shape[1]
    if k == 0:
        raise ConfigError("the dataset has no labels; a supervised task needs label columns (data.labels)")
    if kind == "binary" and k != 1:
        raise ConfigError(f"task 'binary' needs one label column, the data has {k}; select one with data.labels")
    pw = None
    pos = np.nansum(labels == 1, axis=0).astype(np.float64)
    neg = np.nansum(labels == 0, axis=0).astype(np.float64)
    if pos_weight and kind != "multiclass":
        pw = torch.tensor(np.where(pos > 0, neg / np.maximum(pos, 1), 1.0), dtype=torch.float32)
    return Task(kind, k, pw, _prior_bias(kind, pos, neg, pw))


def _prior_bias(kind: str, pos: np.ndarray, neg: np.ndarray, pw: torch.Tensor | None) -> torch.Tensor:
    """log-odds of each label's prevalence (times ``pos_weight``, which moves the loss's optimum), or, for a
    multi-class task, the log class frequencies; clipped so that a label seen in one class only stays finite."""
    total = np.maximum(pos + neg, 1.0)
    p = np.clip(pos / total, 1e-3, 1 - 1e-3)
    if kind == "multiclass":
        bias = np.log(p / p.sum())
    else:
        bias = np.log(p / (1 - p))
        if pw is not None:
            bias = bias + np.log(pw.numpy().astype(np.float64))
    return torch.tensor(bias, dtype=torch.float32)
