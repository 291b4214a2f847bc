"""What a ``checkpoint.pt`` must hold before a run resumes from it (it trusts no file).

``torch.load(..., weights_only=True)`` already refuses any object but tensors and plain
values; ``check_checkpoint`` then checks the schema ``BaseStrategy.save_checkpoint``
writes (types of every entry, the RNG states' structure, rows of numbers and strings)
and that the model's array names, shapes and dtypes are the run's own, so a file of
another run or a hand-edited one is refused in one line instead of failing later.
``save`` and ``load`` are ``BaseStrategy.save_checkpoint``/``load_checkpoint``.
"""

from __future__ import annotations

import random
from logging import INFO

import numpy as np
import torch
from flwr.app import Array, ArrayRecord
from flwr.common.logger import log

from common.keys import shown

KEYS = ("round", "config", "arrays", "strategy", "partitions", "rows", "rng")


def _int(value) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _rng_ok(rng) -> bool:
    """(Python ``random`` state, NumPy legacy state, torch CPU state), as saved."""
    if not isinstance(rng, (tuple, list)) or len(rng) != 3:
        return False
    py, nps, th = rng
    py_ok = (isinstance(py, (tuple, list)) and len(py) == 3 and isinstance(py[1], (tuple, list))
             and len(py[1]) == 625 and all(_int(v) and 0 <= v < 2**32 for v in py[1]))
    key = nps[1] if isinstance(nps, (tuple, list)) and len(nps) == 5 else None
    np_ok = (nps[0] == "MT19937" and torch.is_tensor(key) and tuple(key.shape) == (624,)
             if key is not None else False)
    return py_ok and np_ok and torch.is_tensor(th) and th.dtype == torch.uint8 and th.ndim == 1


def check_checkpoint(state, model: ArrayRecord) -> str | None:
    """Why ``state`` (a loaded checkpoint) cannot resume a run whose model is ``model``, or None."""
    if not isinstance(state, dict) or set(KEYS) - set(state):
        return f"it lacks {sorted(set(KEYS) - set(state)) if isinstance(state, dict) else KEYS}"
    if not _int(state["round"]) or state["round"] < 0:
        return f"round must be an integer >= 0, got {shown(state['round'])}"
    for key in ("config", "arrays", "strategy", "partitions"):
        if not isinstance(state[key], dict):
            return f"{key} must be a mapping"
    rows = state["rows"]
    if not isinstance(rows, list) or not all(
            isinstance(r, dict) and all(isinstance(k, str) and (v is None or isinstance(v, (int, float, str))) for k, v in r.items())
            for r in rows):
        return "rows must be a list of rows of numbers and strings"
    if not _rng_ok(state["rng"]):
        return "rng is not the random states this code saves"
    arrays = state["arrays"]
    if set(arrays) != set(model.keys()):
        return f"its model has arrays {shown(sorted(arrays)[:3])}..., this run's {shown(sorted(model.keys())[:3])}..."
    for key, arr in model.items():
        value = arrays[key]
        if not torch.is_tensor(value):
            return f"array {shown(key)} is not a tensor"
        want = (tuple(arr.shape), np.dtype(arr.dtype).name)
        got = (tuple(value.shape), str(value.dtype).removeprefix("torch."))
        if got != want:
            return f"array {shown(key)} is {got}, this run's model has {want}"
        if value.is_floating_point() and not torch.isfinite(value).all():
            return f"array {shown(key)} holds NaN or inf"
    return None


def plain(obj):
    """``obj`` with NumPy values made tensors or Python scalars: what ``torch.load(...,
    weights_only=True)`` accepts, so checkpoints are read without unpickling objects."""
    if isinstance(obj, dict):
        return {k: plain(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return type(obj)(plain(v) for v in obj)
    if isinstance(obj, np.ndarray):
        return torch.from_numpy(np.array(obj, order="C"))  # (np.ascontiguousarray makes a 0-d array 1-d)
    if isinstance(obj, np.generic):
        return obj.item()
    return obj


def save(strategy, server_round: int, arrays: ArrayRecord) -> None:
    """Write ``strategy``'s checkpoint after ``server_round`` atomically (a kill never
    leaves half a checkpoint): model, strategy state, partitions, rows, RNG states."""
    state = {
        "round": server_round,
        "config": strategy.cfg,
        "arrays": {k: v.numpy() for k, v in arrays.items()},
        "strategy": strategy.state_dict(),
        "partitions": strategy.partitions,
        "rows": strategy.rows,
        "rng": (random.getstate(), np.random.get_state(), torch.get_rng_state()),
    }
    path = strategy.checkpoint_path
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save(plain(state), path.with_suffix(".tmp"))
    path.with_suffix(".tmp").replace(path)


def load(strategy) -> tuple[int, ArrayRecord]:
    """Restore ``strategy`` from its checkpoint, checked first (``check_checkpoint``);
    returns (last finished round, its model). Raises ValueError/FileNotFoundError with one line."""
    path = strategy.checkpoint_path
    if not path.exists():
        raise FileNotFoundError(f"resume=true but no checkpoint at {path}: check out-dir and run-name")
    try:  # weights_only: tensors and plain values only; any other object is refused, never built
        state = torch.load(path, map_location="cpu", weights_only=True)
        why = check_checkpoint(state, strategy.initial_arrays())
    except Exception as err:  # noqa: BLE001 (any failure to read is the same refusal)
        why = (str(err).strip().splitlines() or [type(err).__name__])[0][:200]
    if why:
        raise ValueError(f"refused to load {path}: not a checkpoint written by this code ({why}); "
                         "remove it, or pass another run-name") from None
    # keys that change no trained number (where features are cached, how often the model is evaluated, ...)
    ignore = {"resume", "num-server-rounds", "round-timeout", "progress-every", "tracker", "mlflow-uri",
              "feature-cache", "evaluate-every"}
    changed = sorted(k for k in state["config"] if k not in ignore and state["config"][k] != strategy.cfg.get(k))
    if changed:
        raise ValueError(f"resume=true with a different run config ({shown(changed[:5])}): resume with the same keys")
    py_state, np_state, torch_state = state["rng"]
    random.setstate((py_state[0], tuple(py_state[1]), py_state[2]))
    np.random.set_state((np_state[0], np.asarray(np_state[1], dtype=np.uint32), *np_state[2:]))
    torch.set_rng_state(torch_state)
    strategy.load_state_dict(state["strategy"])
    strategy.rows = list(state["rows"])
    strategy.replaying = True  # the results writer starts from the rows already written (and tracked)
    try:
        for row in strategy.rows:
            if strategy.on_round:
                strategy.on_round(row)
    finally:
        strategy.replaying = False
    arrays = ArrayRecord({k: Array(np.asarray(v.numpy())) for k, v in state["arrays"].items()})
    log(INFO, "resuming %s after round %d", strategy.cfg["run-name"], state["round"])
    return int(state["round"]), arrays
