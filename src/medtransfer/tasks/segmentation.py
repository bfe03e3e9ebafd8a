"""``segmentation``: 3-D volumes with label masks (MSD, NIfTI folders). Its training and evaluation live in
:mod:`medtransfer.segmentation`; this kind tells studies and reports what its score is: mean Dice over the
foreground classes (higher is better, in [0, 1]) with a bootstrap CI over cases."""

from __future__ import annotations

import numpy as np
import pandas as pd

from medtransfer.tasks.base import TASK_KINDS, TaskKind, nanmean_rows


class Segmentation(TaskKind):
    name = "segmentation"
    metric = "dice"
    metric_label = "Dice"
    metric_phrase = "a Dice score"
    higher_is_better = True
    unit_interval = True
    family = "volumes"
    unit = "cases"
    ledger_keys = ("hd95", "hd95_inf", "val_dice")
    prediction_files = ("cases.csv",)
    paired_test = "paired t (per-case Dice)"

    def replicate_scores(self, labels: np.ndarray, outputs: np.ndarray, weights: np.ndarray) -> np.ndarray:
        """Mean per-case Dice under each row of case weights; ``outputs[:, 0]`` is each case's Dice (labels unused)."""
        dice = outputs[:, 0]
        known = np.isfinite(dice)
        w = weights[:, known]
        with np.errstate(invalid="ignore", divide="ignore"):
            return w @ dice[known] / w.sum(axis=1)

    def prediction_arrays(self, table: pd.DataFrame) -> tuple[pd.Series, pd.Series, np.ndarray, np.ndarray] | None:
        """A run's ``cases.csv``: one row per case, its outputs the case's mean Dice over the classes it has
        (``dice:<class>``; NaN where none), no labels."""
        dice_cols = [c for c in table.columns if str(c).startswith("dice:")]
        if "case" not in table.columns or not dice_cols:
            return None
        ids = table["case"].astype(str)
        values = table[dice_cols].apply(pd.to_numeric, errors="coerce").to_numpy(dtype=float)
        outputs = nanmean_rows(list(values.T), len(values))[:, None]
        return ids, ids, np.full_like(outputs, np.nan), outputs

    def constant_score(self, train_labels: np.ndarray | None, labels: np.ndarray | None) -> float:
        return 0.0  # an empty mask

    def prediction_columns(self, names: list[str]) -> list[str]:
        return [f"dice_{n}" for n in names]


TASK_KINDS.register("segmentation", Segmentation())
