"""The run config: the keys of ``[tool.flwr.app.config]`` in pyproject.toml.

``flwr run --run-config``, ``conf/*.toml`` and sweep YAMLs use the same keys. The shared
keys are declared below, each method's own next to its strategy (``simulations/keys.py``
says how); ``resolve`` fills the defaults and ``validate`` rejects a bad value with one
line that says what to pass.
"""

from __future__ import annotations

import functools
import os
import random
import re
import tomllib
from pathlib import Path
from typing import Literal

import numpy as np
import torch
from pydantic import Field

from simulations.keys import Int, Keys, fields, parse

PYPROJECT = Path(__file__).resolve().parent.parent / "pyproject.toml"

FAULT_KINDS = ("raise", "nan", "shape", "timeout", "mixed")

# Renamed keys: old name -> new name (an old name is refused with a line naming the new one).
RENAMED = {
    "alpha": "dirichlet-alpha",
    "fourier-alpha": "sdwc-fourier-alpha",
    "alpha-personal": "fedhip-alpha",
}


class ConfigError(ValueError):
    """A run-config value that cannot be used."""


class DataKeys(Keys):
    """Data and its split into clients."""

    dataset: str = Field("mnist", description="dataset name: `mnist`, `image-folder`, ... "
                                               "(`datasets/registry.py`; see README)")
    data_root: str = Field("", description="folder with user data; `\"\"` = `~/.cache/flwr-data` "
                                           "(also the cache for converted data)")
    download: bool = Field(False, description="let torchvision download CIFAR where the network is reachable")
    image_size: Int = Field(64, ge=8, description="side in pixels image-folder sets are resized to (`image-folder`, "
                                                  "`pacs`, `officehome`, `domainnet`, `tinyimagenet`)")
    partitioner: str = Field("dirichlet", description="`iid`, `dirichlet`, `pathological`, `domain` "
                                                      "(one source domain per client), `draw` (cross-device: any "
                                                      "number of clients, overlapping seeded draws from the pool)")
    dirichlet_alpha: float = Field(0.5, gt=0, description="Dirichlet concentration (smaller = more label skew)")
    classes_per_client: Int = Field(2, ge=1, description="classes per client for `pathological`")
    samples_per_client: Int = Field(20, ge=2, description="`partitioner=draw` (cross-device): samples each client "
                                    "draws, without replacement, from the whole pool (`default_rng([seed, "
                                    "partition-id])`); clients may hold the same samples, so the population is not "
                                    "limited by the pool's size")
    local_test_fraction: float = Field(0.2, ge=0, lt=1,
                                       description="share of each client's partition kept as its local test split")
    heldout_domain: Int = Field(0, ge=0, description="`partitioner=domain`: the domain id no client holds "
                                                     "(gives `heldout-accuracy`)")
    eval_bn: Literal["eval", "batch"] = Field(
        "eval", description="`partitioner=domain`: the BatchNorm mode behind `heldout-accuracy`, `source-accuracy` "
                            "and `selected-*`: `eval` (running statistics) or `batch` (train-mode BatchNorm on "
                            "shuffled test batches of 32, the official FedDG-LSI test loop); both are always "
                            "reported, suffixed `-eval` / `-batch`")


class TrainKeys(Keys):
    """The method, the model and federated training."""

    method: str = Field("fedavg", description="`fedavg`, `fedprox`, `fedhip`, `fedsdwc`, `fedlsi`, `gifd` "
                                              "(registry: `simulations/methods.py`)")
    model: str = Field("cnn", description="`cnn`, `resnet18`, `wrn-<depth>-<width>`, `timm:<name>` (random init), "
                                          "`pretrained:<name>[@<size>]` (ImageNet weights), "
                                          "`linear:<name>[@<size>]` (a Linear head on that backbone's frozen, cached "
                                          "features), `lsi-<base>`")
    num_server_rounds: Int = Field(5, ge=1, description="federated rounds")
    fraction_train: float = Field(1.0, gt=0, le=1, description="share of nodes sampled for training each round")
    fraction_evaluate: float = Field(1.0, ge=0, le=1, description="share of nodes asked for personalized "
                                                                   "evaluation each round (0 = skip)")
    partition_assignment: Literal["server", "node"] = Field(
        "server", description="`server`: the server numbers the nodes 0..N-1 in node-id order, samples partition "
        "ids with the seed and names each sampled node's partition in its message (no start-up message; server "
        "state per node sampled; simulation and `--local`). `node`: each node keeps the partition of its node "
        "config, asked once from every node at start (real SuperNodes with their own data)")
    min_train_nodes: Int = Field(2, ge=1, description="fewest good replies for a round to update the model")
    round_timeout: float = Field(600.0, gt=0, description="seconds to wait for replies in a round")
    max_num_examples: Int = Field(0, ge=0, description="the most `num-examples` (its weight in the average) one "
                                  "reply may claim; above it the reply is dropped. 0 = the size of the training "
                                  "pool the server loads; set it for nodes with more local data (docs/security.md)")
    local_epochs: Int = Field(2, ge=0, description="local epochs per round")
    batch_size: Int = Field(32, ge=1, description="local batch size")
    lr: float = Field(0.02, gt=0, description="local SGD learning rate")
    momentum: float = Field(0.9, ge=0, description="local SGD momentum (reset every round)")
    weight_decay: float = Field(0.0, ge=0, description="local SGD weight decay")
    device: str = Field("auto", description="`auto` (the GPU Ray assigned, else CPU), `cpu`, `cuda`, `cuda:N`")
    seed: Int = Field(0, description="seeds Python, NumPy, torch, the partitions, client sampling and batches")


