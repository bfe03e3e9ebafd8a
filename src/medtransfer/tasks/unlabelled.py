"""``unlabelled``: images without labels (an archive for self-supervised pretraining); no metric, no supervised
training."""

from __future__ import annotations

from medtransfer.errors import ConfigError
from medtransfer.tasks.base import TASK_KINDS, TaskKind


class Unlabelled(TaskKind):
    name = "unlabelled"
    supervised = False

    def check_labels(self, labels, names) -> None:
        raise ConfigError(
            "the data has no labels; a supervised task needs label columns (data.labels), "
            "or pretrain it with pretrain.method=simclr"
        )

    def runtime(self, labels, *, pos_weight=False, loss=None):
        self.check_labels(labels, ())


TASK_KINDS.register("unlabelled", Unlabelled())
