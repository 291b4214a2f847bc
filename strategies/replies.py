"""What a reply may hold: the server's checks against what it asked (it trusts no reply).

A train or evaluate reply must hold exactly the expected ArrayRecords, one MetricRecord
``metrics`` with the method's keys (``train_metrics``/``evaluate_metrics``) as finite
scalars in their range (``metric_range``), no ConfigRecord, and an integer
``num-examples`` in [1, ``max-num-examples``] (its weight: one client cannot claim more
than a whole training pool). ``BaseStrategy`` drops anything else with one log line and
counts it in ``failures``.

Arrays are judged by their data, not by what the node declares: a node writes
``Array.shape``/``Array.dtype`` itself, so the bytes are first capped (``max_bytes``: the
expected element count times the widest accepted width, plus the ``.npy`` header), then
decoded (``np.load``, never pickle) and the decoded shape and dtype compared with the
expected ``Spec`` (and with the declared ones, which aggregation reads). Accepted dtypes:
exactly those of the array the server sent (``sent_specs``); for a record the server did
not send (method statistics, importances) float32 or float64, the widths the clients
compute in. Half precision would be summed and saved in half precision, and
``longdouble`` is platform-dependent (numpy's 80/128-bit extended type, which torch cannot
load): both are refused.
"""

from __future__ import annotations

import math
from collections import Counter
from logging import WARNING
from typing import Iterable, NamedTuple

import numpy as np
from flwr.app import ArrayRecord, RecordDict
from flwr.common.logger import log

from common.keys import shown

FLOATS = ("float32", "float64")  # accepted where the server sent no array to copy
HEADER_BYTES = 4096  # an .npy header is < 1 KiB for any shape a model has (padded to 64 bytes)
MAX_LOSS = 1e9  # a loss above this is not a model's (a diverged client sends NaN, dropped anyway)


def record_bytes(content: RecordDict) -> int:
    """Bytes of the arrays in a message (configs and metrics are negligible)."""
    return sum(rec.count_bytes() for rec in content.array_records.values())


class Spec(NamedTuple):
    """What one array of a reply must be: its shape (``None`` first: any count up to
    ``max_rows``) and the dtypes accepted (numpy names)."""

    shape: tuple
    dtypes: tuple[str, ...] = FLOATS
    max_rows: int = 0


def sent_specs(arrays: ArrayRecord) -> dict[str, Spec]:
    """Each array of ``arrays`` (what the server sent): its shape and exactly its dtype."""
    return {k: Spec(tuple(v.shape), (np.dtype(v.dtype).name,)) for k, v in arrays.items()}


def max_bytes(spec: Spec) -> int:
    """The most bytes an array of ``spec`` may take on the wire (checked before decoding)."""
    shape = tuple(spec.max_rows if d is None else d for d in spec.shape)
    return int(np.prod(shape, dtype=np.int64)) * max(np.dtype(t).itemsize for t in spec.dtypes) + HEADER_BYTES


def metric_range(key: str) -> tuple[float, float] | None:
    """The range a reported metric must lie in (None: any finite value)."""
    if "accuracy" in key:
        return 0.0, 1.0
    if key.endswith("loss") or key == "divergence":
        return 0.0, MAX_LOSS
    if key.startswith("train-"):  # a method's loss terms (e.g. FedSDWC's), whatever their sign
        return -MAX_LOSS, MAX_LOSS
    if "alpha" in key:
        return 0.0, math.inf
    return None


def check_array(where: str, arr, spec: Spec) -> str | None:
    """Why one array is not ``spec``: size on the wire, then the decoded data."""
    if arr.stype != "numpy.ndarray":
        return f"array '{where}' has serialization type {str(arr.stype)[:40]!r}, expected numpy.ndarray"
    if len(arr.data) > max_bytes(spec):
        return f"array '{where}' is {len(arr.data)} bytes, more than {max_bytes(spec)} for {spec.shape}"
    try:
        values = arr.numpy()
    except Exception as err:  # a dtype or buffer numpy cannot read (allow_pickle=False)
        return f"array '{where}' is unreadable ({type(err).__name__})"
    shape, declared = tuple(values.shape), tuple(arr.shape)
    rows_ok = spec.shape[:1] != (None,) or (len(shape) >= 1 and 1 <= shape[0] <= spec.max_rows)
    if len(shape) != len(spec.shape) or not rows_ok or any(
            e is not None and e != d for e, d in zip(spec.shape, shape)):
        return f"array '{where}' holds data of shape {shape}, expected {spec.shape}"
    if values.dtype.name not in spec.dtypes:
        kind = "real floating point" if set(spec.dtypes) <= set(FLOATS) else "the dtype sent"
        return f"array '{where}' has dtype {values.dtype}, expected {kind} ({'/'.join(spec.dtypes)})"
    if declared != shape or str(arr.dtype) != values.dtype.name:
        return f"array '{where}' declares {declared} {str(arr.dtype)[:20]} but holds {shape} {values.dtype}"
    if values.dtype.kind == "f" and not np.isfinite(values).all():
        return f"array '{where}' holds NaN or inf"
    return None


