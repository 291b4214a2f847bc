"""Frozen-backbone features on disk, shared by the processes of a sweep (``feature-cache``).

A store is one folder per backbone identity (``FeatureExtractor.fingerprint``: its weights,
input size, layer, buffer, device type, torch and timm versions), holding safetensors
shards of two tensors: ``keys`` (uint8 [n, 16], the extractor's per-sample blake2b digests
of pixels and dataset norm) and ``features`` (float32 [n, d]). Why shards and not one file
rewritten per write: a write then costs its new entries only, and writers never lose each
other's entries. A writer saves a temp file in the folder and renames it to a fresh name
(``os.replace``: a reader sees a whole file or none). Past ``MAX_SHARDS`` shards a writer
that gets the folder's lock merges them into one. A file that is not such a shard (corrupt,
wrong dtype, shape or width, a link) is skipped with one warning line: never unpickled,
never trusted.
"""

from __future__ import annotations

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


class FeatureStore:
    """``folder``'s shards of ``dim``-wide features: ``read_new`` what others wrote, ``write`` ours."""

    MAX_SHARDS = 32

    def __init__(self, folder: Path, dim: int):
        self.folder, self.dim = Path(folder), int(dim)
        self.seen: set[str] = set()  # shards read (or skipped) by this process
        self.bad: set[str] = set()

    def shards(self) -> list[Path]:
        try:
            if self.folder.is_symlink():
                return []
            return sorted(p for p in self.folder.iterdir() if p.name.endswith(SUFFIX) and not p.name.startswith("."))
        except OSError:  # not there (yet), or not readable
            return []

    def read_new(self) -> dict[bytes, torch.Tensor]:
        """Entries of the shards this process has not read yet (another process's writes)."""
        found: dict[bytes, torch.Tensor] = {}
        for path in self.shards():
            if path.name not in self.seen:
                self.seen.add(path.name)
                found.update(self.read(path))
        return found

    def read(self, path: Path, warn: bool = True) -> dict[bytes, torch.Tensor]:
        """One shard's entries, checked; {} (one warning) for a file that is not a valid shard."""
        from safetensors.torch import load_file

        try:
            if path.is_symlink():
                raise ValueError("a symbolic link")
            tensors = load_file(str(path))
            problem = self.problem(tensors)
        except FileNotFoundError:  # merged away meanwhile: its entries are in the merged shard
            return {}
        except Exception as err:  # a truncated or foreign file: any error of the reader
            problem = f"unreadable ({type(err).__name__}: {err})"
        if problem:
            self.bad.add(path.name)
            if warn:
                LOG.warning("feature cache: ignored %s: %s; its features are computed again", path, problem)
            return {}
        keys = tensors["keys"].numpy()
        return {bytes(k): f for k, f in zip(keys, tensors["features"])}

    def problem(self, tensors: dict[str, torch.Tensor]) -> str:
        """What makes ``tensors`` no shard of this store ("" for a valid one)."""
        if set(tensors) != {"keys", "features"}:
            return f"tensors {sorted(tensors)}, expected ['features', 'keys']"
        keys, feats = tensors["keys"], tensors["features"]
        if keys.dtype != torch.uint8 or keys.ndim != 2 or keys.shape[1] != KEY_BYTES:
            return f"keys {keys.dtype} {tuple(keys.shape)}, expected uint8 (n, {KEY_BYTES})"
        if feats.dtype != torch.float32 or feats.ndim != 2 or feats.shape[1] != self.dim:
            return f"features {feats.dtype} {tuple(feats.shape)}, expected float32 (n, {self.dim})"
        if len(keys) != len(feats):
            return f"{len(keys)} keys for {len(feats)} feature rows"
        if not torch.isfinite(feats).all():
            return "non-finite features"
        return ""

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
            self.seen.add(self._save(entries))
            if len(self.shards()) - len(self.bad) > self.MAX_SHARDS:
                self.merge()
        except OSError as err:  # a full or read-only disk: the run goes on, its features stay in memory
            LOG.warning("feature cache: could not write to %s (%s)", self.folder, err)

    def _save(self, entries: dict[bytes, torch.Tensor]) -> str:
        from safetensors.torch import save_file

        keys = torch.frombuffer(bytearray(b"".join(entries)), dtype=torch.uint8).view(-1, KEY_BYTES)
        feats = torch.stack([f.to(torch.float32) for f in entries.values()]).contiguous()
        fd, tmp = tempfile.mkstemp(dir=self.folder, prefix=".", suffix=".tmp")
        os.close(fd)
        try:
            save_file({"keys": keys, "features": feats}, tmp)
            name = uuid4().hex + SUFFIX
            os.replace(tmp, self.folder / name)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise
        return name

    def merge(self) -> None:
        """Merge the valid shards into one, under the folder's lock (another merging: skip)."""
        from filelock import FileLock, Timeout

        try:
            with FileLock(str(self.folder / ".lock"), timeout=0):
                paths = [p for p in self.shards() if p.name not in self.bad]
                merged: dict[bytes, torch.Tensor] = {}
                for path in paths:
                    merged.update(self.read(path, warn=False))
                if merged:
                    self._save(merged)  # not marked seen: it may hold entries this process has not read
                for path in paths:
                    if path.name not in self.bad:
                        path.unlink(missing_ok=True)
                for tmp in self.folder.glob(".*.tmp"):  # left by a writer killed mid-write
                    if time.time() - tmp.stat().st_mtime > STALE_TMP_S:
                        tmp.unlink(missing_ok=True)
        except Timeout:
            return
