"""Scale: partition ids without a message per node, server state that grows with the
nodes sampled, the ClientApp taking the partition the server names."""

import random

import numpy as np
import pytest
from flwr.app import Array, ArrayRecord, ConfigRecord, Context, RecordDict

from simulations.config import ConfigError, resolve
from strategies.base import BaseStrategy


pytestmark = pytest.mark.usefixtures("task_identity")


class NoMessagesGrid:
    """A grid of ``n`` nodes with random ids (as the simulation engine gives them) that
    fails on any message: the server must sample without asking the nodes."""

    def __init__(self, n: int, seed: int = 0):
        rng = random.Random(seed)
        self.ids = list({rng.getrandbits(64) | 2: None for _ in range(n)})  # unsigned 64-bit, as Flower's
        self.calls = 0

    def get_node_ids(self):
        self.calls += 1
        return list(self.ids)

    def send_and_receive(self, messages, timeout=None):
        raise AssertionError("the server sent messages to learn partition ids")


ARRAYS = ArrayRecord({"w": Array(np.ones(3, np.float32))})


def test_server_assignment_samples_the_partitions_node_discovery_would_without_a_message():
    grid = NoMessagesGrid(1000)
    server = BaseStrategy(resolve({"fraction-train": 0.1, "fraction-evaluate": 0.05, "seed": 4}))
    node = BaseStrategy(resolve({"fraction-train": 0.1, "fraction-evaluate": 0.05, "seed": 4,
                                 "partition-assignment": "node"}))
    node.partitions = {n: rank for rank, n in enumerate(sorted(grid.ids))}  # as if every node had answered
    for rnd in (1, 2, 3):
        msgs = list(server.configure_train(rnd, ARRAYS, ConfigRecord(), grid))
        ref = list(node.configure_train(rnd, ARRAYS, ConfigRecord(), grid))
        pids = [m.content["config"]["partition-id"] for m in msgs]
        assert len(msgs) == 100 and pids == sorted(set(pids))
        assert pids == [node.partitions[m.metadata.dst_node_id] for m in ref]  # the same partitions
        nodes = sorted(grid.ids)
        for k, m in enumerate(msgs):  # the k-th client goes to the k-th node; the model is shared, not copied
            assert m.metadata.dst_node_id == nodes[k]
            assert m.content["config"]["num-partitions"] == 1000 and m.content["config"]["server-round"] == rnd
            assert m.content["arrays"] is ARRAYS
        ev = list(server.configure_evaluate(rnd, ARRAYS, ConfigRecord(), grid))
        assert len(ev) == 50 and all("partition-id" in m.content["config"] for m in ev)
    other = BaseStrategy(resolve({"fraction-train": 0.1, "seed": 5}))
    assert [m.content["config"]["partition-id"] for m in other.configure_train(1, ARRAYS, ConfigRecord(), grid)] \
        != [m.content["config"]["partition-id"] for m in server.configure_train(1, ARRAYS, ConfigRecord(), grid)]


def test_server_state_grows_with_the_clients_sampled_not_the_population():
    grid = NoMessagesGrid(100_000)
    s = BaseStrategy(resolve({"fraction-train": 0.001, "fraction-evaluate": 0.001}))
    for rnd in (1, 2, 3):
        assert len(list(s.configure_train(rnd, ARRAYS, ConfigRecord(), grid))) == 100
        assert len(list(s.configure_evaluate(rnd, ARRAYS, ConfigRecord(), grid))) == 100
        if rnd == 1:
            calls = grid.calls
    assert 100 < len(s.seen) <= 600 and not s.partitions  # partitions sampled; no per-node map
    assert calls == 2 and grid.calls == calls  # the node list is read at start (twice: settled), not per round
    assert s.node_ids.dtype == np.uint64 and len(s.node_ids) == 100_000  # 8 bytes per node


def test_client_takes_the_partition_the_server_names():
    from simulations.client_app import setup

    cfg = resolve({"partitioner": "draw", "samples-per-client": 10})

    def context(**node):
        return Context(run_id=1, node_id=5, node_config=node, state=RecordDict(), run_config=cfg)

    simulated = context(**{"partition-id": 0, "num-partitions": 3, "sim-ground-truth": True})  # as LocalGrid's
    _, own = setup(simulated)
    _, named = setup(simulated, {"partition-id": 70_000, "num-partitions": 100_000})
    assert own.data.partition_id == 0 and named.data.partition_id == 70_000
    assert len(named.data.train) + len(named.data.val) + len(named.data.test) == 10
    # a real SuperNode keeps its own partition or data: it refuses, in one line
    for node in ({"partition-id": 0, "num-partitions": 3}, {"data-root": "/data/site0", "sim-ground-truth": True}):
        with pytest.raises(ValueError, match="partition-assignment='node'"):
            setup(context(**node), {"partition-id": 1, "num-partitions": 2})


def test_bad_assignment_and_sample_count_fail_in_one_line():
    with pytest.raises(ConfigError, match="partition-assignment"):
        resolve({"partition-assignment": "random"})
    with pytest.raises(ConfigError, match="samples-per-client"):
        resolve({"samples-per-client": 1})


def test_node_ids_are_read_once_registration_has_settled():
    from strategies.sampling import settled_node_ids

    class Registering(NoMessagesGrid):  # the engine still adding nodes for the first reads
        def get_node_ids(self):
            self.calls += 1
            return self.ids[: min(len(self.ids), 300 * self.calls)]

    grid = Registering(1000)
    assert len(settled_node_ids(grid, settle=0.01)) == 1000 and grid.calls == 5
