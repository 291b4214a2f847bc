"""Hostile method records, a non-finite aggregate, ground truth and the privacy floor.

Each method case runs one real in-process round (``LocalGrid``): two honest nodes and one
node per hostile case, whose train reply is partition 0's honest reply with one record
forged. The run completes, every hostile reply is dropped with one line and counted in
``failures``, the model is the aggregate of the honest replies, and every metric is
finite and in range.
"""

from __future__ import annotations

import logging

import numpy as np
import pytest
import torch
from flwr.app import Array, ArrayRecord, Context, Message, MetricRecord, RecordDict

from simulations.config import resolve
from simulations.local import LocalGrid

HONEST = 2


def _replace(content: RecordDict, record: str, **arrays) -> RecordDict:
    """A copy of ``content`` with some arrays of ``record`` replaced (numpy values)."""
    out = RecordDict(dict(content.items()))
    rec = content.array_records[record]
    out[record] = ArrayRecord({k: Array(np.ascontiguousarray(arrays[k](rec[k].numpy()))) if k in arrays else rec[k]
                               for k in rec.keys()})
    return out


class OneHostileEach(LocalGrid):
    """Node ``HONEST + i`` answers train with ``train_cases[i]`` applied to partition 0's
    honest reply, then node ``HONEST + len(train_cases) + j`` evaluate with ``eval_cases[j]``."""

    def __init__(self, client_app, run_config, train_cases: dict, eval_cases: dict | None = None):
        self.train_cases, self.eval_cases = list(train_cases.items()), list((eval_cases or {}).items())
        super().__init__(client_app, HONEST + len(self.train_cases) + len(self.eval_cases), run_config)
        self.honest: dict[int, RecordDict] = {}

    def handle(self, msg: Message) -> Message:
        pid = self.context(msg.metadata.dst_node_id).node_config["partition-id"]
        kind = msg.metadata.message_type
        i, j = pid - HONEST, pid - HONEST - len(self.train_cases)
        if kind == "train" and 0 <= i < len(self.train_cases):
            return Message(self.train_cases[i][1](self.honest[0]), reply_to=msg)
        reply = super().handle(msg)
        if kind == "train":
            self.honest[pid] = reply.content
        if kind == "evaluate" and 0 <= j < len(self.eval_cases):
            return Message(self.eval_cases[j][1](reply.content), reply_to=msg)
        return reply


def run_round(cfg: dict, grid_factory):
    """ServerApp.main on a hostile grid; returns (log lines, grid, run dir)."""
    from simulations.client_app import app as client_app
    from simulations.server_app import main

    grid = grid_factory(client_app, cfg)
    lines: list[str] = []
    handler = logging.Handler()
    handler.emit = lambda record: lines.append(record.getMessage())
    logging.getLogger("flwr").addHandler(handler)
    try:
        main(grid, Context(run_id=1, node_id=0, node_config={}, state=RecordDict(), run_config=dict(cfg)))
    finally:
        logging.getLogger("flwr").removeHandler(handler)
    return lines, grid, cfg["out-dir"] + "/" + cfg["run-name"]


def dropped(lines: list[str], pid: int, kind: str = "train") -> list[str]:
    return [r for r in lines if r.startswith(f"dropped {kind} reply from partition {pid} ")]


def scored_metrics_ok(frame) -> None:
    """Every accuracy and loss column finite, accuracies in [0, 1]."""
    row = frame.iloc[-1]
    scored = [k for k in frame.columns if "accuracy" in k or "loss" in k]
    assert scored and np.isfinite(row[scored].astype(float)).all()
    assert all(0 <= row[k] <= 1 for k in scored if "accuracy" in k)


# ---- FedHiP statistics ------------------------------------------------------------------
FEDHIP_CASES = {
    "negated scaled Gram": (lambda c: _replace(c, "fedhip-stats", **{"gram-triu": lambda g: -1e3 * g}),
                            "negative diagonal"),
    "counts near the float maximum": (lambda c: _replace(c, "fedhip-stats", counts=lambda n: n * 1e300),
                                      "counts sum to"),
    "features scaled by 1e3 (consistent G, Q)": (lambda c: _replace(c, "fedhip-stats", **{
        "gram-triu": lambda g: 1e6 * g, "q": lambda q: 1e3 * q}),
                                  "mean squared feature norm"),
    "Q beyond Cauchy-Schwarz": (lambda c: _replace(c, "fedhip-stats", q=lambda q: q + 1e6), "q breaks"),
    "statistics in float32": (lambda c: _replace(c, "fedhip-stats", q=lambda q: q.astype(np.float32)),
                              "has dtype float32"),
}
FEDHIP_EVAL = {  # an evaluate reply whose extra metric is out of range: dropped, never read
    "global-accuracy 1e300": (lambda c: RecordDict({"metrics": MetricRecord({**dict(c["metrics"]),
                                                                             "global-accuracy": 1e300})}),
                              "metric 'global-accuracy' is 1e+300"),
}


