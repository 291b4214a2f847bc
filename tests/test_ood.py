"""The OOD evaluation suite: AUROC/FPR95 on hand-made scores, corrupted test sets,
OOD sets, and the generic hook that gives every method the metrics."""

import imagecorruptions  # noqa: F401  (a dependency in pyproject.toml: fail, don't skip, without it)
import numpy as np
import pytest
import torch

from datasets import load_dataset
from datasets.registry import ArrayDataset, DataBundle, DataError
from datasets.shift import (
    SYNTHETIC_OOD,
    constants_for,
    corrupt_images,
    corrupted_sets,
    corruption_names,
    id_subset,
    ood_set,
    synthetic_images,
)
from evaluation.ood import (
    auroc,
    due,
    energy,
    fpr95_foogd,
    fpr_at_tpr,
    msp,
    predict,
    shift_metrics,
)
from simulations.config import ConfigError, resolve


# ---- AUROC / FPR95 -------------------------------------------------------------
def test_perfect_separation():
    assert auroc([0.9, 0.8, 0.7], [0.1, 0.2]) == 1.0
    assert fpr_at_tpr([0.9, 0.8, 0.7], [0.1, 0.2]) == 0.0


def test_inverted_scores():
    assert auroc([0.1, 0.2], [0.9, 0.8, 0.7]) == 0.0
    assert fpr_at_tpr([0.1, 0.2], [0.9, 0.8, 0.7]) == 1.0


def test_all_tied_scores_are_chance_and_accept_every_ood_sample():
    assert auroc([0.5] * 4, [0.5] * 6) == pytest.approx(0.5)
    assert fpr_at_tpr([0.5] * 4, [0.5] * 6) == 1.0


def test_partial_ties_count_one_half():
    # pairs (id > ood): 0.2 -> 1 win; 0.4 -> 1 win + 1 tie; 0.6, 0.8 -> 3 wins each: 8.5 / 12
    assert auroc([0.2, 0.4, 0.6, 0.8], [0.1, 0.4, 0.5]) == pytest.approx(8.5 / 12)


def test_fpr95_threshold_and_ties_at_it():
    ids = np.arange(1, 21, dtype=float)  # accepting 95% (19 of 20) of ID needs t = 2
    assert fpr_at_tpr(ids, [0.0, 1.5, 2.0, 3.0, 25.0]) == pytest.approx(3 / 5)  # 2.0 (tied with t) accepted
    # ID tied at the threshold: accepting 95% forces accepting the whole tied block
    assert fpr_at_tpr([1.0] * 10 + [5.0] * 10, [1.0, 1.0, 0.0, 6.0]) == pytest.approx(3 / 4)


def test_agrees_with_scikit_learn_on_random_tied_scores():
    from sklearn.metrics import roc_auc_score, roc_curve

    rng = np.random.default_rng(0)
    ids, ood = rng.normal(1, 1, 300).round(1), rng.normal(0, 1, 200).round(1)
    y = np.r_[np.ones(300), np.zeros(200)]
    s = np.r_[ids, ood]
    assert auroc(ids, ood) == pytest.approx(roc_auc_score(y, s))
    fpr, tpr, _ = roc_curve(y, s, drop_intermediate=False)
    assert fpr_at_tpr(ids, ood) == pytest.approx(fpr[np.searchsorted(tpr, 0.95, side="left")])


def test_large_scores_are_not_squashed_into_ties():
    # torchmetrics would put these through a sigmoid: all 1.0 in float32
    assert auroc([200.0, 300.0], [100.0, 150.0]) == 1.0


def test_standard_fpr95_is_not_foogds_msp_number():
    ids = np.arange(100, dtype=float)
    ood = np.repeat(np.arange(50, dtype=float), 2)
    # standard: accept 95 ID (t = 5): OOD >= 5 is 90 of 100
    assert fpr_at_tpr(ids, ood) == pytest.approx(0.90)
    # FOOGD: accept <= 5 OOD (t = 48: 48, 48, 49, 49): ID < 48 rejected, 48 of 100
    assert fpr95_foogd(ids, ood) == pytest.approx(0.48)
    # 20 OOD scores: at most 1 accepted, the top one (t = 19); ID below 19 rejected: 19 of 100
    assert fpr95_foogd(ids, np.arange(20, dtype=float)) == pytest.approx(0.19)
    # under 20 OOD scores no OOD sample may be accepted: t = inf rejects every ID sample
    assert fpr95_foogd(ids, np.arange(10, dtype=float)) == 1.0


def test_scores():
    logits = torch.tensor([[10.0, 0.0], [0.0, 0.0]])
    assert msp(logits)[0] > msp(logits)[1] == pytest.approx(0.5)
    assert energy(logits)[1] == pytest.approx(np.log(2))


