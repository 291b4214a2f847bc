"""Security and data safety: hostile replies, crafted checkpoints, run folders, bad input.

Hostile replies go through a real round: ``LocalGrid`` (in-process) with some nodes whose
replies are replaced by hostile ones; the run must complete and its model must equal the
aggregate of the honest replies. One run holds every case (one hostile node per case),
so the cases cost one round together. The ground-truth case on a real node runs in
``tests/test_deployment.py`` (TLS SuperLink, authenticated SuperNodes).
"""

from __future__ import annotations

import logging
import pathlib

import numpy as np
import pytest
import torch
from flwr.app import Array, ArrayRecord, ConfigRecord, Context, Message, MetricRecord, RecordDict
from flwr.serverapp.strategy.strategy_utils import aggregate_arrayrecords

from clients.base import SIM_GROUND_TRUTH, ground_truth_allowed, refuse_evaluation_only
from simulations.config import ConfigError, resolve
from simulations.local import LocalGrid, run_logged
from tests.conftest import pacs_tree


def _arrays(content: RecordDict) -> RecordDict:
    """A copy of a reply's content (records are shared objects)."""
    return RecordDict({k: v for k, v in content.items()})


def _with(content: RecordDict, **records) -> RecordDict:
    out = _arrays(content)
    for name, record in records.items():
        out[name] = record
    return out


def _metrics(content: RecordDict, **changes) -> RecordDict:
    metrics = dict(content.metric_records["metrics"])
    metrics.update(changes)
    metrics = {k: v for k, v in metrics.items() if v is not None}
    return _with(content, metrics=MetricRecord(metrics))


def _array(content: RecordDict, values, declare: bool = False) -> RecordDict:
    """The reply's model with its first array's data replaced; ``declare``: the Array
    still declares the original shape and dtype (a node writes them itself)."""
    import io

    record = content.array_records["arrays"]
    first = next(iter(record.keys()))
    data = values(record[first].numpy())
    if declare:
        buffer = io.BytesIO()
        np.save(buffer, data, allow_pickle=False)
        arr = Array(dtype=record[first].dtype, shape=record[first].shape, stype="numpy.ndarray",
                    data=buffer.getvalue())
    else:
        arr = Array(data)
    new = ArrayRecord({k: (arr if k == first else record[k]) for k in record.keys()})
    return _with(content, arrays=new)


def _shifted(content: RecordDict) -> RecordDict:
    """Honest-looking arrays far from the honest ones: aggregating them would show."""
    record = content.array_records["arrays"]
    return _with(content, arrays=ArrayRecord({k: Array(record[k].numpy() + 100.0) for k in record.keys()}))


