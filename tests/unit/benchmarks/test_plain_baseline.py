"""The plain reference loop and its driver start and describe themselves (the runs themselves take minutes)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import torch

from medtransfer.data.transforms import RadiographAugment

BENCHMARKS = Path(__file__).resolve().parents[3] / "benchmarks"


@pytest.mark.parametrize("script", ["plain_baseline.py", "defaults_compare.py"])
def test_help_runs(script):
    out = subprocess.run([sys.executable, str(BENCHMARKS / script), "--help"], capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    assert "--run" in out.stdout if script == "plain_baseline.py" else "--case" in out.stdout


def test_plain_augmentation_keeps_lengths():
    sys.path.insert(0, str(BENCHMARKS))
    try:
        import plain_baseline
    finally:
        sys.path.remove(str(BENCHMARKS))
    x = torch.zeros(2, 1, 32, 32)
    x[:, :, 12:20, 12:20] = 1.0
    out = plain_baseline.affine_augment(x, torch.Generator().manual_seed(0))
    assert out.shape == x.shape
    assert abs(out.sum().item() - x.sum().item()) < 0.05 * x.sum().item()  # rotated and shifted, not rescaled
    assert RadiographAugment.for_training(zoom=False).scale == (1.0, 1.0)
