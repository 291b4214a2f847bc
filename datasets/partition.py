"""Seeded partitioners: split sample indices among clients by label.

Pure functions of (labels, num_partitions, seed, ...) -> a sequence of index arrays, so that
every method and every sweep run sees exactly the same partitions for the same seed.

We do not use flwr-datasets: it depends on Hugging Face ``datasets``, whose top-level
module ``datasets`` has the name of this project's package.
"""

from __future__ import annotations

from typing import Callable

import numpy as np

Partition = list[np.ndarray]


class PartitionError(ValueError):
    """A partition request that cannot be met (too many clients, bad alpha, ...)."""


def _check(labels: np.ndarray, num_partitions: int) -> None:
    if num_partitions < 1:
        raise PartitionError(f"num-partitions must be >= 1, got {num_partitions}")
    if num_partitions > len(labels):
        raise PartitionError(
            f"{num_partitions} partitions but only {len(labels)} samples: "
            "use fewer supernodes or a larger dataset"
        )


def iid(labels: np.ndarray, num_partitions: int, seed: int) -> Partition:
    """Shuffle and cut into (almost) equal parts."""
    _check(labels, num_partitions)
    order = np.random.default_rng(seed).permutation(len(labels))
    return [np.sort(part) for part in np.array_split(order, num_partitions)]