# name -> (message type it tampers with, hostile content from the honest one, logged reason)
TRAIN_CASES = {
    "extra ArrayRecord": lambda c: _with(_shifted(c), extra=ArrayRecord({"x": Array(np.ones(2, np.float32))})),
    "extra MetricRecord": lambda c: _with(_shifted(c), more=MetricRecord({"a": 1.0})),
    "extra ConfigRecord": lambda c: _with(_shifted(c), cfg=ConfigRecord({"a": "b"})),
    "unexpected metric key": lambda c: _metrics(_shifted(c), **{"poison": 1.0}),
    "list-valued metric": lambda c: _metrics(_shifted(c), **{"train-loss": [1.0, 2.0]}),
    "complex dtype with NaN": lambda c: _array(c, lambda v: (v + 1j * np.nan).astype(np.complex64)),
    "int dtype where float expected": lambda c: _array(c, lambda v: (v * 100).astype(np.int32)),
    "NaN in float32": lambda c: _array(c, lambda v: np.full(v.shape, np.nan, np.float32)),
    "num-examples 1e18": lambda c: _metrics(_shifted(c), **{"num-examples": 10**18}),
    "fractional num-examples": lambda c: _metrics(_shifted(c), **{"num-examples": 2.5}),
    "missing num-examples": lambda c: _metrics(_shifted(c), **{"num-examples": None}),
    # round 2: the data is judged, not what the node declares about it
    "data of another shape under the declared shape": lambda c: _array(c, lambda v: v.ravel()[:-1], declare=True),
    "array far larger than declared": lambda c: _array(c, lambda v: np.zeros(v.size * 50, np.float32), declare=True),
    "half precision": lambda c: _array(c, lambda v: v.astype(np.float16)),
    "longdouble": lambda c: _array(c, lambda v: v.astype(np.longdouble)),
    "float64 where float32 was sent": lambda c: _array(c, lambda v: v.astype(np.float64)),
    "train-loss 1e308": lambda c: _metrics(_shifted(c), **{"train-loss": 1e308}),
    "ground truth from a real node": lambda c: _with(_shifted(c), **{SIM_GROUND_TRUTH: ArrayRecord(
        {"images": Array(np.zeros((1, 1, 28, 28), np.float32)), "labels": Array(np.array([99]))})}),
}
REASONS = {
    "extra ArrayRecord": "unexpected ArrayRecord(s) ['extra']",
    "extra MetricRecord": "unexpected MetricRecord(s) ['more']",
    "extra ConfigRecord": "unexpected ConfigRecord(s) ['cfg']",
    "unexpected metric key": "unexpected metric key(s) ['poison']",
    "list-valued metric": "metric 'train-loss' is not a number (list)",
    "complex dtype with NaN": "has dtype complex64, expected real floating point",
    "int dtype where float expected": "has dtype int32, expected real floating point",
    "NaN in float32": "holds NaN or inf",
    "num-examples 1e18": "> max-num-examples",
    "fractional num-examples": "num-examples must be > 0 and whole, got 2.5",
    "missing num-examples": "lacks ['num-examples']",
    "evaluate without accuracy": "MetricRecord 'metrics' lacks ['accuracy']",
    "evaluate with arrays": "unexpected ArrayRecord(s) ['arrays']",
    "data of another shape under the declared shape": "holds data of shape (799,), expected (32, 1, 5, 5)",
    "array far larger than declared": "bytes, more than",
    "half precision": "has dtype float16, expected real floating point (float32)",
    "longdouble": "bytes, more than",  # 16-byte elements: over the cap, refused before decoding
    "float64 where float32 was sent": "has dtype float64, expected real floating point (float32)",
    "train-loss 1e308": "metric 'train-loss' is 1e+308, outside [0, 1e+09]",
    "ground truth from a real node": "unexpected ArrayRecord(s) ['sim-ground-truth']",
    "evaluate accuracy 1e300": "metric 'accuracy' is 1e+300, outside [0, 1]",
    "evaluate accuracy -50": "metric 'accuracy' is -50, outside [0, 1]",
}
EVAL_CASES = {
    "evaluate without accuracy": lambda c: _metrics(c, accuracy=None),
    "evaluate with arrays": lambda c: _with(c, arrays=ArrayRecord({"w": Array(np.ones(2, np.float32))})),
    "evaluate accuracy 1e300": lambda c: _metrics(c, accuracy=1e300),
    "evaluate accuracy -50": lambda c: _metrics(c, accuracy=-50.0),
}
HONEST = 2  # the first nodes reply honestly (partitions 0, 1)


class HostileGrid(LocalGrid):
    """A LocalGrid whose node ``HONEST + i`` answers with hostile case ``i``; the last node
    answers the partition-id query without ``partition-id``, the one after claims 1000
    partitions (both are never sampled)."""

    cases = list(TRAIN_CASES) + list(EVAL_CASES)

    def __init__(self, client_app, run_config):
        super().__init__(client_app, HONEST + len(self.cases) + 2, run_config)
        self.honest_train: dict[int, RecordDict] = {}  # partition -> honest train reply content
        self.tampered: list[str] = []

    def handle(self, msg: Message) -> Message:
        pid = self.context(msg.metadata.dst_node_id).node_config["partition-id"]
        case = self.cases[pid - HONEST] if HONEST <= pid < HONEST + len(self.cases) else None
        kind = msg.metadata.message_type
        if kind == "query" and pid == HONEST + len(self.cases):
            content = RecordDict({"metrics": MetricRecord({"num-partitions": 3, "num-examples": 1})})
            return Message(content, reply_to=msg)
        if kind == "query" and pid == HONEST + len(self.cases) + 1:  # more partitions than nodes
            content = RecordDict({"metrics": MetricRecord({"partition-id": 999, "num-partitions": 1000,
                                                           "num-examples": 1})})
            return Message(content, reply_to=msg)
        hostile = TRAIN_CASES.get(case) if kind == "train" else EVAL_CASES.get(case) if kind == "evaluate" else None
        if hostile is None:
            reply = super().handle(msg)
            if kind == "train":
                self.honest_train[pid] = reply.content
            return reply
        self.tampered.append(case)
        # Train: built from partition 0's honest reply (sent first: replies go in partition
        # order), so hostile nodes need not train.
        honest = self.honest_train[0] if kind == "train" else super().handle(msg).content
        return Message(hostile(honest), reply_to=msg)


