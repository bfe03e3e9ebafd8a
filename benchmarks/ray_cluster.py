"""Ray on more than one node: a head and two worker nodes on loopback addresses, a study of 12 trials, one node lost.

Starts a Ray head (``--num-cpus=0``: it runs no trial) and two worker nodes (``--num-cpus=1`` each) as separate
``ray start --block`` processes on 127.0.0.2, 127.0.0.3 and 127.0.0.4 (loopback addresses: see NODES), each with its
own temporary folder and ports; runs a small synthetic study (tiny backbone, 16 px chest phantoms, 12 trials) with
``medtransfer study --executor ray --address 127.0.0.2:PORT``; as soon as a trial running on the second worker node
has written its first epoch checkpoint, kills that node (SIGKILL, at once, to its ``ray start`` process, raylet,
agents and Ray workers: what a machine that loses power does) and checks:

* the study finishes (exit code 0);
* every trial is ``done`` exactly once in the ledger, the ones that were on the killed node with a second attempt
  (requeued, not failed; they continue from their checkpoint on the node left), every other one with one;
* the results (each trial's metrics in the ledger, ``results.csv`` and ``summary.csv`` without their timing columns)
  equal those of a local run of the same study (``--executor local --workers 2``: one torch thread per trial on a
  2-core machine, as on the cluster).

The cluster and the ``medtransfer`` processes are stopped at the end, also on failure, Ctrl-C or SIGTERM (only the
processes this script started: each node's process tree and the processes naming its folder; never ``ray stop``,
which would stop every Ray on the machine), and a temporary work folder is removed.

    .venv/bin/python benchmarks/ray_cluster.py --json ray-cluster.json      # ~3 min on 2 idle cores

Options: ``--epochs`` (per trial; more give the kill a wider window), ``--workdir`` (kept afterwards), ``--json``
(the figures), ``--no-local`` (skip the reference run and the comparison), ``--timeout`` (per study).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pandas as pd
import yaml

# Each node on its own loopback address. Not 127.0.0.1: Ray rewrites 127.0.0.1 and localhost (in --address,
# --node-ip-address and ray.init) to the machine's network address, except in its single-machine mode, which refuses
# worker nodes. Linux routes all of 127.0.0.0/8 to the loopback interface.
NODES = {"head": "127.0.0.2", "w1": "127.0.0.3", "w2": "127.0.0.4"}
ROOT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
# What differs between two runs of the same trial and is not a result: when, where, how long, how much memory.
NOT_RESULTS = ("started", "finished", "seconds", "worker", "attempts", "peak_rss_mb", "peak_gpu_mb", "folder")
TABLES = ("results.csv", "summary.csv")
CHECKPOINT = "checkpoint.pt"  # a trial's last epoch checkpoint (studies/trial.py)
# No auth token written to ~/.ray, no usage report; a wide console, so that the driver's log lines are not wrapped.
ENV = {"RAY_AUTH_MODE": "disabled", "RAY_USAGE_STATS_ENABLED": "0", "PYTHONUNBUFFERED": "1", "COLUMNS": "250"}


def study_config(work: Path, epochs: int) -> Path:
    """12 trials: scratch × {finetune, recipe} × N {12, all} × seeds {0, 1, 2}, each a few seconds on 1 CPU."""
    config = {
        "seed": 0,
        "data": {
            "path": "synthetic:chest,n=120,visibility=0.8,size=32,seed=7",
            "image_size": 16,
            "cache_dir": str(work / "cache"),
        },
        "model": {"backbone": "tiny"},
        "train": {"epochs": epochs, "batch_size": 8, "lr": 0.003},
        "study": {
            "n": [12, "all"],
            "sources": ["scratch"],
            "strategies": ["finetune", "recipe"],
            "seeds": [0, 1, 2],
            "rank": False,
            "executors": {"ray": {"cpus_per_trial": 1}},
        },
    }
    path = work / "study.yaml"
    path.write_text(yaml.safe_dump(config, sort_keys=False))
    return path


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket() as s:
        s.bind((host, 0))
        return s.getsockname()[1]


class Cluster:
    """Three ``ray start --block`` processes, each the leader of its own process group."""

    def __init__(self, work: Path) -> None:
        self.work = work / "ray"
        self.port = free_port(NODES["head"])
        self.address = f"{NODES['head']}:{self.port}"
        self.nodes: dict[str, subprocess.Popen] = {}
        self.env = {**os.environ, **ENV}

    def start(self) -> None:
        self._node("head", ["--head", f"--port={self.port}", "--num-cpus=0", f"--ray-client-server-port={free_port()}"])
        self._wait_for(1)
        for name in ("w1", "w2"):
            self._node(name, [f"--address={self.address}", "--num-cpus=1"])
        self._wait_for(3)

    def _node(self, name: str, args: list[str]) -> None:
        """One ``ray start --block`` on the node's own loopback address."""
        temp = self.work / name
        temp.mkdir(parents=True)
        base = 22000 + 200 * len(self.nodes)  # disjoint worker port ranges: three raylets on one host
        cmd = [
            str(BIN / "ray"),
            "start",
            "--block",
            f"--node-ip-address={NODES[name]}",
            f"--temp-dir={temp}",
            "--object-store-memory=100000000",
            f"--dashboard-agent-listen-port={free_port()}",
            f"--min-worker-port={base}",
            f"--max-worker-port={base + 199}",
            "--disable-usage-stats",
            *(["--include-dashboard=false"] if name == "head" else []),
            *args,
        ]
        log = open(self.work / f"{name}.log", "w")  # noqa: SIM115 - closed with the process
        self.nodes[name] = subprocess.Popen(
            cmd, stdout=log, stderr=subprocess.STDOUT, env=self.env, start_new_session=True, cwd=self.work
        )

    def _wait_for(self, n: int, timeout: float = 120) -> None:
        """Until the GCS lists ``n`` alive nodes (``ray list nodes`` needs the dashboard, the head has none)."""
        end = time.time() + timeout
        while time.time() < end:
            for name, proc in self.nodes.items():
                if proc.poll() is not None:
                    raise RuntimeError(f"ray node {name} exited ({proc.returncode}): {self.work / name}.log")
            if alive_nodes(self.address, self.env) == n:
                return
            time.sleep(1)
        raise RuntimeError(f"the cluster did not reach {n} alive nodes in {timeout:.0f} s")

    def processes(self, name: str) -> list[int]:
        """The PIDs of a node: its ``ray start`` process and every descendant (Ray workers have process groups of
        their own), and anything whose command line names the node's folder."""
        mark = str(self.work / name).encode()
        node = self.nodes[name]
        parents, pids = {}, ({node.pid} if node.poll() is None else set())  # a reaped PID may be another's now
        for entry in Path("/proc").iterdir():
            if entry.name.isdigit():
                with contextlib.suppress(OSError, IndexError, ValueError):
                    parents[int(entry.name)] = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
                    if mark in (entry / "cmdline").read_bytes():
                        pids.add(int(entry.name))
        while True:
            more = {pid for pid, parent in parents.items() if parent in pids} - pids
            if not more:
                return sorted(p for p in pids if p in parents)
            pids |= more

    def trials_on(self, name: str) -> list[str]:
        """The trials running on a node now: its Ray workers' process titles, ``ray::<trial id>``."""
        out = []
        for pid in self.processes(name):
            with contextlib.suppress(OSError):
                title = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")[0].decode(errors="replace")
                if title.startswith("ray::") and "|" in title:  # a task named after its trial (ray_executor.py)
                    out.append(title.removeprefix("ray::").strip())
        return out

    def kill(self, name: str) -> list[int]:
        """SIGKILL every process of the node at once, as when its machine goes away."""
        pids = self.processes(name)
        for pid in pids:
            with contextlib.suppress(OSError):
                os.kill(pid, signal.SIGKILL)
        self.nodes[name].wait()
        return pids

    def stop(self) -> None:
        """Every process this cluster started, whatever state it is in: SIGTERM, then SIGKILL after 5 s. The PIDs
        are taken before the first signal too (a Ray worker whose node process exits is no longer its descendant),
        each with its start time, so that a PID the system has since given to another process is left alone."""
        started: dict[int, str | None] = {}
        for sig, grace in ((signal.SIGTERM, 5.0), (signal.SIGKILL, 0.0)):
            started |= {p: _start_time(p) for name in self.nodes for p in self.processes(name) if p not in started}
            for pid, when in started.items():
                if when is not None and _start_time(pid) == when:
                    with contextlib.suppress(OSError):
                        os.kill(pid, sig)
            end = time.time() + grace
            while time.time() < end and any(_start_time(p) == w and _running(p) for p, w in started.items()):
                time.sleep(0.2)
        for proc in self.nodes.values():
            with contextlib.suppress(Exception):
                proc.wait(timeout=5)


