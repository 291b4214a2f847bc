"""Shared test helpers: a sweep runner through the real Flower simulation engine, and a
small multi-domain image tree on disk."""

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
if os.environ.get("PYTEST_XDIST_WORKER"):  # `make test` runs two workers: one core each, for them and what they start
    os.environ["OMP_NUM_THREADS"] = os.environ["MKL_NUM_THREADS"] = "1"
    import torch

    torch.set_num_threads(1)


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


@pytest.fixture
def task_identity():
    """Messages need a run id; outside a Flower process none is set."""
    from flwr.supercore.task_identity import TaskIdentity

    TaskIdentity.run_id, TaskIdentity.node_id, TaskIdentity.task_id = 1, 0, 1
    yield
    TaskIdentity.run_id = TaskIdentity.node_id = TaskIdentity.task_id = None


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


def pacs_tree(root: Path, per_class: int = 3, side: int = 8, ext: str = "png") -> Path:
    """``root/PACS/<art|photo>/<dog|cat>/<i>.<ext>``: flat grey images (level 40 i), the
    layout of a multi-domain image-folder dataset; returns ``root/PACS``."""
    import numpy as np
    from PIL import Image

    for d in ("art", "photo"):
        for c in ("dog", "cat"):
            folder = root / "PACS" / d / c
            folder.mkdir(parents=True)
            for i in range(per_class):
                Image.fromarray(np.full((side, side, 3), i * 40, np.uint8)).save(folder / f"{i}.{ext}")
    return root / "PACS"
