"""A toy volumetric task kind, in one module: all a new 3-D kind takes (tests/unit/pipelines/test_pipelines.py).

It scores volumes as segmentation does; what makes it volumetric is ``family = "volumes"``, which routes
``train``, ``evaluate``, the study planner and a study's trials through the volumes pipeline.
"""

from __future__ import annotations

from medtransfer.tasks.base import TASK_KINDS
from medtransfer.tasks.segmentation import Segmentation


class ToyVolumes(Segmentation):
    name = "toy_volumes"
    metric_label = "toy Dice"
    family = "volumes"


TASK_KINDS.register("toy_volumes", ToyVolumes())
