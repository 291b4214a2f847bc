"""Base strategy: reply validation, failure counting, repeatable aggregation; FedProx."""

import numpy as np
import pytest
import torch
from flwr.app import Array, ArrayRecord, Error, Message, MessageType, MetricRecord, RecordDict
from flwr.supercore.task_identity import TaskIdentity

from clients.base import ClientData
from clients.fedprox import FedProxClient
from datasets import load_dataset
from simulations.config import resolve
from strategies.base import BaseStrategy
from strategies.replies import check_reply

SHAPES = {"w": (2, 3), "b": (3,)}


@pytest.fixture(autouse=True)
def _task_identity():
    """Messages need a run id; outside a Flower process none is set."""
    TaskIdentity.run_id, TaskIdentity.node_id, TaskIdentity.task_id = 1, 0, 1
    yield
    TaskIdentity.run_id = TaskIdentity.node_id = TaskIdentity.task_id = None


def content(w=None, b=None, n=10, **metrics):
    arrays = {"w": np.ones((2, 3), np.float32) if w is None else w,
              "b": np.zeros(3, np.float32) if b is None else b}
    return RecordDict({"arrays": ArrayRecord({k: Array(v) for k, v in arrays.items()}),
                       "metrics": MetricRecord({"num-examples": n, **metrics})})


def reply(node: int, body) -> Message:
    sent = Message(RecordDict(), message_type=MessageType.TRAIN, dst_node_id=node)
    return Message(body, reply_to=sent)


def test_good_reply_passes():
    assert check_reply(content(), {"arrays": SHAPES}) is None


@pytest.mark.parametrize(
    "body, reason",
    [
        (content(w=np.full((2, 3), np.nan, np.float32)), "NaN or inf"),
        (content(b=np.array([1, np.inf, 0], np.float32)), "NaN or inf"),
        (content(w=np.ones((3, 2), np.float32)), "shape"),
        (content(n=0), "num-examples must be > 0"),
        (content(**{"train-loss": float("nan")}), "metric 'train-loss'"),
        (RecordDict({"metrics": MetricRecord({"num-examples": 1})}), "missing ArrayRecord"),
        (RecordDict(), "num-examples"),
    ],
)
def test_malformed_replies_are_named(body, reason):
    assert reason in check_reply(body, {"arrays": SHAPES})


def make_strategy(**over):
    s = BaseStrategy(resolve(over))
    s.row = {"failures": 0}
    s.expected = {"arrays": SHAPES}
    return s


def test_bad_replies_are_dropped_counted_and_do_not_poison_the_model():
    s = make_strategy(**{"min-train-nodes": 2})
    s.partitions = {1: 0, 2: 1, 3: 2, 4: 3}
    replies = [
        reply(1, content(w=np.full((2, 3), 1.0, np.float32), n=10)),
        reply(2, content(w=np.full((2, 3), 4.0, np.float32), n=30)),
        reply(3, content(w=np.full((2, 3), np.nan, np.float32))),
        Message(Error(code=0, reason="Traceback ...\nRuntimeError: client crashed"),
                reply_to=Message(RecordDict(), message_type=MessageType.TRAIN, dst_node_id=4)),
    ]
    arrays, _ = s.aggregate_train(1, replies)
    assert s.row["failures"] == 2
    np.testing.assert_allclose(arrays["w"].numpy(), np.full((2, 3), 3.25))  # (10*1 + 30*4) / 40


def test_too_few_good_replies_skip_the_round():
    s = make_strategy(**{"min-train-nodes": 2})
    arrays, metrics = s.aggregate_train(1, [reply(1, content()), reply(2, content(n=-1))])
    assert arrays is None and metrics["failures"] == 1


def test_aggregation_is_bitwise_independent_of_arrival_order():
    rng = np.random.default_rng(0)
    bodies = [(i, content(w=rng.normal(size=(2, 3)).astype(np.float32), n=int(rng.integers(1, 50))))
              for i in range(1, 6)]
    results = []
    for perm in ([0, 1, 2, 3, 4], [4, 2, 0, 3, 1], [3, 4, 1, 0, 2]):
        s = make_strategy()
        s.partitions = {i: i for i in range(1, 6)}
        arrays, _ = s.aggregate_train(1, [reply(*bodies[p]) for p in perm])
        results.append(arrays["w"].numpy())
    assert all(np.array_equal(results[0], r) for r in results[1:])


def test_integer_buffers_stay_integer_after_aggregation():
    """BatchNorm's num_batches_tracked: Flower's mean makes it float; the next round's
    replies (the model's int64) must still match what was sent."""
    s = make_strategy(**{"min-train-nodes": 2})
    s.expected = {"arrays": {**SHAPES, "n": ()}}
    s.int_arrays = {"n"}
    bodies = [content(n=10), content(n=30)]
    for body, count in zip(bodies, (3, 8)):
        body["arrays"]["n"] = Array(np.array(count, np.int64))
    arrays, _ = s.aggregate_train(1, [reply(1, bodies[0]), reply(2, bodies[1])])
    assert arrays["n"].numpy().dtype == np.int64 and int(arrays["n"].numpy()) == 7  # rint(0.25*3 + 0.75*8)
    assert arrays["w"].numpy().dtype == np.float32


def _prox_client(mu):
    b = load_dataset("mnist")
    data = ClientData(0, b.train.subset(range(64)), b.test.subset(range(16)), 10, (1, 28, 28))
    client = FedProxClient(resolve({"method": "fedprox", "proximal-mu": mu}), data)
    client.mu = mu
    return client


def test_fedprox_term_is_zero_at_global_weights_and_has_the_right_gradient():
    client = _prox_client(0.5)
    global_w = {k: v.clone() for k, v in client.model.state_dict().items()}
    assert float(client.extra_loss(client.model, global_w).detach()) == 0.0
    with torch.no_grad():
        for p in client.model.parameters():
            p.add_(0.1)
    loss = client.extra_loss(client.model, global_w)
    loss.backward()
    for p in client.model.parameters():
        torch.testing.assert_close(p.grad, torch.full_like(p, 0.5 * 0.1), rtol=1e-4, atol=1e-6)