def _start_time(pid: int) -> str | None:
    """The process's start time (``/proc/PID/stat`` field 22): with the PID, who it is."""
    with contextlib.suppress(OSError, IndexError):
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[19]
    return None


def _running(pid: int) -> bool:
    """Whether ``pid`` is alive and not a zombie (a PID reused by another process would count: harmless here)."""
    with contextlib.suppress(OSError, IndexError):
        return not Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] == "Z"
    return False


def alive_nodes(address: str, env: dict) -> int:
    """Alive nodes, asked from a separate short-lived driver (this script never connects itself)."""
    code = "import ray; ray.init(address=%r, logging_level='ERROR'); print(sum(n['Alive'] for n in ray.nodes()))"
    out = subprocess.run(
        [sys.executable, "-c", code % address], capture_output=True, text=True, env=env, timeout=120, check=False
    )
    try:
        return int(out.stdout.strip().splitlines()[-1])
    except (ValueError, IndexError):
        return 0


def medtransfer(args: list[str], log: Path, env: dict) -> subprocess.Popen:
    with open(log, "w") as f:
        return subprocess.Popen(
            [sys.executable, "-m", "medtransfer", *args], stdout=f, stderr=subprocess.STDOUT, env=env, cwd=ROOT
        )


def trial_folders(study: Path) -> dict[str, str]:
    """Trial id → folder (relative to the study), read-only from the ledger the driver is writing; {} before."""
    import sqlite3

    if not (study / "study.sqlite").is_file():
        return {}
    try:
        with contextlib.closing(sqlite3.connect(f"file:{study / 'study.sqlite'}?mode=ro", uri=True)) as db:
            return dict(db.execute("SELECT id, folder FROM trials"))
    except sqlite3.Error:  # the driver is creating it
        return {}


