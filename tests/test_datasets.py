"""Dataset registry: offline sets load as real images; bad names/paths fail in one line."""

import time

import numpy as np
import pytest
import torch

from datasets import DataError, load_dataset
from datasets.registry import ArrayDataset, fixed_split
from tests.conftest import pacs_tree


def test_mnist_is_the_real_offline_subset():
    b = load_dataset("mnist")
    assert (len(b.train), len(b.test)) == (4000, 1000)
    assert b.input_shape == (1, 28, 28) and b.num_classes == 10
    assert np.bincount(b.train_labels).tolist() == [400] * 10
    x, y = b.test[:8]
    assert x.dtype == torch.float32 and x.shape == (8, 1, 28, 28)
    # Normalized with MNIST's statistics: the pool is roughly zero-mean, unit-std.
    xs = b.train[:2000][0]
    assert abs(xs.mean().item()) < 0.2 and 0.8 < xs.std().item() < 1.3


def test_digits_are_upscaled_to_mnist_size():
    b = load_dataset("digits")
    assert b.input_shape == (1, 28, 28) and len(b.train) + len(b.test) == 1797


def test_fashion_mnist_from_debian_package():
    b = load_dataset("fashion-mnist")
    assert (len(b.train), len(b.test)) == (60000, 10000)
    assert b.num_classes == 10


def test_fixed_split_is_stratified_and_stable():
    labels = np.repeat(np.arange(4), 50)
    tr, te = fixed_split(labels)
    tr2, te2 = fixed_split(labels)
    assert np.array_equal(te, te2) and len(te) == 40
    assert np.bincount(labels[te]).tolist() == [10] * 4


def test_array_dataset_subset_and_lengths():
    d = ArrayDataset(torch.zeros(10, 28, 28, dtype=torch.uint8), torch.arange(10))
    s = d.subset([1, 3])
    assert len(s) == 2 and s[:][1].tolist() == [1, 3]
    with pytest.raises(DataError):
        ArrayDataset(torch.zeros(3, 2, 2), torch.zeros(2))


@pytest.mark.parametrize(
    "name, expected",
    [
        ("imagenet-22k", "unknown dataset 'imagenet-22k': pass one of"),
        ("pacs", "data-root="),
        ("tinyimagenet", "data-root="),
        ("cifar10", "data-root="),
    ],
)
def test_missing_or_unknown_data_fails_fast_with_one_line(tmp_path, name, expected):
    t0 = time.perf_counter()
    with pytest.raises(DataError, match=expected) as err:
        load_dataset(name, str(tmp_path / "empty"))
    assert "\n" not in str(err.value)
    assert time.perf_counter() - t0 < 2


def test_corrupt_fashion_files_fail_clearly(tmp_path):
    raw = tmp_path / "FashionMNIST" / "raw"
    raw.mkdir(parents=True)
    for f in ["train-images-idx3-ubyte", "train-labels-idx1-ubyte", "t10k-images-idx3-ubyte",
              "t10k-labels-idx1-ubyte"]:
        (raw / f).write_bytes(b"not an idx file")
    with pytest.raises(DataError, match="unreadable"):
        load_dataset("fashion-mnist", str(tmp_path))


def test_image_folder_multi_domain_layout(tmp_path):
    pacs_tree(tmp_path, per_class=5, side=20, ext="jpg")
    b = load_dataset("pacs", str(tmp_path))
    assert b.domain_names == ["art", "photo"] and b.num_classes == 2
    assert len(b.train) + len(b.test) == 20
    assert set(b.train_domains.tolist()) == {0, 1}
    x, y = b.train[0]
    assert x.shape == (3, 64, 64)
    assert load_dataset("pacs", str(tmp_path), image_size=32).train[0][0].shape == (3, 32, 32)


def write_images(folder, classes, per_class, size=16):
    """``folder/<class>/<i>.png``: class k is a stripe pattern of period k + 2 (vertical for even
    k, horizontal for odd) in random colours with noise: easy to learn for any model."""
    from PIL import Image

    rng = np.random.default_rng(0)
    grid = np.arange(size)
    for c_id, c in enumerate(classes):
        (folder / c).mkdir(parents=True, exist_ok=True)
        stripes = (grid // (c_id // 2 + 2)) % 2
        mask = np.tile(stripes, (size, 1)) if c_id % 2 == 0 else np.tile(stripes[:, None], (1, size))
        for i in range(per_class):
            fg, bg = rng.integers(128, 256, 3), rng.integers(0, 96, 3)
            img = np.where(mask[..., None] == 1, fg, bg) + rng.integers(0, 30, (size, size, 3))
            Image.fromarray(img.clip(0, 255).astype(np.uint8)).save(folder / c / f"{i}.png")


def test_image_folder_reads_any_class_tree_with_optional_test_split(tmp_path):
    from datasets.registry import _load

    write_images(tmp_path, ["cat", "dog", "eel"], 5)
    b = load_dataset("image-folder", str(tmp_path), image_size=16)
    assert b.num_classes == 3 and len(b.train) + len(b.test) == 15 and len(b.test) == 3  # fixed 20%
    assert b.train[0][0].shape == (3, 16, 16) and b.input_shape == (3, 16, 16)
    assert load_dataset("image-folder", str(tmp_path), image_size=24).train[0][0].shape == (3, 24, 24)
    write_images(tmp_path / "test", ["dog", "cat"], 2)  # a class may be missing from test/
    _load.cache_clear()
    b = load_dataset("image-folder", str(tmp_path), image_size=16)
    assert len(b.train) == 15 and len(b.test) == 4 and b.num_classes == 3
    assert sorted(int(b.test[i][1]) for i in range(4)) == [0, 0, 1, 1]  # cat=0, dog=1 as in training
    write_images(tmp_path / "test", ["fox"], 1)
    _load.cache_clear()
    with pytest.raises(DataError, match="classes \\['fox'\\] that the training folders lack"):
        load_dataset("image-folder", str(tmp_path))
    with pytest.raises(DataError, match="pass data-root=<folder holding <class>/<image>>"):
        load_dataset("image-folder", str(tmp_path / "nowhere"))
