"""CIFAR-10/100 through torchvision, for users who have the files (or a network).

Looks for torchvision's layout under ``data-root`` (``cifar-10-batches-py``,
``cifar-100-python``); with ``download=true`` in the run config torchvision fetches it.
Images are kept as uint8 tensors and normalized per batch (no augmentation).
"""

from __future__ import annotations

from pathlib import Path

from .offline import tensor_bundle
from .registry import DataBundle, DataError, register

CIFAR10_MEAN, CIFAR10_STD = (0.4914, 0.4822, 0.4465), (0.2470, 0.2435, 0.2616)
CIFAR100_MEAN, CIFAR100_STD = (0.5071, 0.4865, 0.4409), (0.2673, 0.2564, 0.2762)


def _cifar(cls, name: str, root: Path, download: bool, mean, std) -> DataBundle:
    try:
        train = cls(str(root), train=True, download=download)
        test = cls(str(root), train=False, download=download)
    except Exception as err:
        raise DataError(
            f"{name} not found under {root}: pass data-root=<folder holding "
            f"torchvision's {name} files> or download=true where the network is "
            f"reachable ({type(err).__name__})"
        ) from err
    return tensor_bundle(
        name,
        train.data.transpose(0, 3, 1, 2),
        train.targets,
        mean,
        std,
        test=(test.data.transpose(0, 3, 1, 2), test.targets),
    )


@register("cifar10")
def load_cifar10(root: Path, download: bool) -> DataBundle:
    from torchvision.datasets import CIFAR10

    return _cifar(CIFAR10, "cifar10", root, download, CIFAR10_MEAN, CIFAR10_STD)


@register("cifar100")
def load_cifar100(root: Path, download: bool) -> DataBundle:
    from torchvision.datasets import CIFAR100

    return _cifar(CIFAR100, "cifar100", root, download, CIFAR100_MEAN, CIFAR100_STD)
