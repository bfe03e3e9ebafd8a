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
    if pos_weight and kind != "multiclass":
        pos = np.nansum(labels == 1, axis=0).astype(np.float64)
        neg = np.nansum(labels == 0, axis=0).astype(np.float64)
        pw = torch.tensor(np.where(pos > 0, neg / np.maximum(pos, 1), 1.0), dtype=torch.float32)
    return Task(kind, k, pw)
