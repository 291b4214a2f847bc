"""Partitioners: sizes, disjointness, seed determinism, skew vs alpha, errors."""

import numpy as np
import pytest

from datasets.partition import PartitionError, dirichlet, iid, partition, pathological, train_test_split

LABELS = np.repeat(np.arange(10), 100)  # 1000 samples, 10 balanced classes


def _check_exact_cover(parts, n):
    joined = np.concatenate(parts)
    assert len(joined) == n and len(np.unique(joined)) == n  # disjoint and complete


@pytest.mark.parametrize("name", ["iid", "dirichlet", "pathological"])
def test_partitions_cover_all_samples_disjointly(name):
    parts = partition(name, LABELS, 7, seed=3, alpha=0.5, **{"classes-per-client": 3})
    assert len(parts) == 7
    _check_exact_cover(parts, len(LABELS))


@pytest.mark.parametrize("name", ["iid", "dirichlet", "pathological"])
def test_same_seed_same_partition_other_seed_differs(name):
    a = partition(name, LABELS, 5, seed=1)
    b = partition(name, LABELS, 5, seed=1)
    c = partition(name, LABELS, 5, seed=2)
    assert all(np.array_equal(x, y) for x, y in zip(a, b))
    assert not all(np.array_equal(x, y) for x, y in zip(a, c))


def test_iid_sizes_are_balanced():
    sizes = [len(p) for p in iid(LABELS, 7, seed=0)]
    assert max(sizes) - min(sizes) <= 1


def _mean_label_entropy(parts):
    ent = []
    for p in parts:
        freq = np.bincount(LABELS[p], minlength=10) / len(p)
        freq = freq[freq > 0]
        ent.append(-(freq * np.log(freq)).sum())
    return float(np.mean(ent))


def test_dirichlet_skew_grows_as_alpha_shrinks():
    ent = [np.mean([_mean_label_entropy(dirichlet(LABELS, 10, s, alpha=a)) for s in range(5)])
           for a in (100.0, 1.0, 0.1)]
    assert ent[0] > ent[1] > ent[2]
    assert ent[0] > 0.95 * np.log(10)  # near-uniform labels at large alpha


def test_dirichlet_respects_min_partition_size():
    parts = dirichlet(LABELS, 20, seed=0, alpha=0.1, min_partition_size=10)
    assert min(len(p) for p in parts) >= 10


def test_dirichlet_impossible_request_fails_clearly():
    with pytest.raises(PartitionError, match="raise alpha"):
        dirichlet(LABELS, 90, seed=0, alpha=0.01, min_partition_size=11, max_tries=5)


def test_pathological_gives_exactly_k_classes_per_client():
    for k in (1, 2, 3):
        parts = pathological(LABELS, 10, seed=0, classes_per_client=k)
        assert all(len(np.unique(LABELS[p])) == k for p in parts)
        _check_exact_cover(parts, len(LABELS))


@pytest.mark.parametrize(
    "call, message",
    [
        (lambda: partition("nope", LABELS, 3, 0), "unknown partitioner 'nope'"),
        (lambda: partition("dirichlet", LABELS, 3, 0, alpha=0.0), "alpha must be > 0"),
        (lambda: partition("iid", LABELS, 2000, 0), "2000 partitions but only 1000 samples"),
        (lambda: partition("pathological", LABELS, 3, 0, **{"classes-per-client": 11}), "classes-per-client"),
    ],
)
def test_bad_requests_raise_one_clear_error(call, message):
    with pytest.raises(PartitionError, match=message):
        call()


def test_local_train_test_split_is_disjoint_and_sized():
    idx = np.arange(100, 200)
    train, test = train_test_split(idx, 0.2, seed=0)
    assert len(test) == 20 and len(train) == 80
    assert set(train).isdisjoint(test) and set(train) | set(test) == set(idx)
    one_train, one_test = train_test_split(np.array([5]), 0.2, seed=0)
    assert list(one_train) == [5] and len(one_test) == 0


# ---- cross-device: partitioner=draw --------------------------------------------------------
def test_draw_builds_more_clients_than_samples_each_a_seeded_draw():
    parts = partition("draw", LABELS, 1_000_000, seed=3, **{"samples-per-client": 12})
    assert len(parts) == 1_000_000  # 1000x the pool: clients overlap
    for p in (0, 999_999, 123_456):
        idx = parts[p]
        assert len(idx) == 12 and len(np.unique(idx)) == 12 and 0 <= idx.min() and idx.max() < len(LABELS)
    # client p's draw depends on (seed, p) only: not on the population, not on which clients were drawn before
    again = partition("draw", LABELS, 10, seed=3, **{"samples-per-client": 12})
    assert np.array_equal(again[7], parts[7])
    assert not np.array_equal(partition("draw", LABELS, 10, seed=4, **{"samples-per-client": 12})[7], parts[7])
    with pytest.raises(IndexError):
        parts[1_000_000]


def test_draw_is_near_uniform_over_the_pool_and_overlaps():
    parts = partition("draw", LABELS, 500, seed=0, **{"samples-per-client": 20})
    counts = np.bincount(np.concatenate([parts[p] for p in range(500)]), minlength=len(LABELS))
    assert counts.sum() == 10_000 and counts.max() > 1  # 10 draws per sample on average: overlap
    assert abs(counts.mean() - 10) < 1e-9 and counts.std() < 5  # binomial(500, 0.02): std ~3.1
    assert _mean_label_entropy([parts[p] for p in range(50)]) > 0.7 * np.log(10)  # labels are not skewed


@pytest.mark.parametrize("k", [1, 1001])
def test_draw_bad_sample_count_fails_clearly(k):
    with pytest.raises(PartitionError, match=r"samples-per-client must be in \[2, 1000\]"):
        partition("draw", LABELS, 5, 0, **{"samples-per-client": k})