@pytest.fixture(scope="module")
def fedhip_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("fedhip")
    cfg = resolve({"method": "fedhip", "dataset": "digits", "backbone-size": 32, "partitioner": "iid",
                   "out-dir": str(out), "run-name": "hostile", "seed": 1, "partition-assignment": "node"})
    return run_round(cfg, lambda app, c: OneHostileEach(app, c, {k: v[0] for k, v in FEDHIP_CASES.items()},
                                                        {k: v[0] for k, v in FEDHIP_EVAL.items()}))


def test_fedhip_hostile_statistics_are_dropped_and_the_model_is_the_honest_solution(fedhip_run):
    import pandas as pd

    from clients.fedhip import unpack_triu
    from strategies.fedhip import global_model, sum_statistics

    lines, grid, run_dir = fedhip_run
    for i, (case, (_, reason)) in enumerate(FEDHIP_CASES.items()):
        got = dropped(lines, HONEST + i)
        assert len(got) == 1 and reason in got[0], (case, got)
    for j, (case, (_, reason)) in enumerate(FEDHIP_EVAL.items()):
        got = dropped(lines, HONEST + len(FEDHIP_CASES) + j, "evaluate")
        assert len(got) == 1 and reason in got[0], (case, got)
    frame = pd.read_csv(f"{run_dir}/metrics.csv")
    assert frame["failures"].iloc[-1] == len(FEDHIP_CASES) + len(FEDHIP_EVAL)
    honest = [grid.honest[p].array_records["fedhip-stats"].to_torch_state_dict() for p in sorted(grid.honest)]
    assert len(honest) == HONEST + len(FEDHIP_EVAL)
    total = sum_statistics(honest)
    d = total["q"].shape[0]
    expected = global_model(unpack_triu(total["gram-triu"], d), total["q"], 100.0, len(honest), True)
    state = torch.load(f"{run_dir}/checkpoint.pt", weights_only=True)
    np.testing.assert_allclose(state["arrays"]["weight"].numpy(), expected.numpy(), rtol=1e-10, atol=1e-12)
    scored_metrics_ok(frame)
    assert frame["global-model-local-accuracy"].iloc[-1] <= 1  # the dropped 1e300 was never averaged in


