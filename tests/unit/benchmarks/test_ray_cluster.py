"""benchmarks/ray_cluster.py: a study on a three-node Ray cluster on loopback addresses survives losing a worker node
while it runs a trial (the trial is requeued and done once), with results equal to a local run. Slow (3-5 min on 2
cores): ``make test-all`` or ``pytest -m slow``."""

from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path

import pytest

BENCHMARKS = Path(__file__).resolve().parents[3] / "benchmarks"

needs_ray = pytest.mark.skipif(importlib.util.find_spec("ray") is None, reason="the ray extra is not installed")


def load_script():
    spec = importlib.util.spec_from_file_location("ray_cluster", BENCHMARKS / "ray_cluster.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules["ray_cluster"] = module  # dataclasses and pickling look the module up by name
    try:
        spec.loader.exec_module(module)
    finally:
        sys.modules.pop("ray_cluster", None)
    return module


@pytest.mark.slow
@needs_ray
def test_a_study_survives_losing_a_ray_node(tmp_path):
    if not (Path(sys.executable).parent / "ray").is_file():
        pytest.skip("the `ray` command is not installed beside this Python")
    script = load_script()
    out = tmp_path / "figures.json"
    work = Path("/tmp") / f"mtrc-test-{tmp_path.name[-12:]}"  # short: Ray's socket paths must stay < 108 bytes
    try:
        code = script.main(["--workdir", str(work), "--json", str(out)])
    finally:
        import shutil

        shutil.rmtree(work, ignore_errors=True)
    figures = json.loads(out.read_text())
    checks = figures["checks"]
    assert checks["finished"] and checks["node_killed_mid_trial"], figures
    assert checks["all_done_once"] and checks["attempts_ok"] and checks["requeued_are_the_killed"], figures
    assert figures["requeued"], figures  # the trial on the lost node ran again, on the other one
    assert checks["results_equal"], checks["equal_to_local"]
    assert code == 0 and figures["ok"]


def test_the_script_describes_itself():
    script = load_script()
    with pytest.raises(SystemExit) as info:
        script.main(["--help"])
    assert info.value.code == 0
