"""Frozen-backbone features on disk, shared by the processes of a sweep (``feature-cache``).

A store is one folder per backbone identity (``FeatureExtractor.fingerprint``: its weights,
input size, layer, buffer, device type, torch and timm versions), holding safetensors
shards of two tensors: ``keys`` (uint8 [n, 16], the extractor's per-sample blake2b digests
of pixels and dataset norm) and ``features`` (float32 [n, d]). A process indexes the keys
of every shard and reads only the feature rows it is asked for (memory-mapped), so a store
shared by several datasets costs a process only the features it uses.

Why shards and not one file rewritten per write: a write then costs its new entries only,
and writers never lose each other's entries. A writer saves a temp file in the folder and
renames it to a fresh name (``os.replace``: a reader sees a whole file or none). Past
``MAX_SHARDS`` shards a writer that gets the folder's lock merges them into one. A file
that is not such a shard (corrupt, other tensors, dtype, width or lengths, non-finite
values, a link) is skipped with one warning line: never unpickled, never trusted.
"""

from __future__ import annotations

import contextlib
import logging
import os
import tempfile
import time
from pathlib import Path
from uuid import uuid4

import torch

LOG = logging.getLogger("flwr")  # Flower's logger: the line lands in the run's flwr.log
KEY_BYTES = 16
SUFFIX = ".safetensors"
STALE_TMP_S = 3600.0  # a temp file this old is no write under way


def current_umask() -> int:
    """The process's umask: read from ``/proc/self/status`` where Linux has it (no window in
    which another thread's new file gets a wrong mode); elsewhere ``os.umask``, which can only
    be read by setting it for an instant."""
    with contextlib.suppress(OSError, ValueError, StopIteration):
        with open("/proc/self/status") as status:
            return int(next(line for line in status if line.startswith("Umask:")).split()[1], 8)
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def save_atomic(tensors: dict[str, torch.Tensor], path: Path, metadata: dict[str, str] | None = None) -> None:
    """Write ``tensors`` as safetensors to ``path`` through a temp file in its folder and
    ``os.replace``: a reader sees the whole file or none. The file gets the mode a plain
    ``open`` would (0666 less the umask), not ``mkstemp``'s 0600, so others sharing an
    out-dir can read it."""
    from safetensors.torch import save_file

    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".", suffix=".tmp")
    os.close(fd)
    try:
        save_file(tensors, tmp, metadata=metadata)
        os.chmod(tmp, 0o666 & ~current_umask())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


