"""The Ray executor: the same trials and AUCs as the local one, a dying worker, resume across executors, no Ray.

The Ray tests share one ``ray.init(num_cpus=2)`` (starting Ray costs 5-15 s here); they skip when the ``ray``
extra is not installed, while the tests of the install hint and of the session logic run everywhere.
"""

from __future__ import annotations

import importlib.util
import os
import sys

import pytest

from medtransfer.cli import main
from medtransfer.config import replace
from medtransfer.errors import TrainingFailed, UserError
from medtransfer.studies import ray_executor
from medtransfer.studies import trial as trial_mod
from medtransfer.studies.config import StudySection
from medtransfer.studies.executors import EXECUTORS
from medtransfer.studies.ledger import Ledger
from medtransfer.studies.runner import run_study

needs_ray = pytest.mark.skipif(importlib.util.find_spec("ray") is None, reason="the ray extra is not installed")

# Ray workers get this from the job's runtime_env, the driver never does: only seed 5 studies lose a worker.
CRASH = "scratch/recipe|n=12|seed=5"


@pytest.fixture(scope="module")
def ray_cluster():
    ray = pytest.importorskip("ray")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("RAY_AUTH_MODE", "disabled")  # no token written to ~/.ray
        mp.setenv("RAY_USAGE_STATS_ENABLED", "0")
        ray.init(num_cpus=2, include_dashboard=False, runtime_env={"env_vars": {trial_mod.CRASH_ENV: CRASH}})
        yield ray
        ray.shutdown()


def cli(argv: list[str]) -> int:
    try:
        main(argv)
    except SystemExit as e:
        return int(e.code or 0)
    return 0


@needs_ray
def test_ray_runs_the_same_trials_as_the_local_executor(tmp_path, study_config, ray_cluster):
    cfg = study_config(seeds=[0], strategies=["finetune"], n=[12, "all"])
    ray_out, local_out = tmp_path / "ray", tmp_path / "local"
    assert run_study(replace(cfg, **{"study.executor": "ray"}), ray_out, progress=False, report=False)["done"] == 2
    assert ray_cluster.is_initialized()  # the caller's instance is used, not shut down
    run_study(cfg, local_out, progress=False, report=False)
    on_ray = {r["id"]: r for r in Ledger(ray_out / "study.sqlite").rows()}
    local = {r["id"]: r for r in Ledger(local_out / "study.sqlite").rows()}
    assert set(on_ray) == set(local) and all(r["status"] == "done" for r in on_ray.values())
    for i, r in on_ray.items():
        assert r["worker"] == "ray local" and r["attempts"] == 1 and (ray_out / r["folder"] / "metrics.json").is_file()
        assert r["score"] == pytest.approx(local[i]["score"], abs=0.02)  # 1 thread on Ray, 2 in the driver


@needs_ray
def test_a_dying_ray_worker_is_retried_once_then_failed_and_resumes_locally(tmp_path, study_config, ray_cluster):
    cfg = study_config(seeds=[5], n=[12])
    out = tmp_path / "s"
    counts = run_study(replace(cfg, **{"study.executor": "ray"}), out, progress=False, report=False)
    assert counts == {"pending": 0, "running": 0, "done": 1, "failed": 1}
    rows = {r["id"]: r for r in Ledger(out / "study.sqlite").rows()}
    dead, other = rows.pop(CRASH), rows.popitem()[1]
    assert dead["attempts"] == 2 and dead["error"] == "worker process died: WorkerCrashedError (2 attempts)"
    assert other["status"] == "done" and other["attempts"] == 1
    # ray → local: the driver has no fault injection, so the failed trial now finishes; the done one is not rerun
    counts = run_study(cfg, out, resume=True, retry_failed=True, progress=False, report=False)
    assert counts["done"] == 2
    after = {r["id"]: r for r in Ledger(out / "study.sqlite").rows()}
    assert after[CRASH]["attempts"] == 3 and after[CRASH]["worker"].startswith("pid ")
    assert after[other["id"]]["attempts"] == 1 and after[other["id"]]["finished"] == other["finished"]


@needs_ray
def test_a_local_study_resumes_on_ray_through_the_cli(tmp_path, study_config, ray_cluster, monkeypatch, capsys):
    real = trial_mod._net_trial
    broken = "scratch/recipe|n=12|seed=0"

    def flaky(ctx, trial, folder, progress, **kw):
        if trial.id == broken:
            raise TrainingFailed("loss became nan at epoch 1, step 2")
        return real(ctx, trial, folder, progress, **kw)

    monkeypatch.setattr(trial_mod, "_net_trial", flaky)  # the driver only: Ray workers import the real module
    cfg = study_config(seeds=[0], n=[12])
    out = tmp_path / "s"
    assert run_study(cfg, out, progress=False, report=False) == {"pending": 0, "running": 0, "done": 1, "failed": 1}
    first = {r["id"]: r for r in Ledger(out / "study.sqlite").rows()}
    config = tmp_path / "study.yaml"  # what study_config wrote
    argv = ["study", str(config), "--out", str(out), "--resume", "--retry-failed", "--executor", "ray"]
    assert cli(argv) == 0
    assert "done 2" in capsys.readouterr().out
    rows = {r["id"]: r for r in Ledger(out / "study.sqlite").rows()}
    assert rows[broken]["status"] == "done" and rows[broken]["attempts"] == 2 and rows[broken]["worker"] == "ray local"
    done_before = next(i for i, r in first.items() if r["status"] == "done")
    assert rows[done_before]["attempts"] == 1 and rows[done_before]["finished"] == first[done_before]["finished"]


