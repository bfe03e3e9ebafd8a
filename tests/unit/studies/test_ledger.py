"""The ledger's state machine: legal transitions only, recovery of interrupted trials, atomic rows."""

from __future__ import annotations

import pytest

from medtransfer.studies.config import StudySection
from medtransfer.studies.grid import expand
from medtransfer.studies.ledger import Ledger, LedgerError


@pytest.fixture
def ledger(tmp_path):
    trials = expand(StudySection(n=[5, "all"], sources=["scratch"], strategies=["finetune"], seeds=[0, 1]), 10)
    led = Ledger(tmp_path / "study.sqlite")
    assert led.add(trials) == 4
    yield led, trials
    led.close()


def test_lifecycle_and_counts(ledger):
    led, trials = ledger
    a, b = trials[0].id, trials[1].id
    assert led.counts() == {"pending": 4, "running": 0, "done": 0, "failed": 0}
    led.start(a, "w1")
    led.finish(a, {"auc": 0.75, "auc_ci": [0.6, 0.9]}, seconds=3.0, peak_rss_mb=100.0)
    led.start(b, "w1")
    led.fail(b, "TrainingFailed: loss became nan", seconds=1.0)
    row = led.get(a)
    assert (row["status"], row["score"], row["metric"], row["attempts"], row["seconds"]) == (
        "done",
        0.75,
        "auc",
        1,
        3.0,
    )
    assert row["metrics"]["auc_ci"] == [0.6, 0.9] and row["peak_rss_mb"] == 100.0
    assert led.get(b)["error"] == "TrainingFailed: loss became nan"
    assert led.counts() == {"pending": 2, "running": 0, "done": 1, "failed": 1}
    assert led.pending() == [trials[2].id, trials[3].id]  # grid order


@pytest.mark.parametrize(
    "steps, bad",
    [
        ([], "finish"),  # pending → done skips running
        ([], "fail"),
        ([], "requeue"),
        (["start"], "start"),  # running twice
        (["start", "finish"], "start"),  # a done trial never runs again
        (["start", "finish"], "fail"),
        (["start", "fail"], "finish"),
    ],
)
def test_illegal_transitions_raise(ledger, steps, bad):
    led, trials = ledger
    tid = trials[0].id
    calls = {
        "start": lambda: led.start(tid, "w"),
        "finish": lambda: led.finish(tid, {"auc": 0.5}, 1.0),
        "fail": lambda: led.fail(tid, "x"),
        "requeue": lambda: led.requeue(tid),
    }
    for step in steps:
        calls[step]()
    before = led.get(tid)
    with pytest.raises(LedgerError, match="cannot go"):
        calls[bad]()
    assert led.get(tid) == before  # the failed transition changed nothing


def test_recover_requeues_running_and_keeps_the_rest(ledger, tmp_path):
    led, trials = ledger
    led.start(trials[0].id, "w")
    led.finish(trials[0].id, {"auc": 0.6}, 1.0)
    led.start(trials[1].id, "w")  # the driver dies here
    led.close()
    again = Ledger(tmp_path / "study.sqlite")  # a new process opens the file
    assert again.add(trials) == 0  # resuming adds nothing
    assert again.recover() == [trials[1].id]
    assert again.get(trials[1].id)["status"] == "pending"
    assert again.get(trials[1].id)["attempts"] == 1
    assert again.get(trials[0].id)["status"] == "done"
    again.start(trials[1].id, "w")
    assert again.get(trials[1].id)["attempts"] == 2
    again.close()


def test_retry_failed_and_meta(ledger):
    led, trials = ledger
    led.start(trials[0].id, "w")
    led.fail(trials[0].id, "out of memory")
    assert led.retry_failed() == 1
    assert led.get(trials[0].id)["status"] == "pending"
    led.set_meta("config", "{}")
    assert led.get_meta("config") == "{}" and led.get_meta("missing") is None


def test_requeue_with_refund_takes_back_the_attempt(ledger):
    led, trials = ledger
    tid = trials[0].id
    led.start(tid, "w")
    led.requeue(tid, "worker pool broke; run again alone", refund=True)
    assert (led.get(tid)["status"], led.get(tid)["attempts"]) == ("pending", 0)
    led.start(tid, "w")
    led.requeue(tid, "worker process died")
    assert led.get(tid)["attempts"] == 1


def test_a_ledger_from_before_the_task_kinds_is_migrated(tmp_path):
    """Older ledgers kept the score in an `auc` column (AUC or Dice): it becomes `score`, with the metric's name."""
    import json
    import sqlite3

    path = tmp_path / "study.sqlite"
    with sqlite3.connect(path) as db:
        db.execute(
            "CREATE TABLE trials (id TEXT PRIMARY KEY, position INTEGER NOT NULL, arm TEXT NOT NULL,"
            " kind TEXT NOT NULL, source TEXT, strategy TEXT, n INTEGER NOT NULL, n_label TEXT NOT NULL,"
            " seed INTEGER NOT NULL,"
            " folder TEXT NOT NULL, status TEXT NOT NULL DEFAULT 'pending', attempts INTEGER NOT NULL DEFAULT 0,"
            " started REAL, finished REAL, seconds REAL, auc REAL, metrics TEXT, error TEXT, worker TEXT,"
            " peak_rss_mb REAL, peak_gpu_mb REAL)"
        )
        db.execute("CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL)")
        db.execute(
            "INSERT INTO trials (id, position, arm, kind, n, n_label, seed, folder, status, auc, metrics) VALUES "
            "('t1', 0, 'a', 'net', 10, '10', 0, 'f', 'done', 0.81, ?)",
            (json.dumps({"auc": 0.81, "auc_ci": [0.7, 0.9]}),),
        )
    with Ledger(path, create=False) as led:
        (row,) = led.rows()
    assert (row["score"], row["metric"]) == (0.81, "auc") and "auc" not in row
