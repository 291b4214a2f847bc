"""Personalized gradient baselines: FedAvg + local fine-tuning (``finetune-epochs``) and Ditto."""

from __future__ import annotations

import pytest
import torch

from clients.base import Client, ClientData, finetune
from clients.ditto import PERSONAL, DittoClient
from datasets.registry import ArrayDataset
from simulations.config import ConfigError, resolve
from tests.conftest import run_sweep


def data(n: int = 80, seed: int = 0, pid: int = 0) -> ClientData:
    """Learnable images: the class sets the brightness of a patch, plus noise."""
    gen = torch.Generator().manual_seed(seed)
    y = torch.arange(n) % 10
    x = torch.rand(n, 1, 28, 28, generator=gen) * 0.5
    for c in range(10):
        x[y == c, :, 2 * c:2 * c + 6, 4:10] += 1.0
    test_y = torch.arange(30) % 10
    test_x = torch.rand(30, 1, 28, 28, generator=gen) * 0.5
    for c in range(10):
        test_x[test_y == c, :, 2 * c:2 * c + 6, 4:10] += 1.0
    # the first 20 images are the validation split, the rest train
    return ClientData(pid, ArrayDataset(x[20:], y[20:]), ArrayDataset(test_x, test_y), 10, (1, 28, 28),
                      ArrayDataset(x[:20], y[:20]))


def cfg_of(**over) -> dict:
    return resolve({"model": "cnn", "batch-size": 16, "lr": 0.05, "local-epochs": 1, "num-server-rounds": 2,
                    **over})


def same(a: dict, b: dict) -> bool:
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def test_finetune_zero_epochs_is_the_global_model():
    cfg = cfg_of(**{"finetune-epochs": 0})
    client = Client(cfg, data())
    start = {k: v.clone() for k, v in client.model.state_dict().items()}
    epochs, val_acc = finetune(client, start)
    assert epochs == 0 and same(client.model.state_dict(), start)
    assert val_acc == client.score(client.data.val)["accuracy"]
    plain = Client(cfg, data()).evaluate({"arrays": start}, {"server-round": 2}, {})
    assert "global-accuracy" not in plain and "finetune-epochs" not in plain  # nothing fine-tuned


def test_finetune_chooses_epochs_on_validation_without_reading_the_test_split():
    cfg = cfg_of(**{"finetune-epochs": 4})
    start = Client(cfg, data()).model.state_dict()
    out = Client(cfg, data()).evaluate({"arrays": start}, {"server-round": 2}, {})
    assert 0 <= out["finetune-epochs"] <= 4 and out["finetune-epochs"] > 0  # a random model gains from training
    assert out["accuracy"] > out["global-accuracy"]
    before_last = Client(cfg, data()).evaluate({"arrays": start}, {"server-round": 1}, {})
    assert "finetune-epochs" not in before_last  # only after the last round
    poisoned = data()
    poisoned.test.y = (poisoned.test.y + 1) % 10
    again = Client(cfg, poisoned).evaluate({"arrays": start}, {"server-round": 2}, {})
    assert again["finetune-epochs"] == out["finetune-epochs"] and again["val-accuracy"] == out["val-accuracy"]
    assert again["loss"] != out["loss"]  # the metric does read the (poisoned) test labels


def test_ditto_at_lambda_zero_is_local_training():
    """Two rounds: the personal model equals a client training alone from the first model
    it received (its own output fed back), whatever global models arrive meanwhile."""
    cfg = cfg_of(**{"method": "ditto", "ditto-lambda": 0.0})
    ditto, alone = DittoClient(cfg, data()), Client(cfg, data())
    w0 = {k: v.clone() for k, v in ditto.model.state_dict().items()}
    # a different global model in round 2: another client's update
    other = Client(cfg, data(seed=1, pid=1)).train({"arrays": w0}, {"server-round": 1}, {}).arrays["arrays"]
    r1 = ditto.train({"arrays": w0}, {"server-round": 1, "ditto-lambda": 0.0}, {})
    r2 = ditto.train({"arrays": other}, {"server-round": 2, "ditto-lambda": 0.0}, r1.keep)
    a1 = alone.train({"arrays": w0}, {"server-round": 1}, {}).arrays["arrays"]
    a2 = alone.train({"arrays": a1}, {"server-round": 2}, {}).arrays["arrays"]
    assert same(r2.keep[PERSONAL], a2)
    assert same(r2.arrays["arrays"], Client(cfg, data()).train({"arrays": other}, {"server-round": 2}, {}).arrays["arrays"])
    # λ > 0 pulls the personal model towards the global one
    r2b = DittoClient(cfg, data()).train({"arrays": other}, {"server-round": 2, "ditto-lambda": 1.0}, r1.keep)
    params = {n for n, _ in ditto.model.named_parameters()}  # the proximal term pulls parameters, not BN buffers
    dist = lambda s: sum((s[k] - other[k]).pow(2).sum() for k in params)
    assert dist(r2b.keep[PERSONAL]) < dist(r2.keep[PERSONAL])
    out = ditto.evaluate({"arrays": other}, {"server-round": 2}, r2.keep)
    ditto.set_weights(r2.keep[PERSONAL])
    assert out["accuracy"] == ditto.score(ditto.data.test)["accuracy"] and "global-accuracy" in out


def test_finetune_and_ditto_keys_are_checked():
    with pytest.raises(ConfigError, match="local-val-fraction > 0"):
        resolve({"finetune-epochs": 2, "local-val-fraction": 0.0})
    with pytest.raises(ConfigError, match="finetune-epochs=0"):
        resolve({"method": "ditto", "finetune-epochs": 2})
    with pytest.raises(ConfigError, match="ditto-lambda"):
        resolve({"method": "ditto", "ditto-lambda": -1.0})


@pytest.mark.parametrize("method", ["fedavg", "ditto"])
def test_personalized_baselines_end_to_end(tmp_path, method):
    """In-process runs on digits (3 clients, 2 rounds): the personalized columns are there."""
    base = {"dataset": "digits", "num-supernodes": 3, "partitioner": "dirichlet", "dirichlet-alpha": 0.5,
            "num-server-rounds": 2, "local-epochs": 1, "local-val-fraction": 0.2, "lr": 0.05,
            "finetune-epochs": 2 if method == "fedavg" else 0}
    code, frame, _ = run_sweep(tmp_path, base, {"method": [method]}, "--local")
    assert code == 0
    last = frame[frame["round"] == 2].iloc[0]
    assert last["failures"] == 0 and 0 <= last["personalized-val-accuracy"] <= 1
    assert 0 <= last["global-model-local-accuracy"] <= 1 and last["personalized-accuracy"] > 0.1
    rounds = frame[frame["round"] >= 1]  # the run's bytes so far: what an equal-bytes comparison reads
    assert rounds["uplink-bytes"].min() > 0 and last["uplink-bytes-total"] == rounds["uplink-bytes"].sum()
    assert last["downlink-bytes-total"] == rounds["downlink-bytes"].sum()
    if method == "fedavg":
        assert 0 <= last["finetune-epochs-mean"] <= 2
        assert "finetune-epochs-mean" not in frame[frame["round"] == 1].dropna(axis=1).columns

