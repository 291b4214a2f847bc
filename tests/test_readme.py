"""The README's recipes run as written (at a tiny size, in-process) and its links resolve."""

from __future__ import annotations

import re
import sys
import types
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml

ROOT = Path(__file__).resolve().parent.parent
README = ROOT / "README.md"
TINY = {"num-server-rounds": 1, "local-epochs": 1, "image-size": 16, "backbone-size": 32, "checkpoint-every": 0}


def blocks(recipe: str) -> list[str]:
    """Code blocks from ``<!-- recipe: NAME -->`` to the next ``## `` heading."""
    section = README.read_text().split(f"<!-- recipe: {recipe} -->", 1)[1].split("\n## ", 1)[0]
    return re.findall(r"```\w*\n(.*?)```", section, re.S)


@pytest.fixture(scope="module")
def images(tmp_path_factory) -> Path:
    """Three classes of 20 tiny images, one colour per class (any model can tell them apart)."""
    from tests.test_datasets import write_images

    root = tmp_path_factory.mktemp("my-images")
    write_images(root, ["cat", "dog", "eel"], 20)
    return root


def last_row(run: Path) -> pd.Series:
    frame = pd.read_csv(run / "metrics.csv")
    return frame[frame["round"] == frame["round"].max()].iloc[0]


def test_recipe_own_images_fedhip_against_fedavg(images, tmp_path):
    from flwr.common.config import parse_config_args

    from simulations.config import resolve
    from simulations.local import run_local

    *commands, report_line = blocks("own-images")[0].replace("\\\n", " ").strip().splitlines()
    rows = {}
    for command in commands:
        overrides = parse_config_args([re.search(r'--run-config "([^"]*)"', command)[1]])
        nodes = int(re.search(r"num-supernodes=(\d+)", command)[1])
        assert overrides["dataset"] == "image-folder" and nodes == 5
        cfg = resolve({**overrides, **TINY, "data-root": str(images), "out-dir": str(tmp_path),
                       "run-name": overrides["method"]})
        rows[overrides["method"]] = last_row(run_local(cfg, 3))
    assert set(rows) == {"fedhip", "fedavg"}
    assert rows["fedhip"]["round"] == 1 and rows["fedhip"]["failures"] == 0
    assert rows["fedhip"]["accuracy"] > 0.9 and rows["fedhip"]["personalized-accuracy"] > 0.9  # chance: 1/3
    assert rows["fedavg"]["round"] == 1 and 0 <= rows["fedavg"]["accuracy"] <= 1
    from simulations.report import main as report

    assert report_line == "python -m simulations.report outputs/mine"
    assert report([str(tmp_path)]) == 0  # out-dir holds the two runs: the report pairs them
    pair = pd.read_csv(tmp_path / "paired.csv").set_index("metric").loc["accuracy"]
    assert pair["method"] == "fedhip" and pair["baseline"] == "fedavg"
    assert pair["mean-diff"] == pytest.approx(rows["fedhip"]["accuracy"] - rows["fedavg"]["accuracy"])


def test_recipe_sweep_and_report(images, tmp_path):
    from simulations.report import main as report
    from simulations.sweep import main as sweep

    spec = yaml.safe_load(blocks("sweep")[0])
    assert spec["grid"]["method"] == ["fedavg", "fedhip"] and len(spec["grid"]["seed"]) == 3
    spec["base"].update({**TINY, "data-root": str(images), "num-supernodes": 3})
    spec["grid"]["seed"] = [0, 1]
    path = tmp_path / "my-sweep.yaml"
    path.write_text(yaml.safe_dump(spec))
    command = blocks("sweep")[1].splitlines()
    assert command[0].startswith("python -m simulations.sweep my-sweep.yaml --local")
    assert command[1].startswith("python -m simulations.report outputs/my-sweep --baseline fedavg")
    out = tmp_path / "outputs" / "my-sweep"
    assert sweep([str(path), "--local", "--out-dir", str(out)]) == 0
    assert report([str(out), "--baseline", "fedavg"]) == 0
    summary = pd.read_csv(out / "summary.csv").set_index("method")
    assert summary.loc["fedhip", "n"] == 2 and summary.loc["fedavg", "n"] == 2
    assert (out / "report.md").read_text().count("fedhip") >= 1 and (out / "paired.csv").exists()


