"""The throughput benchmark's smoke mode runs end to end on CPU and reports what it promises."""

from __future__ import annotations

import importlib.util
import json
import math
import sys
from pathlib import Path

import torch

SCRIPT = Path(__file__).resolve().parents[3] / "benchmarks" / "throughput.py"


def load_script():
    spec = importlib.util.spec_from_file_location("medtransfer_benchmark_throughput", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up while the class is built
    spec.loader.exec_module(module)
    return module


def test_smoke_mode_writes_three_measurements_and_two_ratios(tmp_path, capsys):
    threads = torch.get_num_threads()
    out = tmp_path / "throughput.json"
    load_script().main(["--smoke", "--json", str(out), "--workdir", str(tmp_path / "work")])
    result = json.loads(out.read_text())
    assert torch.get_num_threads() == threads  # the smoke run's single thread is not left behind
    assert result["device_type"] == "cpu" and result["size"] == 64 and result["batch"] == 8
    assert result["measure_steps"] == 3 and result["warmup_steps"] >= 1
    assert result["cache_build_s"] > 0 and result["torch"] == torch.__version__
    (name, r), *_ = result["models"].items()
    for key in ("reference_img_s", "medtransfer_img_s", "compute_img_s", "b_over_a", "b_over_c"):
        assert math.isfinite(r[key]) and r[key] > 0, key
    assert math.isclose(r["b_over_a"], r["medtransfer_img_s"] / r["reference_img_s"])
    printed = capsys.readouterr().out
    assert name in printed and "b/a" in printed and "CPU run: absolute times" in printed
