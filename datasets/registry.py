"""Dataset registry: ``name -> loader(root, download[, image_size]) -> DataBundle``.

A loader only loads (it never trains and never partitions). Every bundle has a pool
of training samples that the partitioner splits among clients and a global test set
that only the server evaluates on. Loaders for data that must be fetched by the user
fail at once with one line that says what to pass (``DataError``). A loader that
resizes its images takes the keyword ``image_size`` (the ``image-size`` key).
"""

from __future__ import annotations

import functools
import inspect
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np
import torch
from torch.utils.data import Dataset


class DataError(RuntimeError):
    """Unknown dataset, missing files or corrupt data: one clear line for the user."""


class ArrayDataset(Dataset):
    """Images and labels held as tensors: batches are sliced, not collated per item.

    Images are kept as uint8 (4x less memory per client process than float) and
    normalized with ``mean``/``std`` on access; float images are returned as they are.
    """

    def __init__(self, x: torch.Tensor, y: torch.Tensor, mean=(0.0,), std=(1.0,)):
        if len(x) != len(y):
            raise DataError(f"{len(x)} images but {len(y)} labels")
        self.x, self.y = (x.unsqueeze(1) if x.ndim == 3 else x), y
        self.mean = torch.tensor(mean, dtype=torch.float32).view(-1, 1, 1)
        self.std = torch.tensor(std, dtype=torch.float32).view(-1, 1, 1)

    def __len__(self) -> int:
        return len(self.y)

    def __getitem__(self, i):
        x = self.x[i]
        if x.dtype == torch.uint8:
            x = (x.float() / 255.0 - self.mean) / self.std
        return x, self.y[i]

    def subset(self, idx) -> "ArrayDataset":
        idx = torch.as_tensor(np.asarray(idx), dtype=torch.long)
        out = ArrayDataset.__new__(ArrayDataset)
        out.x, out.y, out.mean, out.std = self.x[idx], self.y[idx], self.mean, self.std
        return out


@dataclass
class DataBundle:
    """What a loader returns; ``train`` is partitioned, ``test`` stays on the server."""

    name: str
    train: Dataset
    test: Dataset
    train_labels: np.ndarray
    num_classes: int
    input_shape: tuple[int, int, int]
    mean: tuple[float, ...]
    std: tuple[float, ...]
    # Optional per-sample domain ids of the training pool (multi-domain sets).
    train_domains: np.ndarray | None = None
    domain_names: list[str] = field(default_factory=list)


Loader = Callable[[Path, bool], DataBundle]
DATASETS: dict[str, Loader] = {}


def register(name: str) -> Callable[[Loader], Loader]:
    """Decorator adding a loader to the registry under ``name``."""

    def wrap(fn: Loader) -> Loader:
        DATASETS[name] = fn
        return fn

    return wrap


def resolve_root(data_root: str) -> Path:
    """``data-root`` with ``~`` expanded; empty means ``~/.cache/flwr-data``."""
    return Path(data_root or "~/.cache/flwr-data").expanduser().resolve()


def load_dataset(name: str, data_root: str = "", download: bool = False, image_size: int = 64) -> DataBundle:
    """Load (once per process) the dataset ``name``; ``download`` only where allowed."""
    if name not in DATASETS:
        raise DataError(f"unknown dataset '{name}': pass one of {sorted(DATASETS)}")
    return _load(name, str(resolve_root(data_root)), bool(download), int(image_size))


def load_for(cfg: dict) -> DataBundle:
    """The dataset a run config names (keys ``dataset``, ``data-root``, ``download``, ``image-size``)."""
    return load_dataset(cfg["dataset"], cfg["data-root"], cfg["download"], cfg.get("image-size", 64))


@functools.lru_cache(maxsize=4)
def _load(name: str, root: str, download: bool, image_size: int) -> DataBundle:
    loader = DATASETS[name]
    sized = "image_size" in inspect.signature(loader).parameters
    return loader(Path(root), download, **({"image_size": image_size} if sized else {}))


def fixed_split(labels: np.ndarray, test_fraction: float = 0.2):
    """Stratified train/test split with a constant seed.

    For sources without an official test split. The seed is fixed on purpose: every
    run and every sweep seed is scored on the same global test set.
    """
    rng = np.random.default_rng(0)
    train, test = [], []
    for c in np.unique(labels):
        idx = rng.permutation(np.flatnonzero(labels == c))
        n_test = int(round(len(idx) * test_fraction))
        test.append(idx[:n_test])
        train.append(idx[n_test:])
    return np.sort(np.concatenate(train)), np.sort(np.concatenate(test))
