"""Validation data is never test data: the server's validation split and each client's
train / validation / test split, by sample identity (every image is its own id)."""

import numpy as np
import pytest
import torch

from datasets.partition import client_split, partition_for, server_validation
from datasets.registry import ArrayDataset, DataBundle, fixed_split, register

N = 1200


@register("val-ids")
def _ids(root, download=False):
    """1,200 one-pixel images whose value is the sample's id; 3 domains; a fixed test split."""
    ids = np.arange(N)
    labels, domains = ids % 10, (ids // 10) % 3
    train, test = fixed_split(labels, 0.2)
    x = torch.from_numpy(ids).float().view(-1, 1, 1, 1)
    y = torch.from_numpy(labels)
    return DataBundle("val-ids", ArrayDataset(x[train], y[train]), ArrayDataset(x[test], y[test]), labels[train],
                      10, (1, 1, 1), (0.0,), (1.0,), train_domains=domains[train], domain_names=["a", "b", "c"])


def ids_of(data) -> set[int]:
    return set(data.x.flatten().long().tolist()) if data is not None else set()


@pytest.mark.parametrize("partitioner", ["iid", "dirichlet", "pathological", "draw", "domain"])
def test_validation_split_is_disjoint_from_test_and_every_clients_data(partitioner):
    from datasets import load_for
    from simulations import client_app
    from simulations.config import resolve
    from strategies.base import BaseStrategy

    n = 4 if partitioner == "domain" else 5  # domain: a multiple of the 2 source domains
    cfg = resolve({"dataset": "val-ids", "partitioner": partitioner, "seed": 3, "val-fraction": 0.15,
                   "local-val-fraction": 0.2, "heldout-domain": 1})
    bundle = load_for(cfg)
    val = ids_of(BaseStrategy(cfg, test_data=bundle).validation_set())
    test = ids_of(bundle.test)
    assert val and val.isdisjoint(test)
    pool = len(bundle.train_labels) - (int((bundle.train_domains == 1).sum()) if partitioner == "domain" else 0)
    assert abs(len(val) - 0.15 * pool) <= 10  # rounded per stratum
    key = tuple(cfg[k] for k in client_app.PARTITION_KEYS)
    for pid in range(n):
        data = client_app.client_data(key, pid, n)
        train, local_val, local_test = ids_of(data.train), ids_of(data.val), ids_of(data.test)
        assert train and local_val and local_test
        assert val.isdisjoint(train | local_val | local_test)  # the server's validation reaches no client
        assert train.isdisjoint(local_val) and train.isdisjoint(local_test) and local_val.isdisjoint(local_test)
        assert test.isdisjoint(train | local_val | local_test)
    if partitioner == "domain":  # source-domain validation: nothing of the held-out domain
        domain_of = {int(i): int(d) for i, d in zip(bundle.train.x.flatten(), bundle.train_domains)}
        assert {domain_of[i] for i in val} == {0, 2}


def test_validation_split_is_seeded_stratified_and_off_at_zero():
    from datasets import load_for
    from simulations.config import resolve

    bundle = load_for(resolve({"dataset": "val-ids"}))
    cfg = {"partitioner": "iid", "val-fraction": 0.1, "seed": 0}
    pool, val = server_validation(cfg, bundle)
    assert np.array_equal(val, server_validation(cfg, bundle)[1])
    assert not np.array_equal(val, server_validation({**cfg, "seed": 1}, bundle)[1])
    assert np.array_equal(np.sort(np.concatenate([pool, val])), np.arange(len(bundle.train_labels)))
    strata = bundle.train_domains * 10 + bundle.train_labels  # stratified by domain and label
    for s in np.unique(strata):
        assert (strata[val] == s).sum() == round(0.1 * (strata == s).sum())
    pool0, val0 = server_validation({**cfg, "val-fraction": 0.0}, bundle)
    assert len(val0) == 0 and len(pool0) == len(bundle.train_labels)
    # val-fraction=0 leaves the partitions exactly as without the split
    from datasets.partition import partition

    cfg0 = {**cfg, "val-fraction": 0.0, "partitioner": "dirichlet", "dirichlet-alpha": 0.5, "classes-per-client": 2}
    direct = partition("dirichlet", bundle.train_labels, 4, 0, alpha=0.5)
    assert all(np.array_equal(a, b) for a, b in zip(partition_for(cfg0, bundle, 4), direct))


def test_client_split_keeps_the_test_part_and_a_training_sample():
    from datasets.partition import train_test_split

    idx = np.arange(100, 200)
    train, val, test = client_split(idx, 0.2, 0.1, seed=5)
    assert (len(train), len(val), len(test)) == (70, 10, 20)
    assert np.array_equal(test, train_test_split(idx, 0.2, 5)[1])  # the local test split does not move
    assert np.array_equal(np.sort(np.concatenate([train, val, test])), idx)
    train, val, test = client_split(np.array([1, 2]), 0.2, 0.5, seed=0)
    assert len(train) == 1 and len(test) == 1 and len(val) == 0


def test_local_fractions_must_leave_training_data():
    from common.keys import ConfigError
    from simulations.config import resolve

    with pytest.raises(ConfigError, match="local-test-fraction \\+ local-val-fraction must be < 1"):
        resolve({"local-test-fraction": 0.5, "local-val-fraction": 0.5})
