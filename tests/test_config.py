"""Run config: defaults from pyproject, one-line errors for bad values."""

import re
import time
from pathlib import Path

import pytest

from simulations.config import ConfigError, defaults, resolve


def test_defaults_are_complete_and_valid():
    cfg = resolve({})
    assert cfg == defaults()
    for key in ("method", "dataset", "data-root", "partitioner", "alpha", "classes-per-client",
                "num-server-rounds", "fraction-train", "local-epochs", "batch-size", "lr", "model",
                "seed", "out-dir", "proximal-mu"):
        assert key in cfg


@pytest.mark.parametrize(
    "over, message",
    [
        ({"method": "fedmagic"}, "unknown method 'fedmagic': pass one of"),
        ({"dataset": "mnits"}, "unknown dataset 'mnits'"),
        ({"partitioner": "random"}, "unknown partitioner 'random'"),
        ({"model": "vgg99"}, "unknown model 'vgg99'"),
        ({"alpha": 0.0}, "alpha must be > 0"),
        ({"alpha": -1.0}, "alpha must be > 0"),
        ({"fraction-train": 1.5}, "fraction-train must be in"),
        ({"num-server-rounds": 0}, "num-server-rounds must be an integer >= 1"),
        ({"lr": "fast"}, "lr must be a number"),
        ({"download": "yes"}, "download must be true or false"),
        ({"no-such-key": 1}, "unknown run-config key"),
    ],
)
def test_bad_values_fail_fast_with_one_line(over, message):
    t0 = time.perf_counter()
    with pytest.raises(ConfigError, match=message) as err:
        resolve(over)
    assert "\n" not in str(err.value) and time.perf_counter() - t0 < 2


def test_every_run_config_key_is_documented_in_config_page():
    docs = Path(__file__).resolve().parent.parent / "docs"
    readme = "\n".join(p.read_text() for p in [docs / "config.md", *sorted((docs / "methods").glob("*.md"))])
    first_cells = re.findall(r"^\| ([^|]+) \|", readme, re.M)  # a row may name several: `a` / `b`
    documented = {key for cell in first_cells for key in re.findall(r"`([a-z0-9-]+)`", cell)}
    assert sorted(set(defaults()) - documented) == []