@pytest.fixture
def fedavgm(monkeypatch, tmp_path):
    """The README's new method, as if its two files and registry line were added."""
    from simulations import config
    from simulations.keys import render_pyproject
    from simulations.methods import METHODS, Method

    code = {b.splitlines()[0].lstrip("# ").strip(): b for b in blocks("method") if b.startswith("# ")}
    assert set(code) == {"strategies/fedavgm.py", "clients/fedavgm.py"}
    for path, source in code.items():
        name = path.removesuffix(".py").replace("/", ".")
        module = types.ModuleType(name)
        exec(compile(source, path, "exec"), module.__dict__)
        monkeypatch.setitem(sys.modules, name, module)
    line = next(b for b in blocks("method") if b.startswith('"fedavgm"')).strip().rstrip(",")
    monkeypatch.setitem(METHODS, "fedavgm", eval("{" + line + "}", {"Method": Method})["fedavgm"])
    pyproject = tmp_path / "pyproject.toml"  # what `python -m simulations.keys` writes
    pyproject.write_text(render_pyproject(config.PYPROJECT.read_text(), config.key_groups()))
    monkeypatch.setattr(config, "PYPROJECT", pyproject)
    config.defaults.cache_clear()
    yield
    config.defaults.cache_clear()


def test_recipe_new_method_in_two_files(fedavgm, images, tmp_path):
    from simulations.config import ConfigError, defaults, resolve
    from simulations.local import run_local

    assert defaults()["server-momentum"] == 0.9 and defaults()["server-lr"] == 1.0
    with pytest.raises(ConfigError, match=re.escape("server-momentum must be in [0, 1), got 1.5")):
        resolve({"method": "fedavgm", "server-momentum": 1.5})
    base = {**TINY, "dataset": "image-folder", "data-root": str(images), "out-dir": str(tmp_path),
            "num-server-rounds": 2}
    rows = {name: last_row(run_local(resolve({**base, **over, "run-name": name}), 3)) for name, over in {
        "fedavg": {"method": "fedavg"},
        "fedavgm-0": {"method": "fedavgm", "server-momentum": 0.0},  # beta = 0, lr = 1: FedAvg
        "fedavgm": {"method": "fedavgm", "server-momentum": 0.9},
    }.items()}
    assert rows["fedavgm-0"]["loss"] == pytest.approx(rows["fedavg"]["loss"], rel=1e-4)
    assert rows["fedavgm"]["loss"] != pytest.approx(rows["fedavg"]["loss"], rel=1e-4)  # momentum acts in round 2


def test_recipe_dataset_defined_in_code(tmp_path):
    from datasets import DATASETS, load_dataset
    from datasets.partition import partition_for, server_validation
    from simulations.config import resolve

    source = blocks("dataset")[0]
    try:
        exec(compile(source, "datasets/my_set.py", "exec"), {"__name__": "datasets.my_set"})
        rng = np.random.default_rng(0)
        np.savez(tmp_path / "my-set.npz", x=rng.integers(0, 256, (50, 12, 12), dtype=np.uint8),
                 y=np.repeat(np.arange(5), 10))
        bundle = load_dataset("my-set", str(tmp_path))
        assert bundle.num_classes == 5 and bundle.input_shape == (1, 12, 12)
        assert len(bundle.train) == 40 and len(bundle.test) == 10
        x, _ = bundle.train[0]
        assert x.dtype.is_floating_point and -1 <= x.min() and x.max() <= 1
        cfg = resolve({"dataset": "my-set", "data-root": str(tmp_path), "partitioner": "iid"})
        held = len(server_validation(cfg, bundle)[1])  # the server's validation split: 10% of each class (val-fraction)
        assert held == 5 and sum(len(p) for p in partition_for(cfg, bundle, 4)) + held == 40
    finally:
        DATASETS.pop("my-set", None)


def slug(heading: str) -> str:
    return re.sub(r"[^\w\- ]", "", heading.strip().lower()).replace(" ", "-")


@pytest.mark.parametrize("page", ["README.md", "docs/config.md", "docs/architecture.md", "docs/sweeps.md",
                                  "docs/data.md"])
def test_links_resolve(page):
    path = ROOT / page
    for target in re.findall(r"\]\(([^)\s]+)\)", path.read_text()):
        if target.startswith(("http://", "https://")):
            continue
        file, _, anchor = target.partition("#")
        dest = (path.parent / file).resolve() if file else path
        assert dest.exists(), f"{page}: broken link {target}"
        if anchor:
            headings = re.findall(r"^#+ (.+)$", dest.read_text(), re.M)
            assert anchor in {slug(h) for h in headings}, f"{page}: no heading #{anchor} in {file}"


def test_readme_is_short():
    assert len(README.read_text().splitlines()) <= 300