def dirichlet(
    labels: np.ndarray,
    num_partitions: int,
    seed: int,
    alpha: float = 0.5,
    min_partition_size: int = 10,
    max_tries: int = 100,
) -> Partition:
    """Label-skewed split: each class is divided among clients by p ~ Dir(alpha).

    Redraws until every client holds at least ``min_partition_size`` samples (the
    usual rule of Hsu et al. 2019 / PFLlib); a request that cannot be met after
    ``max_tries`` draws fails with a clear error instead of looping forever.
    """
    _check(labels, num_partitions)
    if not alpha > 0:
        raise PartitionError(f"alpha must be > 0, got {alpha}")
    min_size = min(min_partition_size, len(labels) // num_partitions)
    rng = np.random.default_rng(seed)
    classes = np.unique(labels)
    for _ in range(max_tries):
        parts: list[list[int]] = [[] for _ in range(num_partitions)]
        for c in classes:
            idx = rng.permutation(np.flatnonzero(labels == c))
            p = rng.dirichlet(np.full(num_partitions, alpha))
            cuts = (np.cumsum(p)[:-1] * len(idx)).astype(int)
            for k, chunk in enumerate(np.split(idx, cuts)):
                parts[k].extend(chunk.tolist())
        if min(len(p) for p in parts) >= min_size:
            return [np.sort(np.asarray(p, dtype=np.int64)) for p in parts]
    raise PartitionError(
        f"dirichlet(alpha={alpha}) could not give each of {num_partitions} clients "
        f"{min_size} samples in {max_tries} draws: raise alpha or use fewer clients"
    )


def pathological(
    labels: np.ndarray, num_partitions: int, seed: int, classes_per_client: int = 2
) -> Partition:
    """Each client holds ``classes_per_client`` classes (McMahan et al.'s shards).

    Class c is assigned to clients round-robin over a seeded class order, so that every
    class is used and every client gets exactly k distinct classes; the samples of each
    class are split evenly among the clients that hold it.
    """
    _check(labels, num_partitions)
    classes = np.unique(labels)
    k = classes_per_client
    if not 1 <= k <= len(classes):
        raise PartitionError(
            f"classes-per-client must be in [1, {len(classes)}], got {k}"
        )
    rng = np.random.default_rng(seed)
    # Client i takes classes (i*k + j) mod C of a seeded class order, j < k: distinct
    # per client (k <= C) and every class covered once num_partitions * k >= C.
    order = rng.permutation(classes)
    owners: dict[int, list[int]] = {int(c): [] for c in classes}
    for client in range(num_partitions):
        for j in range(k):
            owners[int(order[(client * k + j) % len(classes)])].append(client)
    parts: list[list[int]] = [[] for _ in range(num_partitions)]
    for c, holders in owners.items():
        idx = rng.permutation(np.flatnonzero(labels == c))
        if not holders:
            continue
        for client, chunk in zip(holders, np.array_split(idx, len(holders))):
            parts[client].extend(chunk.tolist())
    empty = [i for i, p in enumerate(parts) if not p]
    if empty:
        raise PartitionError(f"pathological split left clients {empty} empty")
    return [np.sort(np.asarray(p, dtype=np.int64)) for p in parts]


def domain(
    labels: np.ndarray, num_partitions: int, seed: int, domains: np.ndarray | None, heldout_domain: int = 0
) -> Partition:
    """Domain generalization: each client holds one source domain; ``heldout_domain`` none.

    With K source domains (all domain ids but the held-out one, in increasing order),
    ``num_partitions`` must be a multiple m*K: partition p holds part p // K (of m seeded,
    near-equal parts) of source domain number p % K. With m = 1, partition p is the p-th
    source domain. The held-out domain's samples are in no partition.
    """
    _check(labels, num_partitions)
    if domains is None:
        raise PartitionError("partitioner=domain needs a multi-domain dataset (rotated-mnist, pacs, officehome, domainnet)")
    domains = np.asarray(domains)
    ids = np.unique(domains)
    if heldout_domain not in ids:
        raise PartitionError(f"heldout-domain must be one of the domain ids {ids.tolist()}, got {heldout_domain}")
    sources = [int(d) for d in ids if d != heldout_domain]
    if not sources or num_partitions % len(sources):
        raise PartitionError(
            f"partitioner=domain: {len(sources)} source domains, so num-supernodes must be a multiple of "
            f"{len(sources)}, got {num_partitions}"
        )
    per_domain = num_partitions // len(sources)
    rng = np.random.default_rng(seed)
    chunks = {d: np.array_split(rng.permutation(np.flatnonzero(domains == d)), per_domain) for d in sources}
    return [np.sort(chunks[sources[p % len(sources)]][p // len(sources)]) for p in range(num_partitions)]


class Draws:
    """Cross-device clients: client ``p`` holds ``samples_per_client`` indices drawn
    without replacement from the whole pool by ``default_rng([seed, p])``.

    Clients may share samples (each is an independent draw), so any number of clients
    can be built from a small pool. A sequence like the other partitioners' lists, but
    a client's indices are drawn when asked for: memory and time do not grow with the
    number of clients.
    """

    def __init__(self, pool_size: int, num_partitions: int, seed: int, samples_per_client: int):
        if num_partitions < 1:
            raise PartitionError(f"num-partitions must be >= 1, got {num_partitions}")
        if not 2 <= samples_per_client <= pool_size:
            raise PartitionError(f"samples-per-client must be in [2, {pool_size}] (the pool), got {samples_per_client}")
        self.pool_size, self.n, self.seed, self.k = pool_size, num_partitions, seed, samples_per_client

    def __len__(self) -> int:
        return self.n

    def __getitem__(self, p: int) -> np.ndarray:
        if not 0 <= p < self.n:
            raise IndexError(f"partition {p} of {self.n}")
        rng = np.random.default_rng([self.seed, p])
        return np.sort(rng.choice(self.pool_size, self.k, replace=False)).astype(np.int64)


def draw(labels: np.ndarray, num_partitions: int, seed: int, samples_per_client: int = 20) -> Draws:
    """Cross-device partitions (``Draws``): overlapping seeded draws from the pool."""
    return Draws(len(labels), num_partitions, seed, samples_per_client)


# name -> adapter taking the run's partition options; a new partitioner is one line here.
PARTITIONERS: dict[str, Callable[..., Partition]] = {
    "iid": lambda labels, n, seed, opts: iid(labels, n, seed),
    "dirichlet": lambda labels, n, seed, opts: dirichlet(
        labels, n, seed, alpha=opts["alpha"]
    ),
    "pathological": lambda labels, n, seed, opts: pathological(
        labels, n, seed, classes_per_client=opts["classes-per-client"]
    ),
    "domain": lambda labels, n, seed, opts: domain(
        labels, n, seed, opts["domains"], int(opts["heldout-domain"])
    ),
    "draw": lambda labels, n, seed, opts: draw(labels, n, seed, int(opts["samples-per-client"])),
}


def partition(
    name: str, labels: np.ndarray, num_partitions: int, seed: int, **opts
) -> Partition:
    """Split ``labels``' indices with the partitioner ``name``.

    ``opts`` holds ``alpha`` (key ``dirichlet-alpha``) and run-config keys (``classes-per-client``,
    ``heldout-domain``, ``samples-per-client``) by their names, and ``domains`` (per-sample domain ids or None).
    """
    if name not in PARTITIONERS:
        raise PartitionError(
            f"unknown partitioner '{name}': pass one of {sorted(PARTITIONERS)}"
        )
    opts = {"alpha": 0.5, "classes-per-client": 2, "heldout-domain": 0, "domains": None,
            "samples-per-client": 20, **opts}
    return PARTITIONERS[name](np.asarray(labels), num_partitions, seed, opts)


def train_test_split(indices: np.ndarray, test_fraction: float, seed: int):
    """Split one client's indices into a local train and a local test part."""
    rng = np.random.default_rng(seed)
    order = rng.permutation(indices)
    n_test = int(round(len(order) * test_fraction))
    if len(order) > 1:
        n_test = min(max(n_test, 1), len(order) - 1) if test_fraction > 0 else 0
    return np.sort(order[n_test:]), np.sort(order[:n_test])


def client_split(indices: np.ndarray, test_fraction: float, val_fraction: float, seed: int):
    """(train, validation, test) indices of one client's partition.

    The test part is ``train_test_split``'s (the same samples whatever ``val_fraction``);
    the validation part, ``val_fraction`` of the partition, is then carved from the rest
    with its own seeded draw, leaving at least one training sample."""
    rest, test = train_test_split(indices, test_fraction, seed)
    n_val = min(int(round(len(indices) * val_fraction)), len(rest) - 1) if len(rest) > 1 else 0
    order = np.random.default_rng([seed, 1]).permutation(rest)
    return np.sort(order[n_val:]), np.sort(order[:n_val]), test


def validation_split(labels: np.ndarray, fraction: float, seed: int, strata: np.ndarray | None = None,
                     exclude: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    """(pool, validation) indices of a training pool: ``fraction`` of every stratum (the
    label, or ``strata`` such as domain x label) is held out by a draw seeded with ``seed``.
    ``exclude`` (a boolean mask) marks samples that stay out of the validation split.
    ``fraction=0`` gives the whole pool and no validation sample."""
    n = len(labels)
    if fraction <= 0:
        return np.arange(n, dtype=np.int64), np.zeros(0, dtype=np.int64)
    strata = np.asarray(labels if strata is None else strata)
    eligible = np.ones(n, dtype=bool) if exclude is None else ~np.asarray(exclude, dtype=bool)
    rng = np.random.default_rng([int(seed), 0x5EED])
    val = [rng.permutation(np.flatnonzero(eligible & (strata == s))) for s in np.unique(strata[eligible])]
    val = np.sort(np.concatenate([v[:int(round(len(v) * fraction))] for v in val] or [np.zeros(0, np.int64)]))
    return np.setdiff1d(np.arange(n, dtype=np.int64), val), val.astype(np.int64)


def server_validation(cfg: dict, bundle) -> tuple[np.ndarray, np.ndarray]:
    """(pool, validation) indices of ``bundle``'s training pool for a run config: the
    ``val-fraction`` split, stratified by label (by domain and label on multi-domain sets).
    With ``partitioner=domain`` the held-out domain gives no validation sample: the
    validation split is source-domain data."""
    labels, domains = np.asarray(bundle.train_labels), bundle.train_domains
    strata = exclude = None
    if domains is not None:
        domains = np.asarray(domains)
        strata = domains * (int(labels.max(initial=0)) + 1) + labels
        if cfg["partitioner"] == "domain":
            exclude = domains == int(cfg.get("heldout-domain", 0))
    return validation_split(labels, float(cfg.get("val-fraction", 0.0)), int(cfg["seed"]), strata, exclude)


class OnPool:
    """Partitions computed over a sub-pool, given as indices of the whole pool (lazy, so
    that ``Draws`` stays lazy)."""

    def __init__(self, parts, pool: np.ndarray):
        self.parts, self.pool = parts, pool

    def __len__(self) -> int:
        return len(self.parts)

    def __getitem__(self, p: int) -> np.ndarray:
        return self.pool[self.parts[p]]


def partition_for(cfg: dict, bundle, num_partitions: int) -> Partition:
    """The partitions a run config asks for, over ``bundle``'s training pool less the
    server's validation split (``server_validation``): indices of the whole pool."""
    pool, val = server_validation(cfg, bundle)
    labels, domains = np.asarray(bundle.train_labels), bundle.train_domains
    parts = partition(
        cfg["partitioner"], labels[pool], num_partitions, int(cfg["seed"]),
        alpha=cfg["dirichlet-alpha"], domains=None if domains is None else np.asarray(domains)[pool],
        **{"classes-per-client": cfg["classes-per-client"], "heldout-domain": cfg.get("heldout-domain", 0),
           "samples-per-client": cfg.get("samples-per-client", 20)},
    )
    if not len(val):
        return parts
    return [pool[p] for p in parts] if isinstance(parts, list) else OnPool(parts, pool)
