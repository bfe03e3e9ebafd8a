"""The training loop's view of a task: an object with ``loss(logits, targets)``, ``scores(logits)`` (the outputs:
probabilities, or predictions in the target's unit), ``init_head(model)``, ``to(device)`` and ``state()``.

Each task kind builds its own (:meth:`medtransfer.tasks.base.TaskKind.runtime`); this module keeps the short names
the loop and its tests use.
"""

from __future__ import annotations

import numpy as np

from medtransfer.tasks.base import task_kind
from medtransfer.tasks.classification import ClassificationTask

Task = ClassificationTask  # ``Task("binary", 1)``: a classification task without training-label statistics


def make_task(kind: str, labels: np.ndarray, pos_weight: bool = False, loss: str | None = None):
    """The task object of kind ``kind`` fitted to the training labels ``(N, K)`` (prevalence, target scale)."""
    return task_kind(kind).runtime(labels, pos_weight=pos_weight, loss=loss)
