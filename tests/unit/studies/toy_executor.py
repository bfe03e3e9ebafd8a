"""A toy executor, all in this one module: what a new executor needs (its settings, ``check``, ``run``, one
registration) and nothing else edited. It runs the trials in the driver, in the order its settings say, and labels
them in the ledger. ``test_executors.py`` imports it for one test at a time and removes the registration after."""

from __future__ import annotations

import os
from dataclasses import dataclass

from medtransfer.config import bad_value
from medtransfer.errors import UserError
from medtransfer.studies.executors import EXECUTORS, Executor, record_result


@dataclass(frozen=True)
class ToySettings:
    """``study.executors.toy``."""

    label: str = "toy"  # the ledger's worker column: "toy <label> pid N"
    order: str = "given"  # given | reversed: the order the pending trials run in

    def __post_init__(self) -> None:
        if self.order not in ("given", "reversed"):
            raise bad_value("study.executors.toy.order", self.order, "given or reversed")


class ToyExecutor(Executor):
    name = "toy"
    Settings = ToySettings

    def __init__(self) -> None:
        self.checked, self.ran = [], []  # what the test looks at

    def check(self, study) -> None:
        self.checked.append(study.executor)
        if self.settings(study).label == "refuse":
            raise UserError("study.executors.toy.label=refuse: the toy executor refuses before planning")

    def run(self, ledger, todo, ctx, workers, bar) -> None:
        from medtransfer.studies.trial import run_trial

        settings = self.settings(ctx.cfg.study)
        for trial in reversed(todo) if settings.order == "reversed" else todo:
            ledger.start(trial.id, f"toy {settings.label} pid {os.getpid()}")
            bar.running(trial)
            self.ran.append(trial.id)
            record_result(ledger, run_trial(ctx, trial))
            bar.update()


EXECUTORS.register(ToyExecutor.name, ToyExecutor())
