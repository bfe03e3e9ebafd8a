"""Shared fixtures. Real data comes from $MEDTRANSFER_DATA or ../shared/data beside the checkout; tests that
need it skip cleanly when it is absent."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest

REPO = Path(__file__).resolve().parents[1]


def _shared_data() -> Path | None:
    env = os.environ.get("MEDTRANSFER_DATA")
    for cand in ([Path(env)] if env else []) + [REPO.parent / "shared" / "data"]:
        if cand.is_dir():
            return cand
    return None


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """The real-data folder; skips the test when it is not there."""
    path = _shared_data()
    if path is None:
        pytest.skip("real data not found (set MEDTRANSFER_DATA or put shared/data beside the checkout)")
    return path


@pytest.fixture
def rng() -> np.random.Generator:
    return np.random.default_rng(0)


@pytest.fixture(autouse=True)
def _isolated_cache(tmp_path_factory, monkeypatch):
    """Every test writes its decoded-image cache and source catalogue under a temporary folder."""
    monkeypatch.setenv("MEDTRANSFER_CACHE", str(tmp_path_factory.getbasetemp() / "cache"))
    monkeypatch.setenv("MEDTRANSFER_SOURCES", str(tmp_path_factory.getbasetemp() / "sources"))