# ---- corruptions -----------------------------------------------------------------
@pytest.fixture(scope="module")
def digits28():
    x = load_dataset("mnist").test.x[:6]
    return x


def test_every_corruption_works_on_28x28_grayscale(digits28):
    for name in corruption_names("all"):
        out = corrupt_images(digits28[:2], name, 5, seed=0)
        assert out.shape == (2, 1, 28, 28) and out.dtype == torch.uint8, name
    assert len(corruption_names("all")) == 19 and len(corruption_names("common")) == 15


def test_corruption_is_seeded_and_changes_the_images(digits28):
    a = corrupt_images(digits28, "gaussian_noise", 3, seed=1)
    assert torch.equal(a, corrupt_images(digits28, "gaussian_noise", 3, seed=1))
    assert not torch.equal(a, corrupt_images(digits28, "gaussian_noise", 3, seed=2))
    assert not torch.equal(a, digits28)
    state = np.random.get_state()[1].copy()
    corrupt_images(digits28, "glass_blur", 0, seed=1)  # severity 0: levels cycle 1..5
    assert np.array_equal(state, np.random.get_state()[1])  # the caller's numpy RNG is left alone


def test_cifar_constants_are_milder_at_small_sizes(digits28):
    """CIFAR-10-C's Gaussian noise (std 0.10 at level 5) moves pixels less than ImageNet-C's
    (0.38); ``auto`` picks CIFAR's for 32 px and below; corruptions without CIFAR constants
    (motion_blur) give the same images either way."""
    diff = {c: (corrupt_images(digits28, "gaussian_noise", 5, 0, c).float() - digits28.float()).abs().mean()
            for c in ("cifar", "imagenet")}
    assert diff["cifar"] < 0.5 * diff["imagenet"]
    for name in ("gaussian_blur", "brightness", "pixelate", "jpeg_compression", "glass_blur"):
        assert corrupt_images(digits28[:2], name, 3, 0, "cifar").shape == (2, 1, 28, 28), name
    assert torch.equal(corrupt_images(digits28[:2], "motion_blur", 3, 0, "cifar"),
                       corrupt_images(digits28[:2], "motion_blur", 3, 0, "imagenet"))
    assert constants_for("auto", 28) == "cifar" and constants_for("auto", 64) == "imagenet"
    with pytest.raises(DataError, match="corruption-constants"):
        constants_for("small", 28)


def test_synthetic_ood_sets_are_seeded_images_in_range():
    for name in SYNTHETIC_OOD:
        a = synthetic_images(name, 6, (3, 16, 16), seed=1)
        assert a.shape == (6, 3, 16, 16) and a.dtype == torch.uint8, name
        assert torch.equal(a, synthetic_images(name, 6, (3, 16, 16), seed=1)), name
        assert not torch.equal(a, synthetic_images(name, 6, (3, 16, 16), seed=2)), name
    noise = synthetic_images("noise-rademacher", 4, (1, 8, 8)).unique()
    assert set(noise.tolist()) == {0, 255}
    blobs = synthetic_images("blobs", 20, (1, 28, 28)).float() / 255
    assert (blobs == 0).float().mean() > 0.3 and (blobs[blobs > 0] >= 0.75 - 1e-2).all()
    ood = ood_set("blobs", load_dataset("mnist"), 30)
    assert len(ood) == 30 and ood.x.shape == (30, 1, 28, 28)


def test_small_and_rgb_images_keep_their_shape():
    rgb = torch.randint(0, 256, (3, 3, 32, 32), dtype=torch.uint8)
    assert corrupt_images(rgb, "frost", 2, 0).shape == (3, 3, 32, 32)
    tiny = torch.randint(0, 256, (2, 1, 8, 8), dtype=torch.uint8)
    assert corrupt_images(tiny, "fog", 2, 0).shape == (2, 1, 8, 8)
    with pytest.raises(DataError, match="uint8"):
        corrupt_images(rgb.float(), "fog", 2, 0)


def test_corrupted_sets_are_cached(tmp_path, monkeypatch):
    bundle = load_dataset("mnist")
    first = corrupted_sets(bundle, ["shot_noise"], 2, 0, 50, str(tmp_path))["shot_noise"]
    assert len(first) == 50 and first.x.dtype == torch.uint8
    assert list((tmp_path / "corrupted").rglob("*.pt"))

    def boom(*a, **k):
        raise AssertionError("cache miss")

    monkeypatch.setattr("datasets.shift.corrupt_images", boom)
    again = corrupted_sets(bundle, ["shot_noise"], 2, 0, 50, str(tmp_path))["shot_noise"]
    assert torch.equal(first.x, again.x) and torch.equal(first.y, bundle.test.y[again_idx(bundle, 50)])
    x0, _ = first[0:1]
    assert x0.dtype == torch.float32  # normalized like the clean test set


