"""GIFD's attack round replayed in one process, without Flower's engine.

The same partitions, client batches, initial model and code (``GifdClient``,
``GifdStrategy.train_record``/``aggregate``, the ground-truth strip) as a Flower run with
the same seed, called directly, so that studies and benchmarks attack exactly what the
server would have received. An attack round R > 1 first runs rounds 1..R-1 as the run's
ordinary FedAvg rounds (every client, the strategy's own aggregation), so the attacked
model is a trained one.

**Trained models are kept** (``trained_dir``): rounds 1..R-1 cost most of a round-10 cell
on a CPU (9 ResNet-18 rounds, ~33 minutes) and do not depend on the attack, its batch, its
budget or the defense (keys ``ATTACK_ONLY``; the client draws each round's batches from
its own seeded generator, and every attack seeds its own). So the model they end in is
saved once per (run config without those keys, clients, R-1) as
``<trained_dir>/round<R-1>-<hash>.safetensors`` (the config it was trained with, without
``NO_RESULT``'s paths and logging keys, in its
metadata) and read back by every later cell: the same weights, bit for bit. A file that
does not hold this model's weights (names, shapes, dtypes, finite values) stops the study
with one line; it is never unpickled.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from types import SimpleNamespace

from flwr.app import ArrayRecord, ConfigRecord, MetricRecord, RecordDict

from simulations.provenance import NO_RESULT

# keys that only the attacked round, the attacks or the defense read: not in a trained model's identity
ATTACK_ONLY = ("attack", "ig-", "ggl-", "gifd-", "gan-", "defense", "audit-")


class TrainedModelError(ValueError):
    """A kept trained model that does not fit the run it is read for."""


def trained_identity(cfg: dict, clients: int, rounds: int) -> dict:
    """What rounds 1..``rounds`` depend on: the run config without ``ATTACK_ONLY`` keys, and the clients."""
    keep = {k: v for k, v in sorted(cfg.items()) if not k.startswith(ATTACK_ONLY) and k not in NO_RESULT}
    return {**keep, "clients": int(clients), "trained-rounds": int(rounds)}


def trained_path(folder: Path, identity: dict) -> Path:
    digest = hashlib.sha256(json.dumps(identity, sort_keys=True, default=str).encode()).hexdigest()[:16]
    return Path(folder) / f"round{identity['trained-rounds']}-{digest}.safetensors"


def load_trained(path: Path, like: dict) -> dict:
    """The weights in ``path``, checked against the initial model's ``like`` (names, shapes, dtypes)."""
    from safetensors import SafetensorError
    from safetensors.torch import load_file
    import torch

    try:
        state = load_file(str(path))
    except (SafetensorError, OSError, ValueError) as err:
        raise TrainedModelError(f"{path} is not a readable safetensors file ({err}): delete it to train again") from None
    bad = sorted(set(state) ^ set(like)) or [k for k in like if state[k].shape != like[k].shape
                                             or state[k].dtype != like[k].dtype
                                             or (state[k].is_floating_point() and not torch.isfinite(state[k]).all())]
    if bad:
        raise TrainedModelError(f"{path} does not hold this model's weights (first misfit: {bad[0]}): delete it "
                                "to train again")
    return {k: state[k] for k in like}  # the model's own order


def save_trained(path: Path, state: dict, identity: dict) -> None:
    """Write atomically (a reader sees the whole file or none)."""
    from models.feature_store import save_atomic

    path.parent.mkdir(parents=True, exist_ok=True)
    save_atomic({k: v.contiguous() for k, v in state.items()}, path,
                {"identity": json.dumps(identity, sort_keys=True, default=str)})


def client_updates(cfg: dict, clients: int, server_round: int = 1, trained_dir: Path | None = None):
    """(strategy, items) for the attack round: what the server received and the truth.

    ``server_round`` must be one of ``cfg["attack-round"]``; the rounds before it train (or,
    with ``trained_dir``, are read back from an earlier call's file where every earlier round
    is an ordinary one)."""
    from clients.gifd import GifdClient
    from datasets import load_for
    from simulations.client_app import PARTITION_KEYS, client_data
    from simulations.config import seed_everything
    from strategies.audit import strip_ground_truth
    from strategies.gifd import GifdStrategy, attack_rounds

    rounds = attack_rounds(cfg)
    if server_round not in rounds:
        raise ValueError(f"round {server_round} is not an attack round ({cfg['attack-round']}): pass "
                         f"attack-round={server_round}")
    seed_everything(int(cfg["seed"]))
    bundle = load_for(cfg)
    strategy = GifdStrategy(cfg, test_data=bundle)
    arrays = strategy.initial_arrays()
    key = tuple(cfg[k] for k in PARTITION_KEYS)
    nodes = [GifdClient(cfg, client_data(key, pid, clients)) for pid in range(clients)]
    # kept only where rounds 1..R-1 are all ordinary FedAvg rounds (attack=none trains otherwise)
    keep = trained_dir is not None and server_round > 1 and bool(strategy.attacks) and min(rounds) == server_round
    identity = trained_identity(cfg, clients, server_round - 1)
    path = trained_path(trained_dir, identity) if keep else None
    if path is not None and path.exists():
        arrays = ArrayRecord(load_trained(path, arrays.to_torch_state_dict()))
    else:
        for rnd in range(1, server_round):  # ordinary FedAvg rounds (the clients' local training)
            config = dict(strategy.train_record(rnd, arrays, ConfigRecord({"server-round": rnd}))["config"])
            replies = []
            for node in nodes:
                reply = node.train({"arrays": arrays.to_torch_state_dict()}, config, {})
                content = RecordDict({name: ArrayRecord(values) for name, values in reply.arrays.items()})
                content["metrics"] = MetricRecord(reply.metrics)
                replies.append(SimpleNamespace(content=content))
            arrays, _ = strategy.aggregate(rnd, replies)
        if path is not None:
            save_trained(path, arrays.to_torch_state_dict(), identity)
    record = strategy.train_record(server_round, arrays, ConfigRecord({"server-round": server_round}))
    config = dict(record["config"])
    items = []
    for pid, node in enumerate(nodes):
        reply = node.train({"arrays": arrays.to_torch_state_dict()}, config, {})
        content = RecordDict({name: ArrayRecord(values) for name, values in reply.arrays.items()})
        truth = strip_ground_truth(content)
        items.append((pid, content, truth))
    return strategy, items
