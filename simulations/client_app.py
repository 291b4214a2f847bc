"""ClientApp: load this node's partition and hand each message to the method's client.

A node's partition comes from the message where the server assigns partitions
(``partition-assignment=server``: ``partition-id``/``num-partitions`` in its config
record; only simulated nodes accept that), else from its node config: the simulation
engine sets them, and real SuperNodes pass them with ``--node-config``, together with
``data-root``, which a real node must set: it reads its data only from its own node
config (without a partition id the node's whole local train pool is its partition).
Partitions are computed (seeded) once in every client process and cached there.
What a client keeps across rounds (``Reply.keep``) is stored by partition where the
server assigns partitions (``simulations/client_state.py``: the client may be served by
another node next time), else in the node's ``Context.state``.
"""

from __future__ import annotations

import functools
import time

import numpy as np

import torch
from flwr.app import ArrayRecord, Context, Message, MetricRecord, RecordDict
from flwr.clientapp import ClientApp

from clients.base import (DEFAULT_MIN_CLASS_SAMPLES, MIN_CLASS_SAMPLES, SIM_GROUND_TRUTH as GROUND_TRUTH, ClientData,
                          Reply, batches, ground_truth_allowed,
                          refuse_evaluation_only)
from common.keys import shown
from common.outputs import feature_cache_dir
from datasets import load_for
from datasets.partition import client_split, partition_for
from models import features
from simulations import client_state
from simulations.config import resolve
from simulations.methods import METHODS

app = ClientApp()

PARTITION_KEYS = ("dataset", "data-root", "download", "image-size", "partitioner", "dirichlet-alpha",
                  "classes-per-client", "seed", "local-test-fraction", "heldout-domain", "samples-per-client",
                  "val-fraction", "local-val-fraction")


@functools.lru_cache(maxsize=4)
def partitions(key: tuple, num_partitions: int) -> list[np.ndarray]:
    """All clients' sample indices, computed once per process (not once per client:
    a Dirichlet split of 1,000 clients costs about 0.3 s)."""
    opts = dict(zip(PARTITION_KEYS, key))
    return partition_for(opts, load_for(opts), num_partitions)


@functools.lru_cache(maxsize=8)
def client_data(key: tuple, partition_id: int, num_partitions: int) -> ClientData:
    """This client's train/validation/test split; a pure function of the partition keys."""
    opts = dict(zip(PARTITION_KEYS, key))
    bundle = load_for(opts)
    parts = partitions(key, num_partitions)
    train_idx, val_idx, test_idx = client_split(parts[partition_id], opts["local-test-fraction"],
                                                opts["local-val-fraction"], int(opts["seed"]) * 100_003 + partition_id)
    subset = bundle.train.subset
    return ClientData(partition_id, subset(train_idx), subset(test_idx), bundle.num_classes, bundle.input_shape,
                      subset(val_idx))


def setup(context: Context, config: dict | None = None):
    """Resolved config, this node's data and the method's client (``config``: the
    message's config record, which names the partition where the server assigns it)."""
    cfg = resolve(dict(context.run_config))
    node = context.node_config
    real = not ground_truth_allowed(context)  # not the simulation engine or LocalGrid
    pid, n = int(node.get("partition-id", 0)), int(node.get("num-partitions", 1))
    if config and "partition-id" in config:
        if node.get("data-root") or real:
            raise ValueError("this node keeps its own partition (not a simulation): run with "
                             "partition-assignment='node'")
        pid, n = int(config["partition-id"]), int(config["num-partitions"])
    if real and not node.get("data-root"):
        raise ValueError("this node has no data-root in its node config: start it with --node-config "
                         "\"data-root='/path/to/its/data'\" (a real node never reads the run config's data-root)")
    if node.get("data-root"):  # a real SuperNode pointing at its own data
        cfg["data-root"] = str(node["data-root"])
    try:  # FedHiP's node-side privacy floor (clients/fedhip.py: shared_statistics)
        cfg[MIN_CLASS_SAMPLES] = int(node.get(MIN_CLASS_SAMPLES, DEFAULT_MIN_CLASS_SAMPLES))
    except (TypeError, ValueError):
        raise ValueError(f"node config {MIN_CLASS_SAMPLES} must be an integer, got "
                         f"{shown(node.get(MIN_CLASS_SAMPLES))}") from None
    data = client_data(tuple(cfg[k] for k in PARTITION_KEYS), pid, n)
    # the run's feature cache is the simulation's (under the server's out-dir), never a real node's
    features.use_disk_cache(None if real else feature_cache_dir(cfg))
    return cfg, METHODS[cfg["method"]].client(cfg, data)