def again_idx(bundle, n):
    from datasets.shift import fixed_subset

    return torch.as_tensor(fixed_subset(bundle.test, n))


# ---- OOD sets --------------------------------------------------------------------
def test_ood_set_takes_the_id_shape_and_normalization():
    digits = load_dataset("digits")
    fake = DataBundle("fake-rgb", digits.train, ArrayDataset(torch.zeros(4, 3, 32, 32, dtype=torch.uint8),
                      torch.zeros(4, dtype=torch.long), (0.5, 0.5, 0.5), (0.25, 0.25, 0.25)),
                      digits.train_labels, 10, (3, 32, 32), (0.5,) * 3, (0.25,) * 3)
    ood = ood_set("mnist", fake, 30)
    x, y = ood[0:30]
    assert x.shape == (30, 3, 32, 32) and (y == -1).all()
    assert torch.allclose(ood.mean.flatten(), torch.tensor([0.5] * 3))
    with pytest.raises(DataError, match="not found"):
        ood_set("textures", fake, 10, data_root="/nonexistent")


def test_ood_keys_are_checked():
    with pytest.raises(ConfigError, match="corruption"):
        resolve({"corruptions": "gaussian_noise,rain"})
    with pytest.raises(ConfigError, match="ood-datasets"):
        resolve({"ood-datasets": "nosuchset"})
    with pytest.raises(ConfigError, match="in-distribution"):
        resolve({"ood-datasets": "mnist"})
    with pytest.raises(ConfigError, match="severity"):
        resolve({"severity": 7})
    cfg = resolve({"corruptions": "all", "ood-datasets": "digits", "num-server-rounds": 4, "ood-eval-every": 2})
    assert [due(cfg, r) for r in range(5)] == [False, False, True, False, True]
    assert not due(resolve({}), 5)  # off by default


# ---- metrics and the generic hook ------------------------------------------------
class Linear(torch.nn.Module):
    def __init__(self):
        super().__init__()
        torch.manual_seed(0)
        self.net = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(784, 10))

    def forward(self, x):
        return self.net(x)


def test_shift_metrics_are_a_flat_dict_in_range():
    bundle = load_dataset("mnist")
    corrupted = corrupted_sets(bundle, ["brightness", "contrast"], 1, 0, 40)
    ood = {"digits": ood_set("digits", bundle, 40)}
    out = shift_metrics(Linear(), corrupted, bundle.test.subset(range(40)), ood)
    for key in ("corrupt-accuracy", "corrupt-accuracy-brightness", "auroc", "fpr95", "auroc-energy", "fpr95-foogd",
                "fpr95-energy", "auroc-digits", "fpr95-energy-digits"):
        assert 0.0 <= out[key] <= 1.0, key
    assert out["corrupt-accuracy"] == pytest.approx((out["corrupt-accuracy-brightness"]
                                                     + out["corrupt-accuracy-contrast"]) / 2)


def test_corrupt_ratio_is_corrupted_over_clean_accuracy_on_the_same_images():
    """``corrupt-ratio`` divides by the accuracy on the uncorrupted images the corrupted
    copies were made of; an identity "corruption" gives exactly 1."""
    bundle = load_dataset("mnist")
    model = Linear()
    clean = id_subset(bundle, 40)
    corrupted = corrupted_sets(bundle, ["contrast"], 5, 0, 40)
    logits, y = predict(model, clean)
    acc = float((logits.argmax(1) == y).float().mean())
    out = shift_metrics(model, corrupted, clean, {})
    assert out["corrupt-clean-accuracy"] == pytest.approx(acc) and acc > 0
    assert out["corrupt-ratio"] == pytest.approx(out["corrupt-accuracy"] / acc)
    assert shift_metrics(model, {"none": clean}, clean, {})["corrupt-ratio"] == pytest.approx(1.0)


def test_every_method_gets_the_suite_from_the_base_strategy(tmp_path):
    from flwr.app import ArrayRecord

    from models import build_model
    from simulations.methods import METHODS

    bundle = load_dataset("mnist")
    cfg = resolve({"method": "fedavg", "corruptions": "pixelate", "ood-datasets": "digits", "ood-max-samples": 30,
                   "num-server-rounds": 1, "data-root": str(tmp_path)})
    rows = []
    strategy = METHODS["fedavg"].strategy(cfg, test_data=bundle, on_round=rows.append)
    arrays = ArrayRecord(build_model("cnn", 10, (1, 28, 28)).state_dict())
    strategy.end_round(0, arrays)
    assert "auroc" not in rows[-1]  # not on the initial model
    strategy.end_round(1, arrays)
    assert {"accuracy", "corrupt-accuracy-pixelate", "auroc-digits", "fpr95"} <= set(rows[-1])
