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

from common.keys import ConfigError, Int, Keys, fields, parse, shown
from common.outputs import check_run_name
from simulations.methods import load as _load

PYPROJECT = Path(__file__).resolve().parent.parent / "pyproject.toml"

FAULT_KINDS = ("raise", "nan", "shape", "timeout", "mixed")

# Renamed keys: old name -> new name (an old name is refused with a line naming the new one).
RENAMED = {
    "alpha": "dirichlet-alpha",
    "fourier-alpha": "sdwc-fourier-alpha",
    "alpha-personal": "fedhip-alpha",
    "lsi-translator-residual": "lsi-translator",
    "fedhip-val-fraction": "local-val-fraction",
}


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
    local_val_fraction: float = Field(0.1, ge=0, lt=1, description="share of each client's data left after its "
                                      "local test split kept as its local validation split (`personalized-val-accuracy`; what a method chooses "
                                      "per client uses it, never the local test split)")
    val_fraction: float = Field(0.1, ge=0, lt=1, description="share of the training pool held out on the server as "
                                "the validation split (`val-accuracy`, `val-loss`; seeded by `seed`, stratified by "
                                "label, never given to a client; 0 = none). Tuning selects on it (docs/sweeps.md)")
    heldout_domain: Int = Field(0, ge=0, description="`partitioner=domain`: the domain id no client holds "
                                                     "(gives `heldout-accuracy`)")
    eval_bn: Literal["eval", "batch"] = Field(
        "eval", description="`partitioner=domain`: the BatchNorm mode behind `heldout-accuracy`, `source-accuracy` "
                            "and `selected-*`: `eval` (running statistics) or `batch` (train-mode BatchNorm on "
                            "shuffled test batches of 32, the official FedDG-LSI test loop); both are always "
                            "reported, suffixed `-eval` / `-batch`")


class TrainKeys(Keys):
    """The method, the model and federated training."""

    method: str = Field("fedavg", description="`fedavg`, `fedprox`, `ditto`, `fedhip`, `fedsdwc`, `fedlsi`, `gifd` "
                                              "(registry: `simulations/methods.py`)")
    model: str = Field("cnn", description="`cnn`, `resnet18`, `wrn-<depth>-<width>`, `timm:<name>` (random init), "
                                          "`pretrained:<name>[@<size>]` (ImageNet weights), "
                                          "`linear:<name>[@<size>]` (a Linear head on that backbone's frozen, cached "
                                          "features), `lsi-<base>`")
    num_server_rounds: Int = Field(5, ge=1, description="federated rounds")
    fraction_train: float = Field(1.0, gt=0, le=1, description="share of clients sampled for training each round")
    fraction_evaluate: float = Field(1.0, ge=0, le=1, description="share of clients asked for personalized "
                                                                   "evaluation each round (0 = skip)")
    partition_assignment: Literal["server", "node"] = Field(
        "server", description="`server`: the server samples partition ids of the `num-clients` population with the seed, "
        "spreads them over the nodes and names each client's partition in its message (no start-up message; server "
        "state per client sampled; per-client state in `<run>/client-state/`; simulation and `--local`). `node`: "
        "each node keeps the partition of its node config, asked once from every node at start (real SuperNodes "
        "with their own data)")
    num_clients: Int = Field(0, ge=0, description="the population of virtual clients (partitions) sampled from each "
                             "round; 0 = one per node. Above the node count a node serves several clients a round "
                             "(`partition-assignment=server`: simulation, `--local`); real SuperNodes "
                             "(`partition-assignment=node`) are the population, and another value fails at start")
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
    """Outputs, checkpoints, the evaluation schedule and injected faults."""

    out_dir: str = Field("outputs", description="where runs are written; a relative path is taken from the "
                                            "launcher's working folder (by hand, `flwr run .`: the folder Flower's "
                                            "local SuperLink started in; README \"Where results go\")")
    run_name: str = Field("", description="folder of the run under `out-dir`, a plain name (letters, digits, "
                                          "`._=-`, not starting with `.`); `\"\"` = `<method>-<dataset>-seed<seed>-<time>`")
    resume: bool = Field(False, description="continue `<out-dir>/<run-name>/` from its `checkpoint.pt`")
    overwrite: bool = Field(False, description="let a new run replace a `run-name` folder that already holds a "
                                               "run (else such a run fails at start)")
    checkpoint_every: Int = Field(1, ge=0, description="write `checkpoint.pt` every N rounds (0 = never)")
    feature_cache: str = Field("", description="a folder under `out-dir` (a plain name) where frozen-backbone "
                               "features (FedHiP, `linear:` models) are kept on disk, so that runs in other "
                               "processes (a sweep's `--jobs`, `--resume`, Ray) reuse them; `\"\"` = off (each "
                               "process caches them in memory only). A sweep sets `feature-cache=feature-cache` "
                               "unless its YAML sets the key (docs/sweeps.md)")
    evaluate_every: Int = Field(1, ge=1, description="evaluate the global model (server test and validation sets, "
                                                     "clients' local tests, OOD and domain suites) at round 0, every "
                                                     "N rounds and the last round; other rows have no evaluation "
                                                     "metrics (training is unchanged; `ood-eval-every`'s rounds are "
                                                     "evaluated too)")
    fault_rate: float = Field(0.0, ge=0, le=1, description="(tests) share of client replies that fail on purpose")
    fault_kind: Literal[FAULT_KINDS] = Field("raise", description="(tests) how they fail; `timeout` sleeps past "
                                                                  "`round-timeout`, `mixed` = one of the first three")
    tracker: Literal["none", "tensorboard", "mlflow"] = Field(
        "none", description="also send each round's metrics to `tensorboard` (`<run>/tensorboard/`) or `mlflow` "
                            "(`mlflow-uri`); needs the `tracking` extra (`simulations/tracking.py`)")
    mlflow_uri: str = Field("", description="`tracker=mlflow`: MLflow tracking URI; `\"\"` = the local database "
                                            "`sqlite:///<out-dir>/mlflow.db` (no server)")
    progress_every: float = Field(10.0, ge=0, description="seconds of silence after which the server logs a "
                                                          "`[progress]` line naming what it does (0 = never)")
    server_threads: Int = Field(0, ge=0, description="torch threads for the server's own work (aggregation, "
                                                   "evaluation, server phases); 0 = the CPUs the ServerApp may use")

    @classmethod
    def check(cls, cfg: dict) -> None:
        from simulations.tracking import check

        check_run_name(cfg["feature-cache"], "feature-cache")
        reason = check(cfg["tracker"])
        if reason:
            raise ConfigError(reason)