@pytest.fixture(scope="module")
def hostile_run(tmp_path_factory):
    """One round, every hostile case at once; returns (status, log text, grid, run dir)."""
    from simulations.client_app import app as client_app
    from simulations.server_app import main

    out = tmp_path_factory.mktemp("hostile")
    cfg = resolve({"num-server-rounds": 1, "local-epochs": 1, "batch-size": 512, "out-dir": str(out),
                   "run-name": "hostile", "seed": 2, "partitioner": "iid",
                   "partition-assignment": "node"})  # the nodes answer the partition-id query
    grid = HostileGrid(client_app, cfg)
    records: list[str] = []
    handler = logging.Handler()
    handler.emit = lambda record: records.append(record.getMessage())
    logger = logging.getLogger("flwr")
    logger.addHandler(handler)
    try:
        main(grid, Context(run_id=1, node_id=0, node_config={}, state=RecordDict(), run_config=dict(cfg)))
        status = "completed"
    finally:
        logger.removeHandler(handler)
    return status, records, grid, out / "hostile"


def test_hostile_replies_are_dropped_and_the_model_is_the_honest_aggregate(hostile_run):
    import pandas as pd

    status, records, grid, run_dir = hostile_run
    assert status == "completed"
    assert sorted(grid.tampered) == sorted(grid.cases)  # every hostile reply was sent
    frame = pd.read_csv(run_dir / "metrics.csv")
    assert list(frame["round"]) == [0, 1]
    assert frame["failures"].iloc[1] == len(grid.cases)
    # The model: exactly the weighted mean of the honest train replies, in partition order.
    honest = [grid.honest_train[p] for p in sorted(grid.honest_train)]
    assert len(honest) == HONEST + len(EVAL_CASES)  # nodes hostile only in evaluate trained honestly
    expected = aggregate_arrayrecords(honest, "num-examples")
    state = torch.load(run_dir / "checkpoint.pt", weights_only=True)
    assert set(state["arrays"]) == set(expected.keys())
    for key, value in state["arrays"].items():
        np.testing.assert_array_equal(value.numpy(), expected[key].numpy())
    assert np.isfinite(frame["accuracy"]).all() and np.isfinite(frame["personalized-accuracy"].iloc[1])
    # the node that answered the query without partition-id was never sampled
    assert any("ignored node" in r and "partition-id" in r for r in records)
    # the node that claimed 1000 partitions (more than the nodes present) was ignored, not the run
    assert any("ignored node" in r and "partition-id 999 of num-partitions 1000" in r for r in records)
    # every metric of the row is finite, accuracies in [0, 1]
    row = frame.iloc[1]
    scored = [k for k in frame.columns if "accuracy" in k or "loss" in k]
    assert scored and np.isfinite(row[scored].astype(float)).all()
    assert all(0 <= row[k] <= 1 for k in scored if "accuracy" in k)


@pytest.mark.parametrize("case", list(TRAIN_CASES) + list(EVAL_CASES))
def test_each_hostile_reply_is_dropped_with_one_line_naming_why(hostile_run, case):
    _, records, _, _ = hostile_run
    pid = HONEST + HostileGrid.cases.index(case)
    kind = "train" if case in TRAIN_CASES else "evaluate"
    lines = [r for r in records if r.startswith(f"dropped {kind} reply from partition {pid} ")]
    assert len(lines) == 1 and REASONS[case] in lines[0], lines


