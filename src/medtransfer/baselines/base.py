"""The registry of baseline arms (``study.baselines``): non-neural methods a study runs on the same training
subsets and test images as the networks.

A baseline is an object with ``features(images, idx, ...)`` (one row of numbers per image, cached as it likes),
``fit(x, y, task, seed)`` (a fitted model for any task kind it supports) and ``predict(fitted, x)`` (outputs of the
task kind: probabilities, or values in the target's unit). A second baseline is one module that registers an
instance here; :mod:`medtransfer.studies.trial` runs any of them the same way.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, ClassVar

import numpy as np

from medtransfer.registry import Registry


class Baseline:
    name: ClassVar[str] = ""
    description: ClassVar[str] = ""

    def check(self, task: str) -> None:
        """Raise a one-line :class:`~medtransfer.errors.UserError` when the baseline cannot run this task kind or
        its optional dependencies are missing (called when a study is planned, before any trial)."""

    def features(
        self, images: np.ndarray, idx: np.ndarray, cache_dir: Path, key: str, *, workers: int = 1, progress: bool = True
    ) -> np.ndarray:
        raise NotImplementedError

    def fit(self, x: np.ndarray, y: np.ndarray, task: str, seed: int) -> Any:
        raise NotImplementedError

    def predict(self, fitted: Any, x: np.ndarray) -> np.ndarray:
        raise NotImplementedError

    def describe(self, fitted: Any) -> dict[str, Any]:
        """What goes into the trial's ``metrics.json`` about the fitted model (e.g. the chosen regularisation)."""
        return {}


BASELINES: Registry[Baseline] = Registry("baseline", builtins=("medtransfer.baselines.radiomics",))


def builtin_baselines() -> Registry[Baseline]:
    """The registry of baselines (its built-in modules are imported on the first lookup)."""
    return BASELINES


def get_baseline(name: str) -> Baseline:
    return builtin_baselines().get(name)