RUN_GROUPS: tuple[type[Keys], ...] = (DataKeys, TrainKeys, RunKeys)


def shared_groups() -> tuple[type[Keys], ...]:
    """The keys every run has: the groups above, then the evaluation and audit groups the
    method registry lists (``simulations/methods.py``: declared next to their code)."""
    from simulations.methods import SHARED_KEYS

    return RUN_GROUPS + tuple(_load(path) for path in SHARED_KEYS)


def key_groups() -> dict[str, type[Keys]]:
    """Every declaration, by the name docs/config.md uses: shared groups, then one per method."""
    from simulations.methods import METHODS

    groups = {g.__name__.removesuffix("Keys").lower(): g for g in shared_groups()}
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
        value = {"alpha-personal": "auto (it weights the LOCAL side now)",
                 "lsi-translator-residual": "residual" if overrides[old] else "rescaled",
                 "fedhip-val-fraction": "0.1 (FedHiP chooses α on the validation split every method uses)"}.get(old, repr(overrides[old]))
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
    """Check (and type) ``cfg`` in place, without data: the shared keys (each group's
    ``check`` too), then the method's keys, then the method's ``check_config`` (rules across keys)."""
    from datasets import DATASETS
    from datasets.partition import PARTITIONERS
    from models import MODEL_NAMES, MODELS
    from simulations.methods import METHODS

    shared = shared_groups()
    for group in shared:
        cfg.update(parse(group, cfg, ConfigError))
    _check(cfg["method"] in METHODS, f"unknown method '{cfg['method']}': pass one of {sorted(METHODS)}")
    _check(cfg["dataset"] in DATASETS, f"unknown dataset '{cfg['dataset']}': pass one of {sorted(DATASETS)}")
    _check(cfg["partitioner"] in PARTITIONERS,
           f"unknown partitioner '{cfg['partitioner']}': pass one of {sorted(PARTITIONERS)}")
    _check(any(re.fullmatch(p, cfg["model"]) for p in MODELS),
           f"unknown model '{cfg['model']}': pass {MODEL_NAMES}")
    _check(cfg["device"] in ("auto", "cpu", "cuda") or re.fullmatch(r"cuda:\d+", cfg["device"]) is not None,
           f"device must be auto, cpu or cuda[:N], got {shown(cfg['device'])}")
    check_run_name(cfg["run-name"])
    _check(not cfg["resume"] or bool(cfg["run-name"]),
           "resume=true needs the run-name (and out-dir) of the run to continue")
    for group in shared:
        group.check(cfg)
    strategy = METHODS[cfg["method"]].strategy
    own = set()
    if strategy.keys is not None:
        cfg.update(parse(strategy.keys, cfg, ConfigError))
        own = set(fields(strategy.keys))
    declared = {k for g in shared for k in fields(g)}
    for key, default in defaults().items():  # other methods' keys: only their type
        if key in own or key in declared:
            continue
        value = cfg[key]
        if isinstance(default, bool):
            _check(isinstance(value, bool), f"{key} must be true or false, got {shown(value)}")
        elif isinstance(default, (int, float)):
            _check(isinstance(value, (int, float)) and not isinstance(value, bool) and np.isfinite(value),
                   f"{key} must be a number, got {shown(value)}")
    strategy.check_config(cfg)


def seed_everything(seed: int) -> None:
    """Seed Python, NumPy and torch (partitions and sampling take ``seed`` explicitly)."""
    os.environ["PYTHONHASHSEED"] = str(seed)
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)




def main(argv: list[str] | None = None) -> int:
    """``python -m simulations.config "KEY=VALUE ..." | FILE.toml``: check a run config in
    seconds, before ``flwr run`` (the Makefile does): every key named, one line, exit 2."""
    import sys

    from flwr.common.config import parse_config_args

    args = sys.argv[1:] if argv is None else argv
    try:
        resolve(parse_config_args([" ".join(args)]) if any(a.strip() for a in args) else {})
    except (ConfigError, ValueError) as err:
        print(f"error: bad run config: {err}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
