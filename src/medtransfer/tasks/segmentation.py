"""``segmentation``: 3-D volumes with label masks (MSD, NIfTI folders). Its training and evaluation live in
:mod:`medtransfer.segmentation`; this kind tells studies and reports what its score is: mean Dice over the
foreground classes (higher is better, in [0, 1]) with a bootstrap CI over cases."""

from __future__ import annotations

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

    def prediction_columns(self, names: list[str]) -> list[str]:
        return [f"dice_{n}" for n in names]


TASK_KINDS.register("segmentation", Segmentation())