def check_reply(content: RecordDict, expected: dict[str, dict[str, tuple | Spec]] | None,
                metric_keys: Iterable[str] | None = None, required: Iterable[str] = ("num-examples",),
                max_examples: int = 0, int_arrays: Iterable[str] = ()) -> str | None:
    """Why a reply is unusable, or None.

    ``expected``: ArrayRecord name -> array name -> ``Spec`` (or a shape: float32/float64,
    or also int64 for the names in ``int_arrays``); the reply must hold exactly these
    records (None: arrays are not checked, e.g. a caller checking metrics only).
    ``metric_keys``: the keys ``metrics`` may hold (None: any), ``required`` those it must
    hold. ``max_examples`` > 0 caps ``num-examples``.
    """
    if "metrics" not in content.metric_records:
        return "no MetricRecord 'metrics' with 'num-examples'"
    if len(content.metric_records) > 1:
        return f"unexpected MetricRecord(s) {sorted(set(content.metric_records) - {'metrics'})[:5]}"
    if content.config_records:
        return f"unexpected ConfigRecord(s) {sorted(content.config_records)[:5]}"
    metrics = content.metric_records["metrics"]
    missing = [k for k in required if k not in metrics]
    if missing:
        return f"MetricRecord 'metrics' lacks {missing}"
    if metric_keys is not None and set(metrics) - set(metric_keys):
        return f"unexpected metric key(s) {[k[:40] for k in sorted(set(metrics) - set(metric_keys))[:5]]}"
    for key, value in metrics.items():
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            return f"metric '{key}' is not a number ({type(value).__name__})"
        if not math.isfinite(value):
            return f"metric '{key}' is {value}"
        bounds = metric_range(key)
        if bounds and not bounds[0] <= value <= bounds[1]:
            return f"metric '{key}' is {value:.4g}, outside [{bounds[0]:g}, {bounds[1]:g}]"
    n = metrics["num-examples"]
    if not n > 0 or int(n) != n:
        return f"num-examples must be > 0 and whole, got {n:.4g}"
    if max_examples and n > max_examples:
        return f"num-examples {n:.4g} > max-num-examples {max_examples}: the reply would outweigh a whole training pool"
    if expected is None:
        return None
    if set(content.array_records) != set(expected):
        names = set(content.array_records)
        if set(expected) - names:
            return f"missing ArrayRecord '{sorted(set(expected) - names)[0]}'"
        return f"unexpected ArrayRecord(s) {[k[:40] for k in sorted(names - set(expected))[:5]]}"
    ints = set(int_arrays)
    for name, specs in expected.items():
        record = content.array_records[name]
        if set(record.keys()) != set(specs):
            return f"ArrayRecord '{name}' has arrays {sorted(record.keys())[:3]}..., expected {sorted(specs)[:3]}..."
        for key, spec in specs.items():
            if not isinstance(spec, Spec):
                spec = Spec(tuple(spec), FLOATS + (("int64",) if key in ints else ()))
            reason = check_array(f"{name}/{key}", record[key], spec)
            if reason:
                return reason
    return None


def check_query_reply(content: RecordDict, max_partitions: int = 0) -> str | None:
    """Why a reply to the partition-id QUERY is unusable, or None."""
    metrics = content.metric_records.get("metrics")
    if metrics is None:
        return "no MetricRecord 'metrics'"
    pid, n = metrics.get("partition-id"), metrics.get("num-partitions")
    if not all(isinstance(v, int) and not isinstance(v, bool) for v in (pid, n)):
        return f"partition-id and num-partitions must be integers, got {shown(pid)}, {shown(n)}"
    if not 0 <= pid < n or (max_partitions and n > max_partitions):
        return f"partition-id {pid} of num-partitions {n} is out of range"
    return None


def finite_arrays(arrays: ArrayRecord | None) -> str | None:
    """Why an aggregate must not be committed (a non-finite float value), or None."""
    for key, arr in (arrays or {}).items():
        values = arr.numpy()
        if values.dtype.kind in "fc" and not np.isfinite(values).all():
            return f"array '{key}' holds NaN or inf"
    return None


def agree_partitions(answers: dict[int, tuple[int, int]], known: int) -> tuple[dict[int, int], int]:
    """Node id -> partition id for the nodes whose answer fits the federation, and its
    number of partitions. ``answers``: node -> (partition-id, num-partitions), each
    already in range; ``known``: the number agreed before (0: none yet), else the most
    common answer (ties: the smaller). A node that names another number is ignored with
    one line: one node cannot change how the others' data is split."""
    if not answers:
        return {}, known
    counts = Counter(n for _, n in answers.values())
    agreed = known or min(counts, key=lambda n: (-counts[n], n))
    for node in sorted(n for n, (_, k) in answers.items() if k != agreed):
        log(WARNING, "ignored node %s: its partition-id reply does not fit: num-partitions %d, the federation has %d",
            node, answers[node][1], agreed)
    return {node: pid for node, (pid, n) in answers.items() if n == agreed}, agreed