class RunKeys(Keys):
    """Outputs, checkpoints and injected faults."""

    out_dir: str = Field("~/fl-results", description="where runs are written (made absolute)")
    run_name: str = Field("", description="folder of the run under `out-dir`, a plain name (letters, digits, "
                                          "`._=-`, not starting with `.`); `\"\"` = `<method>-<dataset>-seed<seed>-<time>`")
    resume: bool = Field(False, description="continue `<out-dir>/<run-name>/` from its `checkpoint.pt`")
    overwrite: bool = Field(False, description="let a new run replace a `run-name` folder that already holds a "
                                               "run (else such a run fails at start)")
    checkpoint_every: Int = Field(1, ge=0, description="write `checkpoint.pt` every N rounds (0 = never)")
    fault_rate: float = Field(0.0, ge=0, le=1, description="(tests) share of client replies that fail on purpose")
    fault_kind: Literal[FAULT_KINDS] = Field("raise", description="(tests) how they fail; `timeout` sleeps past "
                                                                  "`round-timeout`, `mixed` = one of the first three")


class OodKeys(Keys):
    """The OOD evaluation suite (any method; see docs/methods/fedsdwc.md)."""

    corruptions: str = Field("", description="covariate shift: `\"\"` = off, `all` (19 CIFAR-10-C types), "
                                             "`common` (15) or a comma list, e.g. `fog,contrast`")
    severity: Int = Field(0, ge=0, le=5, description="corruption severity 1..5, or 0 = image i gets level i % 5 + 1")
    corruption_seed: Int = Field(0, ge=0, description="seeds the corrupted images (same for every method and seed)")
    corruption_constants: Literal["auto", "cifar", "imagenet"] = Field(
        "auto", description="severity constants: `cifar` (CIFAR-10-C's, 14 of the 19 types; `datasets/cifar_c.py`), "
                            "`imagenet` (the library's ImageNet-C ones), `auto` = `cifar` for images of 32 px and below")
    ood_datasets: str = Field("", description="semantic shift: comma list of OOD sets, e.g. `mnist` for "
                                              "Fashion-MNIST, `digits`, synthetic `noise-gaussian`, "
                                              "`noise-rademacher`, `blobs`; `\"\"` = off")
    ood_max_samples: Int = Field(2000, ge=0, description="size of the fixed ID/corrupted/OOD subsets (0 = all)")
    ood_eval_every: Int = Field(0, ge=0, description="run the suite every N rounds too (0 = last round only)")


class AuditKeys(Keys):
    """The privacy audit of a method's own traffic (any method; docs/privacy-audit.md)."""

    audit_attacks: str = Field("", description="comma list of `ig`, `dlg` (weight uploads), `features` (FedHiP's "
                                               "statistics); `\"\"` = off")
    audit_rounds: str = Field("1", description="comma list of the rounds whose replies are attacked")
    audit_clients: Int = Field(1, ge=1, description="replies attacked per audited round (first in partition order)")
    audit_budget: Int = Field(200, ge=1, description="attack steps per reply (gradient- or feature-matching evaluations)")
    audit_max_examples: Int = Field(64, ge=1, description="a reply of more examples is not attacked (one candidate "
                                                          "image per example)")


SHARED: tuple[type[Keys], ...] = (DataKeys, TrainKeys, RunKeys, OodKeys, AuditKeys)


def key_groups() -> dict[str, type[Keys]]:
    """Every declaration, by the name docs/config.md uses: shared groups, then one per method."""
    from simulations.methods import METHODS

    groups = {g.__name__.removesuffix("Keys").lower(): g for g in SHARED}
    for name, method in METHODS.items():  # methods sharing a group (ablations) list it once
        if method.strategy.keys is not None and method.strategy.keys not in groups.values():
            groups[name] = method.strategy.keys
    return groups