@needs_ray
def test_worker_deaths_are_told_from_trial_errors():
    import ray

    exc = ray.exceptions
    assert ray_executor.worker_death(ray, exc.WorkerCrashedError()) == "WorkerCrashedError"
    assert ray_executor.worker_death(ray, exc.NodeDiedError("node lost")) == "NodeDiedError"
    assert ray_executor.worker_death(ray, exc.RayTaskError("run", "tb", SystemExit(3))) == "SystemExit"
    error = exc.RayTaskError("run", "Traceback ...", ModuleNotFoundError("No module named 'medtransfer'"))
    assert ray_executor.worker_death(ray, error.as_instanceof_cause()) is None
    assert ray_executor._describe(ray, error) == "ModuleNotFoundError: No module named 'medtransfer'"


def test_capacity_counts_whole_trials_per_alive_node():
    nodes = [
        {"Alive": True, "Resources": {"CPU": 8.0, "GPU": 1.0}},
        {"Alive": True, "Resources": {"CPU": 3.0}},
        {"Alive": False, "Resources": {"CPU": 64.0, "GPU": 8.0}},
    ]
    assert ray_executor.capacity(nodes, 1, 0) == 11
    assert ray_executor.capacity(nodes, 2, 0.5) == 2  # the CPU-only node cannot hold a GPU trial
    assert ray_executor.capacity([{"Alive": True, "Resources": {"CPU": 1.0}}], 0.1, 0) == 10  # not 9: float floor


class FakeRay:
    """Records how the session starts and stops Ray, and what the environment held at ``init``."""

    def __init__(self) -> None:
        self.up, self.calls = False, []

    def is_initialized(self) -> bool:
        return self.up

    def init(self, **kw) -> None:
        self.calls.append(("init", kw, os.environ.get("RAY_AUTH_MODE")))
        self.up = True

    def shutdown(self) -> None:
        self.calls.append(("shutdown",))
        self.up = False


def test_ray_session_starts_and_stops_only_its_own_instance(monkeypatch):
    fake = FakeRay()
    monkeypatch.setattr(ray_executor, "import_ray", lambda: fake)
    monkeypatch.delenv("RAY_AUTH_MODE", raising=False)
    with ray_executor.ray_session(None) as (ray, started):
        assert ray is fake and started
    local = {"num_cpus": os.cpu_count(), "include_dashboard": False}
    assert fake.calls == [("init", local, "disabled"), ("shutdown",)]
    assert "RAY_AUTH_MODE" not in os.environ  # set for the private instance only
    fake.calls.clear()
    with ray_executor.ray_session("ray://head:10001") as (_, started):
        assert not started
    assert fake.calls == [("init", {"address": "ray://head:10001"}, None), ("shutdown",)]
    fake.calls.clear()
    fake.up = True  # a notebook's instance: used as it is, left running
    with ray_executor.ray_session(None) as (_, started):
        assert not started
    assert fake.calls == []


def test_the_ray_executor_checks_before_planning_that_ray_is_installed(monkeypatch):
    calls = []
    monkeypatch.setattr(ray_executor, "import_ray", lambda: calls.append("ray"))
    EXECUTORS.get("ray").check(StudySection(executor="ray"))  # its settings were checked when the config loaded
    assert calls == ["ray"]


def test_without_ray_the_cli_says_how_to_install_it(tmp_path, study_config, monkeypatch, capsys):
    monkeypatch.setitem(sys.modules, "ray", None)  # `import ray` raises ImportError, as without the extra
    study_config()
    argv = ["study", str(tmp_path / "study.yaml"), "--out", str(tmp_path / "s"), "--executor", "ray"]
    assert cli(argv) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "pip install -e '.[ray]'" in err and "EXTRAS=dev,ray" in err
    assert not (tmp_path / "s").exists()  # refused before anything was written
    with pytest.raises(UserError, match=r"unknown executor 'rey'; did you mean \['ray'\]"):
        run_study(study_config(executor="rey"), tmp_path / "s", progress=False)


def test_a_node_lost_or_joined_shows_in_the_log(caplog):
    class Nodes:
        def __init__(self, cpus: list[float]) -> None:
            self.cpus = cpus

        def nodes(self) -> list[dict]:
            return [{"Alive": True, "Resources": {"CPU": c}} for c in self.cpus]

    with caplog.at_level("INFO", logger=ray_executor.__name__):
        assert ray_executor._recount(Nodes([1.0, 1.0]), 2, 1, 0, "need") == 2
        assert not caplog.records  # unchanged: nothing said
        assert ray_executor._recount(Nodes([1.0]), 2, 1, 0, "need") == 1
        assert ray_executor._recount(Nodes([]), 1, 1, 0, "need") == 0
    assert "up to 1 trial(s) at once now (was 2)" in caplog.records[0].getMessage()
    assert (
        caplog.records[1].levelname == "WARNING" and "no alive node can run a trial" in caplog.records[1].getMessage()
    )
