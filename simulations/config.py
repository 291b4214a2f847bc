"""One config story: the keys of ``[tool.flwr.app.config]`` in pyproject.toml.

``flwr run --run-config`` and sweep YAMLs use the same keys; ``resolve`` fills the
defaults and ``validate`` rejects a bad value with one line that says what to pass.
"""

from __future__ import annotations

import functools
import os
import random
import re
import tomllib
from pathlib import Path

import numpy as np
import torch

PYPROJECT = Path(__file__).resolve().parent.parent / "pyproject.toml"


FAULT_KINDS = ("raise", "nan", "shape", "timeout", "mixed")


class ConfigError(ValueError):
    """A run-config value that cannot be used."""


@functools.lru_cache(maxsize=1)
def defaults() -> dict:
    """Default run config, read from pyproject.toml (the single source of truth)."""
    with open(PYPROJECT, "rb") as f:
        return dict(tomllib.load(f)["tool"]["flwr"]["app"]["config"])


def resolve(overrides: dict) -> dict:
    """Defaults updated with ``overrides``; unknown keys are an error."""
    base = defaults()
    unknown = sorted(set(overrides) - set(base))
    if unknown:
        raise ConfigError(f"unknown run-config key(s) {unknown}: see docs/config.md")
    cfg = {**base, **overrides}
    validate(cfg)
    return cfg


def _check(ok: bool, message: str) -> None:
    if not ok:
        raise ConfigError(message)


def validate(cfg: dict) -> None:
    """Range and name checks that need no data and no Flower."""
    from datasets.partition import PARTITIONERS
    from datasets import DATASETS
    from models import MODEL_NAMES, MODELS
    from simulations.methods import METHODS

    for key, default in defaults().items():
        value = cfg[key]
        if isinstance(default, bool):
            _check(isinstance(value, bool), f"{key} must be true or false, got {value!r}")
        elif isinstance(default, (int, float)):
            _check(isinstance(value, (int, float)) and not isinstance(value, bool) and np.isfinite(value),
                   f"{key} must be a number, got {value!r}")
    _check(cfg["method"] in METHODS, f"unknown method '{cfg['method']}': pass one of {sorted(METHODS)}")
    _check(cfg["dataset"] in DATASETS, f"unknown dataset '{cfg['dataset']}': pass one of {sorted(DATASETS)}")
    _check(cfg["partitioner"] in PARTITIONERS,
           f"unknown partitioner '{cfg['partitioner']}': pass one of {sorted(PARTITIONERS)}")
    _check(any(re.fullmatch(p, cfg["model"]) for p in MODELS),
           f"unknown model '{cfg['model']}': pass {MODEL_NAMES}")
    _check(cfg["alpha"] > 0, f"alpha must be > 0, got {cfg['alpha']}")
    for key in ("fraction-train", "fraction-evaluate"):
        _check(0 <= cfg[key] <= 1, f"{key} must be in [0, 1], got {cfg[key]}")
    _check(0 <= cfg["local-test-fraction"] < 1, f"local-test-fraction must be in [0, 1), got {cfg['local-test-fraction']}")
    _check(cfg["partition-assignment"] in ("server", "node"),
           f"partition-assignment must be server or node, got {cfg['partition-assignment']!r}")
    for key in ("num-server-rounds", "batch-size", "classes-per-client", "min-train-nodes", "samples-per-client"):
        _check(int(cfg[key]) == cfg[key] and cfg[key] >= 1, f"{key} must be an integer >= 1, got {cfg[key]}")
    _check(cfg["local-epochs"] >= 0, f"local-epochs must be >= 0, got {cfg['local-epochs']}")
    _check(cfg["lr"] > 0, f"lr must be > 0, got {cfg['lr']}")
    _check(cfg["round-timeout"] > 0, f"round-timeout must be > 0, got {cfg['round-timeout']}")
    _check(cfg["proximal-mu"] >= 0, f"proximal-mu must be >= 0, got {cfg['proximal-mu']}")
    _check(cfg["device"] in ("auto", "cpu", "cuda") or cfg["device"].startswith("cuda:"),
           f"device must be auto, cpu or cuda[:N], got {cfg['device']!r}")
    _check(0 <= cfg["fault-rate"] <= 1, f"fault-rate must be in [0, 1], got {cfg['fault-rate']}")
    _check(cfg["fault-kind"] in FAULT_KINDS, f"fault-kind must be one of {FAULT_KINDS}, got {cfg['fault-kind']!r}")
    _check(int(cfg["checkpoint-every"]) == cfg["checkpoint-every"] and cfg["checkpoint-every"] >= 0,
           f"checkpoint-every must be an integer >= 0, got {cfg['checkpoint-every']}")
    _check(not cfg["resume"] or bool(cfg["run-name"]),
           "resume=true needs the run-name (and out-dir) of the run to continue")
    METHODS[cfg["method"]].strategy.check_config(cfg)


def seed_everything(seed: int) -> None:
    """Seed Python, NumPy and torch (partitions and sampling take ``seed`` explicitly)."""
    os.environ["PYTHONHASHSEED"] = str(seed)
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def out_root(cfg: dict) -> Path:
    """``out-dir`` as an absolute path (the ServerApp runs from an installed copy)."""
    return Path(cfg["out-dir"]).expanduser().resolve()
