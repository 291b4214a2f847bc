"""Shared test helpers: a sweep runner through the real Flower simulation engine."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pandas as pd
import pytest
import yaml

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
os.environ.setdefault("HF_HUB_OFFLINE", "1")


@pytest.fixture(autouse=True)
def _private_flwr_home(tmp_path, monkeypatch):
    """No test reads or writes the user's ~/.flwr."""
    monkeypatch.setenv("FLWR_HOME", str(tmp_path / "flwr-home"))


@pytest.fixture(scope="session", autouse=True)
def _shared_ray():
    """One Ray instance for the whole session: every simulation attaches to it through
    ``RAY_ADDRESS`` (as a sweep's runs share one) instead of starting its own."""
    from simulations.superlink import shared_ray

    with shared_ray(object_store_mb=500) as ray:
        if ray is None:  # RAY_ADDRESS already set: use that one
            yield
            return
        os.environ["RAY_ADDRESS"] = ray.address
        try:
            yield
        finally:
            os.environ.pop("RAY_ADDRESS", None)


def run_sweep(tmp_path: Path, base: dict, grid: dict, *options: str) -> tuple[int, pd.DataFrame, Path]:
    """Run ``python -m simulations.sweep`` in-process on a YAML made from base/grid
    (``options``: more command-line flags, e.g. ``--local``).

    Returns the exit code, results.csv as a frame (empty if none) and the out dir.
    """
    from simulations.sweep import main

    out = tmp_path / ("out" + "".join(o.strip("-") for o in options))
    spec = tmp_path / "sweep.yaml"
    spec.write_text(yaml.safe_dump({"base": base, "grid": grid}))
    code = main([str(spec), "--out-dir", str(out), *options])
    csv = out / "results.csv"
    return code, (pd.read_csv(csv) if csv.exists() else pd.DataFrame()), out