@functools.lru_cache(maxsize=1)
def defaults() -> dict:
    """Default run config, read from pyproject.toml (tests check it against the declarations)."""
    with open(PYPROJECT, "rb") as f:
        return dict(tomllib.load(f)["tool"]["flwr"]["app"]["config"])


def resolve(overrides: dict) -> dict:
    """Defaults updated with ``overrides``; unknown and renamed keys are an error."""
    base = defaults()
    old = next((k for k in overrides if k in RENAMED), None)
    if old is not None:
        value = "auto (it weights the LOCAL side now)" if old == "alpha-personal" else repr(overrides[old])
        raise ConfigError(f"run-config key '{old}' was renamed: pass {RENAMED[old]}={value}")
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
    """Check (and type) ``cfg`` in place, without data and without Flower: the shared keys,
    then the method's keys, then the method's ``check_config`` (rules across keys)."""
    from datasets.partition import PARTITIONERS
    from datasets import DATASETS
    from models import MODEL_NAMES, MODELS
    from simulations.methods import METHODS
    from strategies.ood_eval import check_keys

    for group in SHARED:
        cfg.update(parse(group, cfg, ConfigError))
    _check(cfg["method"] in METHODS, f"unknown method '{cfg['method']}': pass one of {sorted(METHODS)}")
    _check(cfg["dataset"] in DATASETS, f"unknown dataset '{cfg['dataset']}': pass one of {sorted(DATASETS)}")
    _check(cfg["partitioner"] in PARTITIONERS,
           f"unknown partitioner '{cfg['partitioner']}': pass one of {sorted(PARTITIONERS)}")
    _check(any(re.fullmatch(p, cfg["model"]) for p in MODELS),
           f"unknown model '{cfg['model']}': pass {MODEL_NAMES}")
    _check(cfg["device"] in ("auto", "cpu", "cuda") or re.fullmatch(r"cuda:\d+", cfg["device"]) is not None,
           f"device must be auto, cpu or cuda[:N], got {cfg['device']!r}")
    check_run_name(cfg["run-name"])
    _check(not cfg["resume"] or bool(cfg["run-name"]),
           "resume=true needs the run-name (and out-dir) of the run to continue")
    check_keys(cfg)
    from strategies.audit import check_keys as check_audit_keys

    check_audit_keys(cfg)
    strategy = METHODS[cfg["method"]].strategy
    own = set()
    if strategy.keys is not None:
        cfg.update(parse(strategy.keys, cfg, ConfigError))
        own = set(fields(strategy.keys))
    shared = {k for g in SHARED for k in fields(g)}
    for key, default in defaults().items():  # other methods' keys: only their type
        if key in own or key in shared:
            continue
        value = cfg[key]
        if isinstance(default, bool):
            _check(isinstance(value, bool), f"{key} must be true or false, got {value!r}")
        elif isinstance(default, (int, float)):
            _check(isinstance(value, (int, float)) and not isinstance(value, bool) and np.isfinite(value),
                   f"{key} must be a number, got {value!r}")
    strategy.check_config(cfg)


RUN_NAME = re.compile(r"[A-Za-z0-9_=-][A-Za-z0-9._=-]*")


def check_run_name(name) -> None:
    """``run-name`` is one plain folder name, so that a run writes under ``out-dir`` only."""
    _check(isinstance(name, str) and (name == "" or (RUN_NAME.fullmatch(name) is not None and name != "..")),
           f"run-name must be a plain folder name (letters, digits, '._=-', no '/', not '.' or '..'), got {name!r}")


def seed_everything(seed: int) -> None:
    """Seed Python, NumPy and torch (partitions and sampling take ``seed`` explicitly)."""
    os.environ["PYTHONHASHSEED"] = str(seed)
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def out_root(cfg: dict) -> Path:
    """``out-dir`` as an absolute path (the ServerApp runs from an installed copy)."""
    return Path(cfg["out-dir"]).expanduser().resolve()


RUN_FILES = ("config.json", "metrics.csv", "checkpoint.pt")


def check_run_folder(cfg: dict) -> None:
    """Never overwrite a run by accident: a ``run-name`` folder that already holds a run
    (any of ``RUN_FILES``) needs ``resume=true`` or ``overwrite=true``."""
    if not cfg["run-name"] or cfg["resume"] or cfg["overwrite"]:
        return
    folder = out_root(cfg) / cfg["run-name"]
    found = [f for f in RUN_FILES if (folder / f).exists()]
    _check(not found, f"{folder} already holds a run ({', '.join(found)}): pass resume=true to continue it, "
                      "overwrite=true to replace it, or another run-name")