def test_num_examples_cap_key():
    from strategies.base import BaseStrategy
    from strategies.replies import check_reply

    body = RecordDict({"metrics": MetricRecord({"num-examples": 101})})
    assert check_reply(body, {}, max_examples=100) == \
        "num-examples 101 > max-num-examples 100: the reply would outweigh a whole training pool"
    assert check_reply(body, {}, max_examples=101) is None

    class Pool:
        train_labels = np.zeros(3200)

    assert BaseStrategy(resolve({}), test_data=Pool()).max_examples == 3200  # 0 = the training pool's size
    assert BaseStrategy(resolve({"max-num-examples": 50}), test_data=Pool()).max_examples == 50


# ---- files ---------------------------------------------------------------------------
def _tiny(out, **over) -> dict:
    return resolve({"num-server-rounds": 1, "local-epochs": 0, "fraction-evaluate": 0.0, "out-dir": str(out),
                    "run-name": "r", **over})


def _snapshot(folder: pathlib.Path) -> dict:
    return {p.name: (p.read_bytes(), p.stat().st_mtime_ns) for p in sorted(folder.iterdir())}


class Payload:
    """A pickle that would create ``marker`` when unpickled."""

    def __init__(self, marker: pathlib.Path):
        self.marker = marker

    def __reduce__(self):
        return pathlib.Path.touch, (self.marker,)


def test_crafted_checkpoint_is_refused_in_one_line_and_its_payload_never_runs(tmp_path):
    run = tmp_path / "r"
    run.mkdir()
    marker = tmp_path / "payload-ran"
    torch.save({"round": 1, "config": {}, "payload": Payload(marker)}, run / "checkpoint.pt")
    before = _snapshot(run)
    status, reason, _ = run_logged(_tiny(tmp_path, resume=True), 2, tmp_path / "flwr.log")
    assert status == "finished:failed"
    assert "refused to load" in reason and "checkpoint.pt" in reason and len(reason.splitlines()) == 1
    assert not marker.exists()
    assert _snapshot(run) == before  # a refused resume changes no file


@pytest.mark.parametrize("name", ["../x", "/tmp/x", "a/b", ".", "..", ".hidden", "a\\b", "a b"])
def test_run_name_must_be_a_plain_name(name):
    with pytest.raises(ConfigError, match="run-name must be a plain folder name"):
        resolve({"run-name": name})


def test_existing_run_is_never_overwritten_and_a_refused_resume_changes_nothing(tmp_path):
    assert run_logged(_tiny(tmp_path), 2, tmp_path / "1.log")[0] == "finished:completed"
    run = tmp_path / "r"
    before = _snapshot(run)
    status, reason, _ = run_logged(_tiny(tmp_path), 2, tmp_path / "2.log")
    assert status == "finished:failed" and "already holds a run" in reason and "resume=true" in reason
    # resume with a changed key: refused, and not one byte or timestamp changed
    status, reason, _ = run_logged(_tiny(tmp_path, resume=True, lr=0.5), 2, tmp_path / "3.log")
    assert status == "finished:failed" and "different run config" in reason
    assert _snapshot(run) == before
    # overwrite=true replaces it
    status, _, _ = run_logged(_tiny(tmp_path, overwrite=True, seed=3), 2, tmp_path / "4.log")
    assert status == "finished:completed"
    assert _snapshot(run)["metrics.csv"] != before["metrics.csv"]


def test_a_sweep_into_an_existing_run_fails_at_check_time(tmp_path, capsys):
    from simulations.sweep import main

    (tmp_path / "out" / "run").mkdir(parents=True)
    (tmp_path / "out" / "run" / "metrics.csv").write_text("round\n0\n")
    spec = tmp_path / "s.yaml"
    spec.write_text("base: {num-server-rounds: 1}\n")
    assert main([str(spec), "--out-dir", str(tmp_path / "out"), "--check"]) == 2
    err = capsys.readouterr().err.strip()
    assert "already holds a run" in err and len(err.splitlines()) == 1


# ---- bad input -------------------------------------------------------------------------
def test_fraction_train_must_be_positive():
    with pytest.raises(ConfigError, match=r"fraction-train must be in \(0, 1\], got 0"):
        resolve({"fraction-train": 0.0})


