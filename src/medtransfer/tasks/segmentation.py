"""``segmentation``: 3-D volumes with label masks (MSD, NIfTI folders). Its training and evaluation live in
:mod:`medtransfer.segmentation`; this kind tells studies and reports what its score is: mean Dice over the
foreground classes (higher is better, in [0, 1]) with a bootstrap CI over cases."""

from __future__ import annotations

import numpy as np

from medtransfer.tasks.base import TASK_KINDS, TaskKind


class Segmentation(TaskKind):
    name = "segmentation"
    metric = "dice"
    metric_label = "Dice"
    metric_phrase = "a Dice score"
    higher_is_better = True
    unit_interval = True
    volumetric = True
    paired_test = "paired t (per-case Dice)"

    def replicate_scores(self, labels: np.ndarray, outputs: np.ndarray, weights: np.ndarray) -> np.ndarray:
        """Mean per-case Dice under each row of case weights; ``outputs[:, 0]`` is each case's Dice (labels unused)."""
        dice = outputs[:, 0]
        known = np.isfinite(dice)
        w = weights[:, known]
        with np.errstate(invalid="ignore", divide="ignore"):
            return w @ dice[known] / w.sum(axis=1)

    def constant_score(self, train_labels: np.ndarray | None, labels: np.ndarray | None) -> float:
        return 0.0  # an empty mask

    def prediction_columns(self, names: list[str]) -> list[str]:
        return [f"dice_{n}" for n in names]


TASK_KINDS.register("segmentation", Segmentation())
