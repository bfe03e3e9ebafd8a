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
import pytest
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


def _children(pid: int) -> list[int]:
    """The processes whose parent is ``pid`` (Linux /proc)."""
    kids = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[1]) == pid:
            kids.append(int(stat.parent.name))
    return kids


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


def _kill_with_workers(proc: subprocess.Popen, out: Path, ready, timeout: float = 240) -> None:
    """``_kill_when`` that also checks the driver's workers die with it (none keeps writing into the study)."""
    workers: list[int] = []

    def watch(o: Path) -> bool:
        workers[:] = _children(proc.pid) or workers
        return ready(o)

    _kill_when(proc, out, watch, timeout)
    end = time.time() + 10
    while any(_alive(w) for w in workers) and time.time() < end:
        time.sleep(0.05)
    assert not any(_alive(w) for w in workers), "a worker outlived its killed driver"


@pytest.mark.slow  # ~1-2 min; `make test-all` runs it (the default set has the two-kill resume test)
def test_sigkill_with_two_workers_at_five_moments_including_the_report(tmp_path, tiny):
    """kill -9 a 2-worker study at 5 seeded-random moments (startup, inside a trial, between trials twice, while the
    report is written), resume each time: the results equal an uninterrupted run and no trial is lost or run twice."""
    import random

    rng = random.Random(2026)
    config = tmp_path / "study.yaml"
    study = tiny(tmp_path, seeds=[0, 1], strategies=["finetune", "recipe"], n=[12, "all"], rank=False, workers=2)
    config.write_text(yaml.safe_dump(study))
    whole = tmp_path / "whole"
    done = subprocess.run(
        [sys.executable, "-m", "medtransfer", "study", str(config), "--out", str(whole)],
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert done.returncode == 0, done.stderr[-2000:]

    def after(seconds: float):
        start = time.time()
        return lambda out: time.time() - start > seconds

    def done_at_least(k: int, jitter: float):
        hit: list[float] = []

        def ready(out: Path) -> bool:
            if not hit and sum(s == "done" for s in _status(out).values()) >= k:
                hit.append(time.time())
            return bool(hit) and time.time() - hit[0] >= jitter

        return ready

    def writing_report(out: Path) -> bool:
        status = _status(out)
        return len(status) == 8 and all(s == "done" for s in status.values()) and not (out / "report.html").exists()

    k = rng.randint(1, 3)
    moments = [
        after(rng.uniform(0.5, 3.0)),  # 1: starting up (splits, cache, ledger, workers)
        _mid_trial,  # 2: inside a trial, after an epoch checkpoint
        done_at_least(k, rng.uniform(0, 0.5)),  # 3 and 4: between or inside later trials
        done_at_least(k + 2, rng.uniform(0, 0.5)),
        writing_report,  # 5: every trial done, the report being written
    ]
    cut = tmp_path / "cut"
    interrupted: set[str] = set()
    for i, moment in enumerate(moments):
        extra = ("--resume",) if (cut / "study.sqlite").exists() else ()
        _kill_with_workers(_study(config, cut, *extra), cut, moment)
        interrupted |= {t for t, s in _status(cut).items() if s == "running"}
        assert i < 4 or not (cut / "report.html").exists()
    resumed = subprocess.run(
        [sys.executable, "-m", "medtransfer", "study", str(config), "--out", str(cut), "--resume"],
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert resumed.returncode == 0, resumed.stderr[-2000:]

    a = pd.read_csv(whole / "results.csv")[COLUMNS].sort_values("id").reset_index(drop=True)
    b = pd.read_csv(cut / "results.csv")[COLUMNS].sort_values("id").reset_index(drop=True)
    assert (b["status"] == "done").all() and len(b) == 8
    pd.testing.assert_frame_equal(a, b)
    with sqlite3.connect(cut / "study.sqlite") as db:
        attempts = dict(db.execute("SELECT id, attempts FROM trials").fetchall())
    assert all(n >= 1 for n in attempts.values())
    assert {t for t, n in attempts.items() if n > 1} <= interrupted  # only interrupted trials ran again
    assert (cut / "report.html").is_file() and not list(cut.rglob(".*.tmp"))  # no half-written file left