def _truncated(path: pathlib.Path, fmt: str) -> None:
    """A ``fmt`` image cut in half: its header parses, its pixels do not."""
    import io

    from PIL import Image

    buffer = io.BytesIO()
    Image.fromarray(np.random.default_rng(0).integers(0, 255, (64, 64, 3), dtype=np.uint8)).save(buffer, fmt)
    path.write_bytes(buffer.getvalue()[: len(buffer.getvalue()) // 2])


def _corrupt_png(path: pathlib.Path) -> None:
    """A PNG whose compressed data is corrupt but whose chunk checksums are right."""
    import io
    import zlib

    from PIL import Image

    buffer = io.BytesIO()
    Image.new("RGB", (64, 64), (10, 20, 30)).save(buffer, "PNG", compress_level=0)
    raw = bytearray(buffer.getvalue())
    start = raw.index(b"IDAT") + 4
    length = int.from_bytes(raw[start - 8:start - 4], "big")
    raw[start + 2:start + 7] = b"\xff" * 5  # the first stored block's header and lengths
    raw[start + length:start + length + 4] = (zlib.crc32(bytes(raw[start - 4:start + length])) & 0xFFFFFFFF).to_bytes(4, "big")
    path.write_bytes(bytes(raw))


@pytest.mark.parametrize("damage, message", [
    (lambda base: _truncated(base / "art" / "dog" / "9.jpg", "JPEG"), "art/dog/9.jpg is not a readable image"),
    (lambda base: _truncated(base / "art" / "dog" / "9.bmp", "BMP"), "art/dog/9.bmp is not a readable image"),
    (lambda base: _corrupt_png(base / "art" / "dog" / "9.png"), "art/dog/9.png is not a readable image"),
    (lambda base: (base / "art" / "dog" / "1.png").write_bytes(b"not an image"), "art/dog/1.png is not a readable image"),
    (lambda base: (base / "photo" / "cat" / "2.png").write_bytes((base / "photo" / "cat" / "2.png").read_bytes()[:-20]),
     "photo/cat/2.png is not a readable image"),
    (lambda base: (base / "art" / "bird").mkdir(), "class folder"),
])
def test_corrupt_or_empty_image_folders_fail_at_load_and_in_the_sweep_check(tmp_path, capsys, damage, message):
    from datasets import DataError
    from datasets.image_folder import load_multi_domain
    from simulations.sweep import main

    damage(pacs_tree(tmp_path / "data"))
    with pytest.raises(DataError, match=message) as err:
        load_multi_domain("pacs", tmp_path / "data")
    assert len(str(err.value).splitlines()) == 1
    spec = tmp_path / "s.yaml"
    spec.write_text(f"base: {{dataset: pacs, data-root: '{tmp_path / 'data'}', num-supernodes: 2}}\n")
    assert main([str(spec), "--out-dir", str(tmp_path / "out"), "--check"]) == 2
    err = capsys.readouterr().err.strip()
    assert message.split(" ")[0] in err and len(err.splitlines()) == 1


# ---- ground truth ------------------------------------------------------------------------
def test_ground_truth_needs_the_node_flag(caplog):
    def ctx(**node):
        return Context(run_id=1, node_id=5, node_config=node, state=RecordDict(), run_config={})

    asked = {"server-round": 1, SIM_GROUND_TRUTH: True}
    assert ground_truth_allowed(ctx(**{SIM_GROUND_TRUTH: True}))
    assert refuse_evaluation_only(asked, ctx(**{SIM_GROUND_TRUTH: True})) == asked
    for node in ({}, {"partition-id": 0, "num-partitions": 2}, {SIM_GROUND_TRUTH: "true"}):
        assert not ground_truth_allowed(ctx(**node))
        with caplog.at_level(logging.WARNING, logger="flwr"):
            caplog.clear()
            assert refuse_evaluation_only(asked, ctx(**node)) == {"server-round": 1, SIM_GROUND_TRUTH: False}
        lines = [r.getMessage() for r in caplog.records if "refused" in r.getMessage()]
        assert len(lines) == 1 and SIM_GROUND_TRUTH in lines[0]
    # the in-process federation is a simulation: its nodes carry the flag
    grid = LocalGrid(None, 2, {})
    assert all(ground_truth_allowed(grid.context(n)) for n in grid.get_node_ids())