def ledger_rows(study: Path) -> dict[str, dict]:
    from medtransfer.studies.ledger import Ledger

    with Ledger(study / "study.sqlite", create=False) as ledger:
        return {r["id"]: r for r in ledger.rows()}


def _table(path: Path) -> pd.DataFrame:
    """A study's table without what is not a result (timings, where and how often a trial ran)."""
    table = pd.read_csv(path)
    return table.drop(columns=[c for c in table.columns if c in NOT_RESULTS or c.startswith("seconds")])


def compare(local: Path, cluster: Path) -> dict:
    """Where the two studies' results differ (empty lists: equal)."""
    a, b = ledger_rows(local), ledger_rows(cluster)
    metrics = sorted(i for i in set(a) | set(b) if i not in a or i not in b or a[i]["metrics"] != b[i]["metrics"])
    results_equal, summary_equal = (_table(local / name).equals(_table(cluster / name)) for name in TABLES)
    return {
        "metrics_differ": metrics,
        "results_csv_equal": results_equal,  # without the columns of NOT_RESULTS
        "summary_csv_equal": summary_equal,  # without seconds_mean
    }


def run(work: Path, epochs: int, local: bool, timeout: float) -> dict:
    """The local reference run, the cluster, the study on it with a node killed, the checks; the figures."""
    drivers: list[subprocess.Popen] = []  # the medtransfer processes, stopped in `finally` if still running
    cluster = Cluster(work)
    try:
        return _run(work, epochs, local, timeout, cluster, drivers)
    finally:
        for proc in drivers:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
        cluster.stop()


