"""A simulated client's state across rounds, keyed by its partition: one safetensors file
per client, ``<out-dir>/<run-name>/client-state/<partition-id>.safetensors``.

A client keeps state through ``Reply.keep``. Examples are FedHiP's local and personal
heads, FedSDWC's prior, or an optimizer's moments. The state must follow the client,
not the node. In a simulation (``partition-assignment=server``) a node is a worker slot
that serves whichever clients the server names, so a client may be served by another
node next time. ``Context.state`` belongs to one node. Flower's engine also sends it
with every message that node handles, so it would grow with every client the node ever
served. A file per client costs disk only for clients that kept something, and memory
only while the client is served. safetensors files are read without unpickling.
Real SuperNodes serve one client each and keep their state in ``Context.state``.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file

from common.outputs import check_run_name, out_root

Tensors = dict[str, torch.Tensor]
FOLDER = "client-state"


def state_dir(cfg: dict, run_name: str) -> Path:
    """The run's client-state folder (``run-name`` as the server named it: a plain name)."""
    check_run_name(run_name)
    return out_root(cfg) / run_name / FOLDER


def load(folder: Path, partition_id: int) -> dict[str, Tensors]:
    """What the client kept last time, by record name ({} for a client not seen before)."""
    path = folder / f"{int(partition_id)}.safetensors"
    if not path.exists():
        return {}
    from safetensors import safe_open

    with safe_open(str(path), "pt") as f:
        names = json.loads((f.metadata() or {}).get("records", "[]"))
    out: dict[str, Tensors] = {name: {} for name in names}
    for key, value in load_file(str(path)).items():
        record, _, name = key.partition("/")
        out.setdefault(record, {})[name] = value
    return out


def save(folder: Path, partition_id: int, keep: dict[str, Tensors]) -> None:
    """Store ``keep`` (record name -> tensors) over the client's earlier records of the
    same names, as ``Context.state[name] = ArrayRecord(...)`` does; written atomically."""
    if not keep:
        return
    bad = [name for name in keep if "/" in name]
    if bad:
        raise ValueError(f"kept record names may not hold '/': {bad}")
    records = {**load(folder, partition_id), **keep}
    flat = {f"{record}/{name}": value.detach().cpu().contiguous().clone()
            for record, values in records.items() for name, value in values.items()}
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{int(partition_id)}.safetensors"
    tmp = path.with_suffix(f".{os.getpid()}.tmp")
    save_file(flat, str(tmp), metadata={"records": json.dumps(sorted(records))})
    tmp.replace(path)