class FeatureStore:
    """``folder``'s shards of ``dim``-wide features: ``get`` what any process wrote, ``write`` ours."""

    MAX_SHARDS = 32

    def __init__(self, folder: Path, dim: int):
        self.folder, self.dim = Path(folder), int(dim)
        self.index: dict[bytes, tuple[str, int]] = {}  # key -> (shard name, row)
        self.seen: set[str] = set()  # shards indexed (or skipped) by this process
        self.bad: set[str] = set()

    def shards(self) -> list[Path]:
        try:
            if self.folder.is_symlink():
                return []
            return sorted(p for p in self.folder.iterdir() if p.name.endswith(SUFFIX) and not p.name.startswith("."))
        except OSError:  # not there (yet), or not readable
            return []

    def get(self, keys: list[bytes]) -> dict[bytes, torch.Tensor]:
        """The features of those of ``keys`` that some shard holds (shards written since
        the last call are indexed first)."""
        self.scan()
        wanted: dict[str, list[tuple[bytes, int]]] = {}
        for key in keys:
            if key in self.index:
                name, row = self.index[key]
                wanted.setdefault(name, []).append((key, row))
        found: dict[bytes, torch.Tensor] = {}
        for name, items in wanted.items():
            rows = self.rows(name, [row for _, row in items])
            if rows is None:  # merged away or bad: forget its entries (a merged shard is indexed next scan)
                self.index = {k: v for k, v in self.index.items() if v[0] != name}
                continue
            found.update((key, f) for (key, _), f in zip(items, rows))
        return found

    def scan(self) -> None:
        """Index the keys of the shards not seen yet; a bad shard is skipped with one warning."""
        from safetensors import safe_open

        for path in self.shards():
            if path.name in self.seen:
                continue
            self.seen.add(path.name)
            try:
                if path.is_symlink():
                    raise ValueError("a symbolic link")
                with safe_open(str(path), "pt") as f:
                    problem = self.problem(f)
                    keys = f.get_tensor("keys").numpy() if not problem else None
            except FileNotFoundError:  # merged away meanwhile: its entries are in the merged shard
                continue
            except Exception as err:  # a truncated or foreign file: any error of the reader
                problem = f"unreadable ({type(err).__name__}: {err})"
            if problem:
                self.skip(path.name, problem)
                continue
            self.index.update((bytes(k), (path.name, row)) for row, k in enumerate(keys))

    def problem(self, f) -> str:
        """What makes the open file ``f`` no shard of this store ("" for a valid one)."""
        if set(f.keys()) != {"keys", "features"}:
            return f"tensors {sorted(f.keys())}, expected ['features', 'keys']"
        keys, feats = f.get_slice("keys"), f.get_slice("features")
        if keys.get_dtype() != "U8" or len(keys.get_shape()) != 2 or keys.get_shape()[1] != KEY_BYTES:
            return f"keys {keys.get_dtype()} {keys.get_shape()}, expected U8 [n, {KEY_BYTES}]"
        if feats.get_dtype() != "F32" or len(feats.get_shape()) != 2 or feats.get_shape()[1] != self.dim:
            return f"features {feats.get_dtype()} {feats.get_shape()}, expected F32 [n, {self.dim}]"
        if keys.get_shape()[0] != feats.get_shape()[0]:
            return f"{keys.get_shape()[0]} keys for {feats.get_shape()[0]} feature rows"
        return ""

    def rows(self, name: str, rows: list[int]) -> list[torch.Tensor] | None:
        """Rows ``rows`` of shard ``name``'s features, checked finite; None if it is gone or bad."""
        from safetensors import safe_open

        order = sorted(range(len(rows)), key=rows.__getitem__)
        out: list[torch.Tensor] = [torch.empty(0)] * len(rows)
        try:
            with safe_open(str(self.folder / name), "pt") as f:
                feats = f.get_slice("features")
                i = 0
                while i < len(order):  # consecutive rows in one slice
                    j = i + 1
                    while j < len(order) and rows[order[j]] == rows[order[j - 1]] + 1:
                        j += 1
                    block = feats[rows[order[i]]:rows[order[j - 1]] + 1]
                    for n, at in enumerate(order[i:j]):
                        out[at] = block[n]
                    i = j
        except FileNotFoundError:
            return None
        except Exception as err:
            self.skip(name, f"unreadable ({type(err).__name__}: {err})")
            return None
        if not all(torch.isfinite(r).all() for r in out):
            self.skip(name, "non-finite features")
            return None
        return out

    def skip(self, name: str, problem: str) -> None:
        if name not in self.bad:
            self.bad.add(name)
            LOG.warning("feature cache: ignored %s: %s; its features are computed again", self.folder / name, problem)

    def write(self, entries: dict[bytes, torch.Tensor]) -> None:
        """Add ``entries`` as a new shard (atomically), then merge if there are many."""
        if not entries:
            return
        if self.folder.is_symlink():
            LOG.warning("feature cache: %s is a symbolic link: nothing written (a run writes only under "
                        "out-dir)", self.folder)
            return
        try:
            self.folder.mkdir(parents=True, exist_ok=True)
            name = self._save(entries)
            self.seen.add(name)
            self.index.update((k, (name, row)) for row, k in enumerate(entries))
            if len(self.shards()) - len(self.bad) > self.MAX_SHARDS:
                self.merge()
        except OSError as err:  # a full or read-only disk: the run goes on, its features stay in memory
            LOG.warning("feature cache: could not write to %s (%s)", self.folder, err)

    def _save(self, entries: dict[bytes, torch.Tensor]) -> str:
        keys = torch.frombuffer(bytearray(b"".join(entries)), dtype=torch.uint8).view(-1, KEY_BYTES)
        feats = torch.stack([f.to(torch.float32) for f in entries.values()]).contiguous()
        name = uuid4().hex + SUFFIX
        save_atomic({"keys": keys, "features": feats}, self.folder / name)
        return name

    def merge(self) -> None:
        """Merge the valid shards into one, under the folder's lock (another merging: skip)."""
        from filelock import FileLock, Timeout
        from safetensors.torch import load_file

        try:
            with FileLock(str(self.folder / ".lock"), timeout=0):
                merged: dict[bytes, torch.Tensor] = {}
                done = []
                for path in self.shards():
                    if path.name in self.bad or path.is_symlink():
                        continue
                    try:
                        tensors = load_file(str(path))
                    except Exception:  # noqa: BLE001 (gone, or bad: left to the readers, who warn)
                        continue
                    if set(tensors) != {"keys", "features"} or not self.whole(tensors):
                        continue
                    merged.update(zip((bytes(k) for k in tensors["keys"].numpy()), tensors["features"]))
                    done.append(path)
                if merged:
                    self._save(merged)  # not indexed here: the next scan indexes it
                for path in done:
                    path.unlink(missing_ok=True)
                for tmp in self.folder.glob(".*.tmp"):  # left by a writer killed mid-write
                    if time.time() - tmp.stat().st_mtime > STALE_TMP_S:
                        tmp.unlink(missing_ok=True)
        except Timeout:
            return

    def whole(self, tensors: dict[str, torch.Tensor]) -> bool:
        """A loaded shard of this store: dtypes, shapes, matching lengths, finite values."""
        keys, feats = tensors["keys"], tensors["features"]
        return (keys.dtype == torch.uint8 and keys.ndim == 2 and keys.shape[1] == KEY_BYTES
                and feats.dtype == torch.float32 and feats.ndim == 2 and feats.shape[1] == self.dim
                and len(keys) == len(feats) and bool(torch.isfinite(feats).all()))
