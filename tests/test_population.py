"""A population of virtual clients decoupled from the nodes (``num-clients``): the same
clients whatever the node count, replies matched by message, per-client state that
follows the client across nodes, and real SuperNodes refusing another population."""

import random
from uuid import uuid4

import numpy as np
import pandas as pd
import pytest
import torch
from flwr.app import Array, ArrayRecord, ConfigRecord, Context, Message, MessageType, RecordDict

from simulations.config import resolve
from strategies.base import BaseStrategy


pytestmark = pytest.mark.usefixtures("task_identity")


class Nodes:
    """``n`` nodes with random ids, as the simulation engine gives them."""

    def __init__(self, n: int, seed: int = 0):
        rng = random.Random(seed)
        self.ids = list({rng.getrandbits(64) | 2: None for _ in range(n)})

    def get_node_ids(self):
        return list(self.ids)


ARRAYS = ArrayRecord({"w": Array(np.ones(3, np.float32))})


def test_the_same_seed_samples_the_same_clients_on_10_or_100_nodes_spread_evenly():
    cfg = {"num-clients": 1_000_000, "fraction-train": 0.0001, "fraction-evaluate": 0.0001, "seed": 3}
    drawn = {}
    for n in (10, 100):
        s = BaseStrategy(resolve(cfg))
        rounds = []
        for rnd in (1, 2):
            msgs = list(s.configure_train(rnd, ARRAYS, ConfigRecord(), Nodes(n, seed=n)))
            pids = [m.content["config"]["partition-id"] for m in msgs]
            assert len(msgs) == 100 and pids == sorted(set(pids)) and 0 <= min(pids) and max(pids) < 1_000_000
            assert all(m.content["config"]["num-partitions"] == 1_000_000 for m in msgs)
            load = np.bincount(np.unique([m.metadata.dst_node_id for m in msgs], return_inverse=True)[1])
            assert len(load) == n and set(load) == {100 // n}  # every node, the same number of clients
            rounds.append(pids)
        assert rounds[0] != rounds[1]
        drawn[n] = rounds
    assert drawn[10] == drawn[100]


def test_replies_are_matched_to_clients_by_the_message_they_answer():
    s = BaseStrategy(resolve({"num-clients": 30, "fraction-train": 0.5, "run-name": "r"}))
    msgs = list(s.configure_train(1, ARRAYS, ConfigRecord(), Nodes(3)))
    for m in msgs:  # what a grid does when it sends them
        m.metadata.__dict__["_message_id"] = uuid4().hex
    replies = [Message(RecordDict(), reply_to=m) for m in msgs]
    random.Random(0).shuffle(replies)
    sent = {m.metadata.message_id: m.content["config"]["partition-id"] for m in msgs}
    assert [s.partition_of(r) for r in replies] == [sent[r.metadata.reply_to_message_id] for r in replies]
    ordered = s.by_partition(replies)
    assert [s.partition_of(r) for r in ordered] == sorted(sent.values())
    assert len({r.metadata.src_node_id for r in replies}) == 3 < len(replies)  # one node, several clients


def run(tmp_path, nodes: int, name: str, **over) -> pd.DataFrame:
    from simulations.local import run_local

    cfg = resolve({"dataset": "mnist", "partitioner": "draw", "samples-per-client": 10, "local-test-fraction": 0.2,
                   "local-epochs": 1, "batch-size": 8, "num-server-rounds": 2, "seed": 7, "checkpoint-every": 0,
                   "out-dir": str(tmp_path), "run-name": name, **over})
    return pd.read_csv(run_local(cfg, nodes) / "metrics.csv")


def test_10_and_100_nodes_give_identical_metrics_for_the_same_seed_and_population(tmp_path):
    over = {"num-clients": 200, "fraction-train": 0.04, "fraction-evaluate": 0.04}  # 8 clients a round
    ten, hundred = run(tmp_path, 10, "ten", **over), run(tmp_path, 100, "hundred", **over)
    cols = [c for c in ten.columns if c not in ("round-seconds", "run-name", "num-supernodes")]  # all but the nodes
    assert (ten["num-supernodes"] == 10).all() and (hundred["num-supernodes"] == 100).all()
    assert len(ten) == 3 and ten["failures"].fillna(0).sum() == 0
    pd.testing.assert_frame_equal(ten[cols], hundred[cols])
    other = run(tmp_path, 10, "other", **{**over, "seed": 8})
    assert not np.allclose(other["accuracy"], ten["accuracy"])  # the comparison can tell runs apart


def test_a_clients_state_follows_it_to_another_node(tmp_path, monkeypatch):
    """FedSDWC keeps each client's prior: served by node 7 in round 1 and by node 9 in
    round 2, the client starts round 2 from its own prior; another client finds none."""
    from clients.fedsdwc import PRIOR_KEYS, PRIOR_RECORD, FedSDWCClient
    from simulations import client_app

    cfg = resolve({"method": "fedsdwc", "dataset": "mnist", "partitioner": "draw", "samples-per-client": 10,
                   "local-epochs": 1, "batch-size": 8, "out-dir": str(tmp_path), "run-name": "r"})
    seen = []
    original = FedSDWCClient.train

    def spy(self, arrays, config, stored):
        seen.append((self.data.partition_id, stored))
        return original(self, arrays, config, stored)

    monkeypatch.setattr(FedSDWCClient, "train", spy)
    _, client = client_app.setup(Context(run_id=1, node_id=7, node_config={"sim-ground-truth": True}, state=RecordDict(),
                                         run_config=cfg), {"partition-id": 3, "num-partitions": 50})
    model = ArrayRecord({k: v.detach().clone() for k, v in client.model.state_dict().items()})
    nodes = {n: Context(run_id=1, node_id=n, node_config={"sim-ground-truth": True}, state=RecordDict(),
                        run_config=cfg) for n in (7, 9)}

    def send(node, pid, rnd):
        config = ConfigRecord({"partition-id": pid, "num-partitions": 50, "run-name": "r", "server-round": rnd})
        msg = Message(RecordDict({"arrays": model, "config": config}), dst_node_id=node, message_type=MessageType.TRAIN)
        msg.metadata.__dict__["_message_id"] = uuid4().hex
        return client_app.train(msg, nodes[node])

    kept = send(7, 3, 1).content["arrays"].to_torch_state_dict()
    send(9, 3, 2)
    send(9, 4, 2)
    assert [pid for pid, _ in seen] == [3, 3, 4]
    assert seen[0][1] == {} and seen[2][1] == {}  # nothing kept yet for 3 in round 1, nor for 4 ever
    got = seen[1][1][PRIOR_RECORD]
    assert set(got) == set(PRIOR_KEYS) and all(torch.equal(got[k], kept[k]) for k in PRIOR_KEYS)
    sent = model.to_torch_state_dict()
    assert not any(torch.equal(got[k], sent[k]) for k in PRIOR_KEYS)  # trained in round 1: the client's own
    assert all(not c.state.array_records for c in nodes.values())  # nothing in the nodes' contexts
    assert sorted(p.name for p in (tmp_path / "r" / "client-state").iterdir()) == ["3.safetensors", "4.safetensors"]


def test_num_clients_other_than_the_real_supernodes_fails_at_start(tmp_path, caplog):
    from simulations.server_app import RunAborted

    with pytest.raises(RunAborted, match=r"num-clients=5 but 3 SuperNodes answered.*pass num-clients=0") as err:
        run(tmp_path, 3, "real", **{"partition-assignment": "node", "num-clients": 5})
    assert "\n" not in str(err.value)
