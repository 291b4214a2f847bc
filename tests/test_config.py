"""Run config: declarations, pyproject defaults and docs agree; one-line errors for bad values."""

import time
from pathlib import Path

import pytest

from common.keys import ConfigError, fields
from simulations.config import RENAMED, defaults, key_groups, resolve, shared_groups
from simulations.keys import DOCS, render


def test_defaults_are_complete_and_valid():
    cfg = resolve({})
    assert cfg == defaults()
    for key in ("method", "dataset", "data-root", "partitioner", "dirichlet-alpha", "classes-per-client",
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
        ({"dirichlet-alpha": 0.0}, "dirichlet-alpha must be > 0, got 0.0"),
        ({"dirichlet-alpha": -1.0}, "dirichlet-alpha must be > 0"),
        ({"alpha": 0.3}, "run-config key 'alpha' was renamed: pass dirichlet-alpha=0.3"),
        ({"method": "fedhip", "personal-fusion": "mean"}, "personal-fusion must be weights or statistics"),
        ({"method": "gifd", "defense": "dp"}, "defense must be one of none, noise, clip, prune, got 'dp'"),
        ({"severity": 6}, "severity must be an integer in \\[0, 5\\], got 6"),
        ({"local-test-fraction": 1.0}, "local-test-fraction must be in \\[0, 1\\)"),
        ({"lr": float("nan")}, "lr must be"),
        ({"momentum": True}, "momentum must be a number"),
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


def test_every_method_keeps_the_shared_checks():
    for method in ("fedavg", "fedhip", "fedsdwc", "gifd"):
        with pytest.raises(ConfigError, match="unknown corruption"):
            resolve({"method": method, "corruptions": "bogus"})


def test_values_are_typed_by_their_declaration():
    cfg = resolve({"lr": 1, "num-server-rounds": 3.0})
    assert cfg["lr"] == 1.0 and isinstance(cfg["lr"], float)
    assert cfg["num-server-rounds"] == 3 and isinstance(cfg["num-server-rounds"], int)


def declared() -> dict:
    """key -> (group, default) over every declaration."""
    out = {}
    for name, group in key_groups().items():
        for key, field in fields(group).items():
            assert key not in out, f"{key} declared by {out[key][0]} and {name}"
            out[key] = (name, field.default)
    return out


def test_pyproject_defaults_match_the_declarations():
    keys = declared()
    assert sorted(set(defaults()) - set(keys)) == [], "pyproject keys that nothing declares"
    assert sorted(set(keys) - set(defaults())) == [], "declared keys missing from pyproject"
    wrong = {k: (v, keys[k][1]) for k, v in defaults().items()
             if v != keys[k][1] or type(v) is not type(keys[k][1])}
    assert wrong == {}, "pyproject default != declared default"
    assert set(RENAMED).isdisjoint(keys) and set(RENAMED.values()) <= set(keys)


def test_config_page_is_generated_from_the_declarations():
    text = DOCS.read_text()
    assert render(text, key_groups(), RENAMED) == text, "docs/config.md is stale: run python -m simulations.keys"
    assert "<!-- renamed -->" in text
    for name in key_groups():
        assert f"<!-- keys: {name} -->" in text, f"docs/config.md has no table for {name}"


def test_sync_renames_updates_and_appends_keys_in_pyproject():
    from pydantic import Field

    from common.keys import Int, Keys
    from simulations.keys import render_pyproject

    class Demo(Keys):
        new_name: float = Field(0.5, gt=0, description="x")
        steps: Int = Field(3, ge=1, description="y")

    text = '[tool.flwr.app.config]\n# kept\nold-name = 0.1\n\n[tool.other]\nold-name = 1\n'
    out = render_pyproject(text, {"demo": Demo}, {"old-name": "new-name"})
    assert out == '[tool.flwr.app.config]\n# kept\nnew-name = 0.5\n# demo\nsteps = 3\n\n[tool.other]\nold-name = 1\n'
    # an old key renamed to a key already there (a method's own split -> the shared one) is dropped, not doubled
    both = '[tool.flwr.app.config]\nnew-name = 0.1\nold-name = 0.2\nsteps = 3\n\n'
    assert render_pyproject(both, {"demo": Demo}, {"old-name": "new-name"}) == \
        '[tool.flwr.app.config]\nnew-name = 0.5\nsteps = 3\n\n'


def test_allowed_values_are_described_from_the_declaration():
    from typing import Annotated, Literal

    from pydantic import Field

    from common.keys import Int, Keys, allowed, parse

    class Demo(Keys):
        mix: Annotated[float, Field(ge=0)] | Literal["auto"] = Field("auto", description="x")
        steps: Int = Field(3, ge=1, le=9, description="y")

    assert [allowed(f) for f in fields(Demo).values()] == [">= 0 or auto", "an integer in [1, 9]"]
    assert parse(Demo, {"mix": 0.5, "steps": 2.0}, ConfigError) == {"mix": 0.5, "steps": 2}
    with pytest.raises(ConfigError, match=r"^mix must be >= 0 or auto, got 'often'$"):
        parse(Demo, {"mix": "often"}, ConfigError)


def test_every_group_has_help_for_every_key():
    for group in key_groups().values():
        assert all(f.description for f in fields(group).values()), group.__name__
    assert all(group in key_groups().values() for group in shared_groups())


CONF = Path(__file__).resolve().parent.parent / "conf"


@pytest.mark.parametrize("path", sorted(CONF.glob("*.toml")), ids=lambda p: p.name)
def test_shipped_run_configs_resolve(path):
    """``flwr run . --run-config conf/X.toml`` reads the file as below; every key must pass."""
    from flwr.common.config import parse_config_args

    overrides = parse_config_args([str(path)])
    cfg = resolve(overrides)
    assert overrides and all(cfg[k] == v for k, v in overrides.items() if k != "num-server-rounds")
    assert cfg["method"] == overrides["method"]