def test_privacy_floor_withholds_a_class_with_one_sample():
    from clients.base import ClientData
    from clients.fedhip import FedHiPClient

    X = torch.randn(7, 4, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    y = torch.tensor([0, 0, 0, 1, 1, 1, 2])  # class 2: one sample, its features would be Q's column

    class Features(FedHiPClient):
        def features(self, data):
            return X, y

    def upload(**node):
        cfg = {**resolve({"method": "fedhip", "ridge-gamma": 1.0}), **node}
        reply = Features(cfg, ClientData(0, None, None, 3, (4,))).train({}, {}, {})
        return reply.arrays["fedhip-stats"], reply.metrics["num-examples"]

    stats, n = upload()  # default floor: 2
    assert n == 6 and stats["counts"].tolist() == [3.0, 3.0, 0.0]
    assert torch.equal(stats["q"][:, 2], torch.zeros(4, dtype=torch.float64))
    stats, n = upload(**{"min-class-samples": 1})  # the node's own choice
    assert n == 7 and torch.equal(stats["q"][:, 2], X[6])
    with pytest.raises(ValueError, match="withholds every class"):
        upload(**{"min-class-samples": 10})


# ---- FedDG-LSI importance -----------------------------------------------------------------
LSI_CASES = {
    "huge importance": (lambda c: _replace(c, "importance", **{k: (lambda v: np.full_like(v, 1e300, np.float64))
                                                              for k in c.array_records["importance"].keys()}),
                        "importance"),
    "negative importance": (lambda c: _replace(c, "importance", **{k: (lambda v: -np.abs(v) - 1)
                                                                  for k in c.array_records["importance"].keys()}),
                            "outside [0, 1e+12]"),
}


def test_fedlsi_hostile_importance_is_dropped_and_the_model_is_the_honest_aggregate(tmp_path):
    import pandas as pd

    from strategies.lsi_server import importance_average

    cfg = resolve({"method": "fedlsi", "dataset": "digits", "partitioner": "iid", "model": "lsi-cnn",
                   "lsi-schedule": "every-round", "num-server-rounds": 1, "local-epochs": 1, "batch-size": 256,
                   "lsi-num-latents": 8, "lsi-inversion-iters": 2,
                   "lsi-translator-iters": 2, "lsi-translator-hidden": 8, "lsi-translator-batch": 8,
                   "fraction-evaluate": 0.0, "out-dir": str(tmp_path), "run-name": "hostile", "seed": 3,
                   "partition-assignment": "node"})
    lines, grid, run_dir = run_round(cfg, lambda app, c: OneHostileEach(app, c, {k: v[0] for k, v in LSI_CASES.items()}))
    for i, (case, (_, reason)) in enumerate(LSI_CASES.items()):
        got = dropped(lines, HONEST + i)
        assert len(got) == 1 and reason in got[0], (case, got)
    frame = pd.read_csv(f"{run_dir}/metrics.csv")
    assert frame["failures"].iloc[-1] == len(LSI_CASES)
    honest = [grid.honest[p] for p in sorted(grid.honest)]
    expected = importance_average([c.array_records["arrays"].to_torch_state_dict() for c in honest],
                                  [c.array_records["importance"].to_torch_state_dict() for c in honest],
                                  [float(c["metrics"]["num-examples"]) for c in honest])
    state = torch.load(f"{run_dir}/checkpoint.pt", weights_only=True)
    for key, value in expected.items():
        torch.testing.assert_close(state["arrays"][key].reshape(value.shape), value, rtol=0, atol=0)  # 0-d: (1,) saved
    scored_metrics_ok(frame)


# ---- the aggregate ---------------------------------------------------------------------------
def test_a_non_finite_aggregate_keeps_the_previous_model_and_counts_a_failure(tmp_path):
    """A method that sums (not averages) replies, as statistics methods do: one reply of
    finite float32 values near the maximum overflows the sum. The round keeps the model."""
    from datasets import load_for
    from simulations.client_app import app as client_app
    from strategies.base import BaseStrategy

    class Summing(BaseStrategy):
        def aggregate(self, server_round, replies):
            arrays, metrics = super().aggregate(server_round, replies)
            n = sum(float(m.content["metrics"]["num-examples"]) for m in replies)
            return ArrayRecord({k: Array(v.numpy() * np.float32(n)) for k, v in arrays.items()}), metrics

    cfg = resolve({"num-server-rounds": 1, "local-epochs": 1, "batch-size": 512, "fraction-evaluate": 0.0,
                   "out-dir": str(tmp_path), "run-name": "sum", "seed": 2, "partition-assignment": "node"})
    huge = {"float32 maximum": lambda c: _replace(c, "arrays", **{k: (lambda v: np.full_like(v, 3e38))
                                                                  for k in c.array_records["arrays"].keys()})}
    grid = OneHostileEach(client_app, cfg, huge)
    strategy = Summing(cfg, test_data=load_for(cfg))
    initial = strategy.initial_arrays()
    result = strategy.start(grid, initial, 1, timeout=60)
    assert strategy.rows[-1]["failures"] == 1
    for key in initial.keys():
        np.testing.assert_array_equal(result.arrays[key].numpy(), initial[key].numpy())
    assert np.isfinite(strategy.rows[-1]["accuracy"]) and 0 <= strategy.rows[-1]["accuracy"] <= 1


# ---- ground truth -----------------------------------------------------------------------------
def test_ground_truth_is_validated_before_conversion_and_refused_from_real_nodes():
    from strategies.records import take_ground_truth

    def reply(images, labels):
        return RecordDict({"sim-ground-truth": ArrayRecord({"images": Array(images), "labels": Array(labels)}),
                           "metrics": MetricRecord({"num-examples": 2})})

    good = (np.zeros((2, 1, 28, 28), np.float32), np.array([0, 9], np.int64))
    content = reply(*good)
    truth, why = take_ground_truth(content, True, (1, 28, 28), 10, 100)
    assert why is None and truth["labels"].tolist() == [0, 9] and "sim-ground-truth" not in content.array_records
    bad = {
        "labels out of range": ((good[0], np.array([0, 10], np.int64)), "labels outside [0, 10)"),
        "other image shape": ((np.zeros((2, 3, 8, 8), np.float32), good[1]), "holds data of shape (2, 3, 8, 8)"),
        "more rows than the pool": ((np.zeros((101, 1, 28, 28), np.float32), np.zeros(101, np.int64)),
                                    "holds data of shape (101, 1, 28, 28)"),
        "fewer labels than images": ((good[0], np.array([1], np.int64)), "2 images but 1 labels"),
        "float labels": ((good[0], np.array([0.0, 1.0])), "has dtype float64"),
        "huge pixels": ((np.full((2, 1, 28, 28), 1e30, np.float32), good[1]), "values beyond"),
    }
    for case, (arrays, reason) in bad.items():
        truth, why = take_ground_truth(reply(*arrays), True, (1, 28, 28), 10, 100)
        assert truth is None and reason in why, (case, why)
    # not asked, or a real node (partition-assignment=node): refused whatever it holds
    truth, why = take_ground_truth(reply(*good), False, (1, 28, 28), 10, 100)
    assert truth is None and "unexpected ArrayRecord(s) ['sim-ground-truth']" in why
