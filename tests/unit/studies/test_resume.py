"""kill -9 a running study twice at different moments, resume it, and get the results of an uninterrupted run."""

from __future__ import annotations

import os
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import yaml

COLUMNS = ["id", "arm", "n", "seed", "status", "auc", "auc_ci_lo", "auc_ci_hi"]


def _study(config: Path, out: Path, *extra: str) -> subprocess.Popen:
    cmd = [sys.executable, "-m", "medtransfer", "study", str(config), "--out", str(out), *extra]
    return subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)


def _status(out: Path) -> dict[str, str]:
    try:
        with sqlite3.connect(out / "study.sqlite", timeout=5) as db:
            return dict(db.execute("SELECT id, status FROM trials").fetchall())
    except sqlite3.Error:
        return {}


def _kill_when(proc: subprocess.Popen, out: Path, ready, timeout: float = 240) -> None:
    end = time.time() + timeout
    while time.time() < end:
        if proc.poll() is not None:
            raise AssertionError(f"the study ended before it could be killed: {proc.stderr.read()[-2000:]}")
        if ready(out):
            os.kill(proc.pid, signal.SIGKILL)
            proc.wait()
            return
        time.sleep(0.05)
    proc.kill()
    raise AssertionError("the moment to kill never came")


def _mid_trial(out: Path) -> bool:
    """A trial is running and has written an epoch checkpoint (killed inside a trial)."""
    running = [t for t, s in _status(out).items() if s == "running"]
    return any(list((out / "trials").glob("*/*/checkpoint.pt")) for _ in running) and bool(running)


def _after_some_done(k: int):
    def ready(out: Path) -> bool:
        return sum(s == "done" for s in _status(out).values()) >= k

    return ready


def test_sigkill_twice_then_resume_equals_an_uninterrupted_run(tmp_path, tiny):
    config = tmp_path / "study.yaml"
    config.write_text(
        yaml.safe_dump(tiny(tmp_path, seeds=[0], strategies=["finetune", "recipe"], n=[12, "all"], rank=False))
    )
    whole = tmp_path / "whole"
    done = subprocess.run(
        [sys.executable, "-m", "medtransfer", "study", str(config), "--out", str(whole)],
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert done.returncode == 0, done.stderr[-2000:]

    cut = tmp_path / "cut"
    _kill_when(_study(config, cut), cut, _mid_trial)  # 1: inside the first trial, after an epoch checkpoint
    first = _status(cut)
    assert "running" in first.values()
    _kill_when(_study(config, cut, "--resume"), cut, _after_some_done(sum(s == "done" for s in first.values()) + 2))
    second = _status(cut)  # 2: later, between or inside later trials
    assert sum(s == "done" for s in second.values()) > sum(s == "done" for s in first.values())
    resumed = subprocess.run(
        [sys.executable, "-m", "medtransfer", "study", str(config), "--out", str(cut), "--resume"],
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert resumed.returncode == 0, resumed.stderr[-2000:]

    a = pd.read_csv(whole / "results.csv")[COLUMNS].sort_values("id").reset_index(drop=True)
    b = pd.read_csv(cut / "results.csv")[COLUMNS].sort_values("id").reset_index(drop=True)
    assert (b["status"] == "done").all() and len(b) == 4
    pd.testing.assert_frame_equal(a, b)  # the same AUCs and CIs, to the last bit
    # no trial lost or run twice: the finished ones ran once; only the interrupted ones have a second attempt
    with sqlite3.connect(cut / "study.sqlite") as db:
        attempts = dict(db.execute("SELECT id, attempts FROM trials").fetchall())
    interrupted = {t for t, s in first.items() if s == "running"} | {t for t, s in second.items() if s == "running"}
    assert {t for t, n in attempts.items() if n > 1} <= interrupted
    assert all(n >= 1 for n in attempts.values())
