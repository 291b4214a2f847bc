"""What a reply may hold: the server's checks against what it asked (it trusts no reply).

A train or evaluate reply must hold exactly the expected ArrayRecords (names, shapes,
real float dtypes; integer only where the model sent is integer), one MetricRecord
``metrics`` with the method's keys (``train_metrics``/``evaluate_metrics``) as finite
scalars, no ConfigRecord, and an integer ``num-examples`` in [1, ``max-num-examples``]
(its weight: one client cannot claim more than a whole training pool). ``BaseStrategy``
drops anything else with one log line and counts it in ``failures``.
"""

from __future__ import annotations

import math
from typing import Iterable

import numpy as np
from flwr.app import RecordDict


def record_bytes(content: RecordDict) -> int:
    """Bytes of the arrays in a message (configs and metrics are negligible)."""
    return sum(rec.count_bytes() for rec in content.array_records.values())


def check_reply(content: RecordDict, expected: dict[str, dict[str, tuple]] | None,
                metric_keys: Iterable[str] | None = None, required: Iterable[str] = ("num-examples",),
                max_examples: int = 0, int_arrays: Iterable[str] = ()) -> str | None:
    """Why a reply is unusable, or None.

    ``expected``: ArrayRecord name -> array name -> shape; the reply must hold exactly
    these records (None: arrays are not checked, e.g. a caller checking metrics only).
    ``metric_keys``: the keys ``metrics`` may hold (None: any), ``required`` those it must
    hold. ``max_examples`` > 0 caps ``num-examples``. ``int_arrays``: array names that may
    be integer (e.g. a batch-norm counter of the model sent); every other array must be
    real floating point.
    """
    if "metrics" not in content.metric_records:
        return "no MetricRecord 'metrics' with 'num-examples'"
    if len(content.metric_records) > 1:
        return f"unexpected MetricRecord(s) {sorted(set(content.metric_records) - {'metrics'})}"
    if content.config_records:
        return f"unexpected ConfigRecord(s) {sorted(content.config_records)}"
    metrics = content.metric_records["metrics"]
    missing = [k for k in required if k not in metrics]
    if missing:
        return f"MetricRecord 'metrics' lacks {missing}"
    if metric_keys is not None and set(metrics) - set(metric_keys):
        return f"unexpected metric key(s) {sorted(set(metrics) - set(metric_keys))[:5]}"
    for key, value in metrics.items():
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            return f"metric '{key}' is not a number ({type(value).__name__})"
        if not math.isfinite(value):
            return f"metric '{key}' is {value}"
    n = metrics["num-examples"]
    if not n > 0 or int(n) != n:
        return f"num-examples must be > 0 and whole, got {n}"
    if max_examples and n > max_examples:
        return f"num-examples {n:.4g} > max-num-examples {max_examples}: the reply would outweigh a whole training pool"
    if expected is not None and set(content.array_records) != set(expected):
        names = set(content.array_records)
        if set(expected) - names:
            return f"missing ArrayRecord '{sorted(set(expected) - names)[0]}'"
        return f"unexpected ArrayRecord(s) {sorted(names - set(expected))}"
    for name, shapes in (expected or {}).items():
        record = content.array_records[name]
        if set(record.keys()) != set(shapes):
            return f"ArrayRecord '{name}' has arrays {sorted(record.keys())[:3]}..., expected {sorted(shapes)[:3]}..."
        for key, shape in shapes.items():
            if tuple(record[key].shape) != tuple(shape):
                return f"array '{name}/{key}' has shape {tuple(record[key].shape)}, expected {tuple(shape)}"
    int_arrays = set(int_arrays)
    for name, record in content.array_records.items():
        for key, arr in record.items():
            try:
                values = arr.numpy()
            except Exception as err:  # a dtype or buffer numpy cannot read
                return f"array '{name}/{key}' is unreadable ({type(err).__name__})"
            kind = values.dtype.kind
            if kind not in "fiu" or (kind in "iu" and key not in int_arrays):
                return f"array '{name}/{key}' has dtype {values.dtype}, expected real floating point"
            if kind == "f" and not np.isfinite(values).all():
                return f"array '{name}/{key}' holds NaN or inf"
    return None


def check_query_reply(content: RecordDict, max_partitions: int = 0) -> str | None:
    """Why a reply to the partition-id QUERY is unusable, or None."""
    metrics = content.metric_records.get("metrics")
    if metrics is None:
        return "no MetricRecord 'metrics'"
    pid, n = metrics.get("partition-id"), metrics.get("num-partitions")
    if not all(isinstance(v, int) and not isinstance(v, bool) for v in (pid, n)):
        return f"partition-id and num-partitions must be integers, got {pid!r}, {n!r}"
    if not 0 <= pid < n or (max_partitions and n > max_partitions):
        return f"partition-id {pid} of num-partitions {n} is out of range"
    return None