def _run(
    work: Path,
    epochs: int,
    local: bool,
    timeout: float,
    cluster: Cluster,
    drivers: list[subprocess.Popen],
) -> dict:
    config = study_config(work, epochs)
    env = {**os.environ, **ENV}
    figures: dict = {"machine": {"cpus": os.cpu_count()}, "trials": 12, "epochs": epochs, "load_average": {}}
    figures["load_average"]["start"] = os.getloadavg()[0]  # other work on the machine shows in the timings
    if local:
        t0 = time.perf_counter()
        drivers.append(
            medtransfer(
                ["study", str(config), "--out", str(work / "local"), "--executor", "local", "--workers", "2"],
                work / "local.log",
                env,
            )
        )
        rc = drivers[-1].wait(timeout=timeout)
        figures["local"] = {"seconds": round(time.perf_counter() - t0, 1), "exit": rc}
        if rc != 0:
            raise RuntimeError(f"the local run failed ({rc}): {work / 'local.log'}")
        print(f"local: {figures['local']['seconds']} s", flush=True)
    figures["load_average"]["cluster"] = os.getloadavg()[0]
    t0 = time.perf_counter()
    cluster.start()
    figures["cluster_start_seconds"] = round(time.perf_counter() - t0, 1)
    print(f"cluster at {cluster.address}: head (0 CPUs), w1 and w2 (1 CPU each)", flush=True)
    out = work / "cluster"
    t0 = time.perf_counter()
    driver = medtransfer(
        ["study", str(config), "--out", str(out), "--executor", "ray", "--address", cluster.address],
        work / "cluster.log",
        env,
    )
    drivers.append(driver)
    folders: dict[str, str] = {}  # trial id → its folder, from the ledger once the driver has planned
    killed: dict = {}
    while driver.poll() is None:
        if time.perf_counter() - t0 > timeout:
            raise RuntimeError(f"the study on the cluster ran past {timeout:.0f} s: {work / 'cluster.log'}")
        if not killed:
            folders = folders or trial_folders(out)
            # mid-training: a trial on w2 that has written an epoch checkpoint (and so will resume from it)
            ripe = [t for t in cluster.trials_on("w2") if t in folders and (out / folders[t] / CHECKPOINT).is_file()]
            if ripe:
                pids = cluster.kill("w2")
                at = round(time.perf_counter() - t0, 1)
                killed = {"node": "w2", "trials": ripe, "at_seconds": at, "processes": len(pids), "wall": time.time()}
                print(f"killed node w2 ({len(pids)} processes) at {at} s, running {ripe} (past its first epoch)")
        time.sleep(0.05)
    figures["cluster"] = {"seconds": round(time.perf_counter() - t0, 1), "exit": driver.returncode}
    figures["killed"] = killed
    print(f"cluster: {figures['cluster']['seconds']} s, exit {driver.returncode}", flush=True)
    figures["load_average"]["end"] = os.getloadavg()[0]
    figures["alive_after"] = alive_nodes(cluster.address, cluster.env)
    cluster.stop()  # before the checks: the figures are taken with no Ray process left
    log = (work / "cluster.log").read_text(errors="replace")
    figures["requeue_log"] = [line.strip() for line in log.splitlines() if "died" in line and "trying it again" in line]
    rows = ledger_rows(work / "cluster")
    requeued = sorted(i for i, r in rows.items() if r["attempts"] > 1)
    checks = {
        "finished": figures["cluster"]["exit"] == 0,
        "node_killed_mid_trial": bool(killed),
        "all_done_once": len(rows) == 12 and all(r["status"] == "done" for r in rows.values()),
        "requeued_are_the_killed": requeued == sorted(killed.get("trials", [])),
        "attempts": {i: r["attempts"] for i, r in sorted(rows.items())},
    }
    checks["attempts_ok"] = all(r["attempts"] == (2 if i in killed.get("trials", []) else 1) for i, r in rows.items())
    if local:
        checks["equal_to_local"] = compare(work / "local", work / "cluster")
        eq = checks["equal_to_local"]
        checks["results_equal"] = not eq["metrics_differ"] and eq["results_csv_equal"] and eq["summary_csv_equal"]
    figures["requeued"] = requeued
    # the second start of a requeued trial: when a slot on the node left was free again
    when = killed.get("wall", float("nan"))
    figures["restarted_after_kill_seconds"] = {i: round(rows[i]["started"] - when, 1) for i in requeued}
    figures["trial_seconds_sum"] = {"cluster": round(sum(r["seconds"] or 0 for r in rows.values()), 1)}
    if local:
        figures["trial_seconds_sum"]["local"] = round(
            sum(r["seconds"] or 0 for r in ledger_rows(work / "local").values()), 1
        )
    figures["checks"] = checks
    return figures


def passed(figures: dict) -> bool:
    c = figures["checks"]
    keys = ["finished", "node_killed_mid_trial", "all_done_once", "requeued_are_the_killed", "attempts_ok"]
    return all(c[k] for k in keys) and c.get("results_equal", True)


def _interrupt(signum: int, frame: object) -> None:
    """SIGTERM (a CI timeout, ``kill``) unwinds like Ctrl-C, so that the cluster is stopped in ``finally``."""
    raise KeyboardInterrupt(f"signal {signum}")


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--epochs", type=int, default=20, help="epochs per trial (default 20: a few seconds on 1 CPU)")
    p.add_argument("--timeout", type=float, default=900, help="seconds each study may take")
    p.add_argument("--workdir", type=Path, help="work folder (kept); default: a temporary one, removed")
    p.add_argument("--no-local", action="store_true", help="skip the local reference run and the comparison")
    p.add_argument("--json", type=Path, help="write the figures here")
    args = p.parse_args(argv)

    with contextlib.ExitStack() as stack:
        previous = signal.signal(signal.SIGTERM, _interrupt)
        stack.callback(signal.signal, signal.SIGTERM, previous)
        if args.workdir is None:  # short: Ray's socket paths under it must stay below 108 bytes
            work = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="mtrc-", dir="/tmp")))
        else:
            work = args.workdir.resolve()
            work.mkdir(parents=True, exist_ok=False)
        figures = run(work, args.epochs, not args.no_local, args.timeout)
        figures["ok"] = passed(figures)
        text = json.dumps(figures, indent=2)
        print(text)
        if args.json:
            args.json.write_text(text + "\n")
    return 0 if figures["ok"] else 1


if __name__ == "__main__":
    sys.exit(main())