def tensors(content: RecordDict) -> dict[str, dict[str, torch.Tensor]]:
    return {name: rec.to_torch_state_dict() for name, rec in content.array_records.items()}


def config_of(msg: Message) -> dict:
    rec = msg.content.config_records.get("config")
    return dict(rec) if rec is not None else {}


@app.query()
def query(msg: Message, context: Context) -> Message:
    node = context.node_config
    metrics = MetricRecord({"partition-id": int(node.get("partition-id", 0)),
                            "num-partitions": int(node.get("num-partitions", 1)), "num-examples": 1,
                            "simulated": int(ground_truth_allowed(context) and not node.get("data-root"))})
    return Message(RecordDict({"metrics": metrics}), reply_to=msg)


def inject_fault(cfg: dict, reply, partition_id: int, server_round: int) -> None:
    """Test hook (``fault-rate`` > 0): fail like real clients do, seeded per round/client."""
    rng = np.random.default_rng([int(cfg["seed"]), server_round, partition_id, 7])
    if not rng.random() < cfg["fault-rate"]:
        return
    kind = cfg["fault-kind"]
    if kind == "mixed":
        kind = ("raise", "nan", "shape")[int(rng.integers(3))]
    if kind == "raise":
        raise RuntimeError(f"injected fault in partition {partition_id}")
    if kind == "timeout":
        time.sleep(float(cfg["round-timeout"]) + 1.0)
        return
    name = next(iter(reply.arrays))
    key = next(k for k, v in reply.arrays[name].items() if v.is_floating_point())
    value = reply.arrays[name][key]
    reply.arrays[name][key] = torch.full_like(value, float("nan")) if kind == "nan" else value.flatten()[:-1]


def training_set(data) -> dict[str, torch.Tensor]:
    """All of a client's training images and labels: the evaluation-only ground truth a
    simulation's privacy audit scores against (sent only where the node allows it)."""
    x, y = next(batches(data, max(len(data), 1)), (torch.zeros(0), torch.zeros(0)))
    return {"images": torch.as_tensor(x).float(), "labels": torch.as_tensor(y).long()}


def stored_state(context: Context, cfg: dict, config: dict, partition_id: int) -> dict[str, dict[str, torch.Tensor]]:
    """What this client kept in earlier rounds: from its partition's file where the server
    names the partition (and the run), else from the node's context."""
    if config.get("run-name") and "partition-id" in config:
        return client_state.load(client_state.state_dir(cfg, str(config["run-name"])), partition_id)
    return {name: rec.to_torch_state_dict() for name, rec in context.state.array_records.items()}


def keep_state(context: Context, cfg: dict, config: dict, partition_id: int, keep: dict) -> None:
    """Store ``keep`` where ``stored_state`` reads it."""
    if config.get("run-name") and "partition-id" in config:
        client_state.save(client_state.state_dir(cfg, str(config["run-name"])), partition_id, keep)
        return
    for name, values in keep.items():
        context.state[name] = ArrayRecord(values)


@app.train()
def train(msg: Message, context: Context) -> Message:
    config = refuse_evaluation_only(config_of(msg), context)
    cfg, client = setup(context, config)
    pid = client.data.partition_id
    reply = client.train(tensors(msg.content), config, stored_state(context, cfg, config, pid))
    if config.get(GROUND_TRUTH) and GROUND_TRUTH not in reply.arrays:  # the privacy audit's evaluator
        reply.arrays[GROUND_TRUTH] = training_set(client.data.train)
    inject_fault(cfg, reply, pid, int(config.get("server-round", 0)))
    keep_state(context, cfg, config, pid, reply.keep)
    features.flush()  # the features this client computed, for the runs in other processes
    content = RecordDict({name: ArrayRecord(values) for name, values in reply.arrays.items()})
    content["metrics"] = MetricRecord(reply.metrics)
    return Message(content, reply_to=msg)


@app.evaluate()
def evaluate(msg: Message, context: Context) -> Message:
    config = refuse_evaluation_only(config_of(msg), context)
    cfg, client = setup(context, config)
    pid = client.data.partition_id
    metrics = client.evaluate(tensors(msg.content), config, stored_state(context, cfg, config, pid))
    if isinstance(metrics, Reply):  # an evaluate that also keeps state (e.g. a personalized model)
        keep_state(context, cfg, config, pid, metrics.keep)
        metrics = metrics.metrics
    features.flush()
    return Message(RecordDict({"metrics": MetricRecord(metrics)}), reply_to=msg)
