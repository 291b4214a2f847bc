"""FedDG-LSI: inversion, translator losses, importance aggregation, client, end to end."""

import numpy as np
import pandas as pd
import pytest
import torch
from flwr.app import Array, ArrayRecord, ConfigRecord, MetricRecord, RecordDict
from flwr.serverapp.strategy.strategy_utils import aggregate_arrayrecords
from flwr.supercore.task_identity import TaskIdentity
from torch import nn
from torch.nn import functional as F

from clients.base import ClientData
from clients.fedlsi import FedLSIClient
from datasets.registry import ArrayDataset
from models import build_model
from models.translator import LatentDiscriminator, Translator, build_head, translator_from_state
from simulations.config import ConfigError, resolve
from strategies import lsi_server
from strategies.replies import check_reply
from strategies.fedlsi import FedLSIStrategy
from tests.conftest import run_sweep

DIM, CLASSES = 16, 4


@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    """Tiny ops: one thread is far faster on a shared, loaded CPU (restored afterwards)."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(autouse=True)
def _task_identity():
    TaskIdentity.run_id, TaskIdentity.node_id, TaskIdentity.task_id = 1, 0, 1
    yield
    TaskIdentity.run_id = TaskIdentity.node_id = TaskIdentity.task_id = None


def fit_head(z: torch.Tensor, y: torch.Tensor) -> nn.Sequential:
    """A BN + linear classifier head fitted to latents z (60 Adam steps), as FedDG-LSI builds it."""
    head = nn.Sequential(nn.BatchNorm1d(DIM, affine=False, momentum=None), nn.Linear(DIM, CLASSES))
    opt = torch.optim.Adam(head.parameters(), 0.05)
    for _ in range(60):
        loss = F.cross_entropy(head(z), y)
        opt.zero_grad()
        loss.backward()
        opt.step()
    return build_head({f"classifier.{k}": v for k, v in head.state_dict().items()})


def trained_head(seed: int = 0) -> nn.Sequential:
    """A BN1d(no affine) -> Linear head fit on clustered latents, with their BN statistics."""
    gen = torch.Generator().manual_seed(seed)
    centers = 2.0 * torch.randn(CLASSES, DIM, generator=gen) + 1.0
    y = torch.arange(1000) % CLASSES
    z = centers[y] + 0.7 * torch.randn(1000, DIM, generator=gen) * torch.rand(DIM, generator=gen).add(0.5)
    return fit_head(z, y)


def cfg(**over):
    return resolve({"method": "fedlsi", "dataset": "rotated-mnist", "partitioner": "domain", "model": "lsi-cnn",
                    **over})


# ---- stage 2 -------------------------------------------------------------------------
def test_inversion_matches_bn_statistics_and_labels():
    head = trained_head()
    c = cfg(**{"lsi-inversion-iters": 300, "lsi-bn-weight": 1.0, "lsi-num-latents": 256})
    z, y, codes, stats = lsi_server.invert_heads([head, trained_head(1)], c, seed=0)
    n = int(c["lsi-num-latents"])
    assert c["lsi-inversion-batch"] == 32
    assert z.shape == (2 * n, DIM) and codes.tolist() == [0] * n + [1] * n
    bn = head[0]
    zk = z[:n]
    mean_err = (zk.mean(0) - bn.running_mean).norm() / bn.running_mean.norm()
    var_err = (zk.var(0, unbiased=False) - bn.running_var).norm() / bn.running_var.norm()
    assert mean_err < 0.05 and var_err < 0.1, (mean_err, var_err)
    assert (head(zk).argmax(1) == y[:n]).float().mean() >= 0.98
    # i.i.d. uniform labels (official), not balanced ones: the 8 batches of 32 differ in their counts
    counts = {tuple(np.bincount(b.numpy(), minlength=CLASSES)) for b in y[:n].split(32)}
    assert len(counts) > 1 and set(y.tolist()) == set(range(CLASSES))
    for b in zk.split(32):  # every batch of 32 matches the BN statistics on its own
        assert (b.mean(0) - bn.running_mean).norm() / bn.running_mean.norm() < 0.1
    assert stats["lsi-inversion-acc"] >= 0.98
    # Random latents (the start point) are neither: inversion did the work.
    z0 = torch.randn(n, DIM)
    assert (z0.mean(0) - bn.running_mean).norm() / bn.running_mean.norm() > 0.5


# ---- stage 3 -------------------------------------------------------------------------
class ShapeRecordingD(LatentDiscriminator):
    def forward(self, z):
        self.seen = tuple(z.shape)
        return super().forward(z)


def test_gradient_penalty_uses_per_sample_alpha():
    d = ShapeRecordingD(DIM, 3, 32)
    real, fake = torch.randn(8, DIM), torch.randn(8, DIM)
    gp = lsi_server.gradient_penalty(d, real, fake)
    assert d.seen == (8, DIM) and gp.ndim == 0 and torch.isfinite(gp)
    # The official alpha = rand(B,1,1,1) would have broadcast [B,d] latents to [B,1,B,d].
    assert (torch.rand(8, 1, 1, 1) * real).shape == (8, 1, 8, DIM)


def test_translator_losses_finite_and_g_rebuilds_from_its_state():
    heads = [trained_head(0), trained_head(1)]
    c = cfg(**{"lsi-num-latents": 32, "lsi-inversion-iters": 20, "lsi-translator-iters": 10,
               "lsi-translator-hidden": 32, "lsi-translator-batch": 16})
    z, y, codes, _ = lsi_server.invert_heads(heads, c, seed=0)
    g, d = Translator(DIM, 2, 32, form="residual"), LatentDiscriminator(DIM, 2, 32)
    trg = codes.flip(0)
    for losses in (lsi_server.d_step_losses(g, d, z, codes, trg), lsi_server.g_step_losses(g, d, z, y, codes, trg, heads)):
        assert all(torch.isfinite(v) and v.ndim == 0 for v in losses.values())
    assert torch.equal(g.eval()(z, codes, trg), z)  # residual G starts at the identity
    for form in ("tanh", "rescaled"):
        g, d, logged = lsi_server.train_translator(z, y, codes, heads, 2, {**c, "lsi-translator": form}, seed=0)
        assert logged and all(np.isfinite(v) for v in logged.values())
        g2 = translator_from_state(g.state_dict()).eval()
        assert g2.form == form and torch.equal(g2(z, codes, trg), g(z, codes, trg))


def test_official_translator_is_bounded_by_one():
    """The default G is the official one: a Tanh head on raw z, so |G(z, c, c')| < 1 for
    any z (the rescaled ablation is not bounded), whatever the scale of the latents."""
    assert cfg()["lsi-translator"] == "tanh"
    torch.manual_seed(0)
    z = 50.0 * torch.randn(64, DIM)  # far outside the unit box, as an unnormalized encoder's z
    codes, trg = torch.arange(64) % 3, (torch.arange(64) + 1) % 3
    g = Translator(DIM, 3, 32).eval()
    out = g(z, codes, trg)
    assert out.abs().max() <= 1 and out.abs().max() > 0.5
    rescaled = Translator(DIM, 3, 32, form="rescaled")
    rescaled.set_scale(z)
    assert rescaled.eval()(z, codes, trg).abs().max() > 1
    legacy = {k: v for k, v in rescaled.state_dict().items() if k != "form_id"} | {"is_residual": torch.tensor(0.0)}
    assert translator_from_state(legacy).form == "rescaled"  # a checkpoint from before the Tanh default
    with pytest.raises(ConfigError, match="lsi-translator=residual"):
        cfg(**{"lsi-translator-residual": True})


def shifted_domain_latents(domain: int, n: int = 600, scale: float = 1.0) -> tuple[torch.Tensor, torch.Tensor]:
    """Latents of domains that share their classes and differ by a shift."""
    gen = torch.Generator().manual_seed(domain)
    centers = 2.0 * torch.randn(CLASSES, DIM, generator=torch.Generator().manual_seed(0))
    shift = 3.0 * torch.randn(DIM, generator=torch.Generator().manual_seed(100 + domain))
    y = torch.arange(n) % CLASSES
    return scale * (centers[y] + shift + 0.5 * torch.randn(n, DIM, generator=gen)), y


def shifted_domain_head(domain: int, scale: float = 1.0) -> nn.Sequential:
    return fit_head(*shifted_domain_latents(domain, scale=scale))


@pytest.mark.parametrize("form,scale", [("tanh", 0.2), ("rescaled", 1.0)])
def test_translator_maps_latents_to_the_target_domain(form, scale):
    """A domain classifier trained on the synthetic latents labels >= 90% of the translated
    latents G(z, c, c') as their target domain c' (c' != c); the identity scores 0. The
    official Tanh G can only reach latents inside the unit box (scale 0.2 puts them there)."""
    torch.manual_seed(0)  # the heads' initialization
    heads = [shifted_domain_head(k, scale) for k in range(3)]
    c = cfg(**{"lsi-num-latents": 32, "lsi-inversion-iters": 100, "lsi-bn-weight": 1.0, "lsi-translator-iters": 300,
               "lsi-translator-lr": 0.01, "lsi-translator-hidden": 32, "lsi-translator-batch": 48,
               "lsi-translator": form})
    z, y, codes, _ = lsi_server.invert_heads(heads, c, seed=0)
    g, _, _ = lsi_server.train_translator(z, y, codes, heads, 3, c, seed=0)
    scores = lsi_server.translation_scores(g, z, y, codes, heads, 3)
    assert scores["clf-acc"] >= 0.95  # the domains are separable
    assert scores["hit"] >= 0.9, scores
    identity = Translator(DIM, 3, 32, form="residual").eval()  # zero residual: G(z) = z
    assert lsi_server.translation_scores(identity, z, y, codes, heads, 3)["hit"] == 0.0


class Shift(nn.Module):
    """A translator that knows the domains' shifts: G(z, c, c') = z - shift_c + shift_c'."""

    def __init__(self, shifts: torch.Tensor):
        super().__init__()
        self.shifts = shifts

    def forward(self, z, c, t):
        return z - self.shifts[c] + self.shifts[t]


def test_real_translation_scores_tell_a_translator_from_the_identity():
    """On real latents (an encoder's z of labelled images per code), the oracle translator
    hits its target domain and keeps the class; the identity hits only by chance level."""
    torch.manual_seed(0)
    data = {k: shifted_domain_latents(k, 200) for k in range(3)}
    x_all, y_all = torch.cat([d[0] for d in data.values()]), torch.cat([d[1] for d in data.values()])
    model = nn.Module()
    model.encoder = nn.Identity()  # the "images" are the latents themselves
    model.classifier = fit_head(x_all, y_all)  # one global head for every domain
    shifts = torch.stack([shifted_domain_latents(k, 200)[0].mean(0) - shifted_domain_latents(0, 200)[0].mean(0)
                          for k in range(3)])
    oracle = lsi_server.real_translation_scores(Shift(shifts), model, data, 3)
    assert oracle["clf-acc"] >= 0.95 and oracle["hit"] >= 0.95 and oracle["class-kept"] >= 0.9, oracle
    assert oracle["hit-identity"] <= 0.05 and oracle["class-acc"] >= 0.9
    same = lsi_server.real_translation_scores(Shift(torch.zeros(3, DIM)), model, data, 3)
    assert same["hit"] == same["hit-identity"] <= 0.05 and same["class-kept"] == same["class-acc"]


# ---- stage 5 -------------------------------------------------------------------------
def states(k=3, seed=0):
    gen = torch.Generator().manual_seed(seed)
    return [{"w": torch.randn(4, 3, generator=gen), "b": torch.randn(3, generator=gen),
             "bn.running_mean": torch.randn(3, generator=gen), "bn.num_batches_tracked": torch.tensor(10 * (i + 1))}
            for i in range(k)]


def test_importance_one_everywhere_is_fedavg():
    s, n = states(), [10, 30, 60]
    ones = [{"w": torch.ones(4, 3), "b": torch.ones(3)} for _ in s]
    ours = lsi_server.importance_average(s, ones, n)
    records = [RecordDict({"arrays": ArrayRecord({k: Array(v.numpy()) for k, v in st.items()}),
                           "metrics": MetricRecord({"num-examples": m})}) for st, m in zip(s, n)]
    flower = aggregate_arrayrecords(records, "num-examples")  # Flower's FedAvg
    for k in s[0]:
        np.testing.assert_allclose(ours[k].numpy(), flower[k].numpy(), rtol=1e-6, atol=1e-7)
        assert ours[k].dtype == s[0][k].dtype
    assert torch.equal(lsi_server.data_average(s, n)["w"], ours["w"])  # the aggregation=fedavg ablation


def test_zero_importance_takes_the_other_clients_value():
    s, n = states(2), [50, 50]
    imp = [{"w": torch.ones(4, 3), "b": torch.ones(3)}, {"w": torch.ones(4, 3), "b": torch.ones(3)}]
    imp[0]["w"][1, 2] = 0.0  # client 0 finds w[1,2] unimportant
    imp[1]["b"][:] = 0.0  # client 1 finds all of b unimportant
    imp[0]["w"][0, 0], imp[1]["w"][0, 0] = 0.0, 0.0  # nobody: data weights
    out = lsi_server.importance_average(s, imp, n)
    assert out["w"][1, 2] == s[1]["w"][1, 2]
    assert torch.equal(out["b"], s[0]["b"])
    assert torch.isclose(out["w"][0, 0], (s[0]["w"][0, 0] + s[1]["w"][0, 0]) / 2)
    imp[0]["w"][2, 1], imp[1]["w"][2, 1] = 3.0, 1.0  # element-wise weights 3:1
    out = lsi_server.importance_average(s, imp, n)
    assert torch.isclose(out["w"][2, 1], 0.75 * s[0]["w"][2, 1] + 0.25 * s[1]["w"][2, 1])
    assert out["bn.num_batches_tracked"] == 15  # buffers by sample counts, dtype kept


def half_image_data(side: int, n: int = 32) -> ClientData:
    """Noise images with only the left (side 0) or the right (side 1) half lit: two domains."""
    x = torch.rand(n, 1, 28, 28, generator=torch.Generator().manual_seed(0))
    x[..., 14:] = 0 if side == 0 else x[..., 14:]
    x[..., :14] = 0 if side == 1 else x[..., :14]
    x = (x * 255).to(torch.uint8)
    return ClientData(side, ArrayDataset(x, torch.arange(n) % 10), ArrayDataset(x[:8], torch.arange(8)), 10, (1, 28, 28))


def test_importance_weights_differ_from_uniform_on_different_clients():
    """MAS importance of two clients with different data: the element-wise aggregation
    weights move far from 1/2; two clients with the same data get exactly 1/2."""
    c = cfg(**{"batch-size": 16})
    model = build_model("lsi-cnn", 10, (1, 28, 28))
    omegas = []
    for side in (0, 1, 0):
        client = FedLSIClient(c, half_image_data(side))
        client.set_weights(model.state_dict())
        omegas.append(client.importance(client.model))
    for key in ("encoder.0.0.weight", "encoder.1.weight", "classifier.1.weight"):
        w = lsi_server.importance_weights([omegas[0][key], omegas[1][key]], [32, 32])
        assert w.shape == (2,) + omegas[0][key].shape and torch.allclose(w.sum(0), torch.ones(()).double())
        assert (w[0] - 0.5).abs().median() > 0.1, key  # a typical element is far from the equal share
        same = lsi_server.importance_weights([omegas[0][key], omegas[2][key]], [32, 32])
        assert torch.allclose(same, torch.full_like(same, 0.5))


# ---- the official evaluation (eval-bn=batch) ------------------------------------------------
def test_batch_bn_evaluation_uses_batch_statistics_and_leaves_the_model_alone():
    from clients.base import evaluate, evaluate_batch_bn

    model = build_model("lsi-cnn", 10, (1, 28, 28))
    data = tiny_data(0, n=65).train  # 65 = 2 x 32 + 1: the single last sample joins a batch
    before = {k: v.clone() for k, v in model.state_dict().items()}
    # Running statistics far from the data's: eval mode is at chance, batch mode is not.
    model.classifier[0].running_mean.fill_(1e3)
    standard = evaluate(model, data, 512, torch.device("cpu"))
    batch = evaluate_batch_bn(model, data, torch.device("cpu"), seed=0)
    assert batch["num-examples"] == standard["num-examples"] == 65
    assert batch["loss"] < standard["loss"]
    assert evaluate_batch_bn(model, data, torch.device("cpu"), seed=0) == batch  # seeded shuffle
    assert model.classifier[0].running_mean.eq(1e3).all() and not model.training  # running statistics untouched
    assert all(torch.equal(v, before[k]) for k, v in model.state_dict().items() if k != "classifier.0.running_mean")
    with pytest.raises(ConfigError, match="eval-bn"):
        cfg(**{"eval-bn": "train"})


# ---- client and strategy (no Flower) ----------------------------------------------------
def tiny_data(pid=0, n=48):
    gen = torch.Generator().manual_seed(pid)
    x = (torch.rand(n, 1, 28, 28, generator=gen) * 255).to(torch.uint8)
    return ClientData(pid, ArrayDataset(x, torch.arange(n) % 10), ArrayDataset(x[:8], torch.arange(8)), 10, (1, 28, 28))


def test_client_stages_send_what_the_strategy_expects():
    c = cfg(**{"local-epochs": 1, "lsi-pretrain-epochs": 1, "batch-size": 16})
    model = build_model("lsi-cnn", 10, (1, 28, 28))
    arrays = ArrayRecord(model.state_dict())
    strategy = FedLSIStrategy(c)
    strategy.train_record(1, arrays, ConfigRecord())
    assert strategy.stage == "pretrain"
    expected = strategy.expected_arrays(arrays)
    client = FedLSIClient(c, tiny_data())
    reply = client.train({"arrays": model.state_dict()}, {"lsi-stage": "pretrain", "server-round": 1}, {})
    assert set(reply.arrays) == {"head"} and all(k.startswith("classifier.") for k in reply.arrays["head"])
    body = RecordDict({"head": ArrayRecord(reply.arrays["head"]), "metrics": MetricRecord(reply.metrics)})
    ints = {k for k, v in model.state_dict().items() if not v.is_floating_point()}  # as the strategy passes them
    assert check_reply(body, expected, int_arrays=ints) is None

    strategy.translator = Translator(model.latent_dim, 3, 32)
    strategy.codes = {0: 0, 1: 1, 2: 2}
    config = ConfigRecord({"server-round": 2})
    record = strategy.train_record(2, arrays, config)
    assert strategy.stage == "train" and "translator" in record.array_records
    sent = {name: rec.to_torch_state_dict() for name, rec in record.array_records.items()}
    reply = client.train(sent, dict(config), {})
    assert reply.metrics["divergence"] >= 0 and set(reply.arrays) == {"arrays", "importance"}
    assert set(reply.arrays["importance"]) == {k for k, _ in model.named_parameters()}
    assert all((v >= 0).all() for v in reply.arrays["importance"].values())
    body = RecordDict({name: ArrayRecord(v) for name, v in reply.arrays.items()})
    body["metrics"] = MetricRecord(reply.metrics)
    assert check_reply(body, strategy.expected_arrays(arrays), int_arrays=ints) is None
    body["importance"] = ArrayRecord({k: v[:1] if v.ndim else v for k, v in reply.arrays["importance"].items()})
    assert "shape" in check_reply(body, strategy.expected_arrays(arrays), int_arrays=ints)


def test_a_lone_last_sample_is_skipped_not_a_failed_client():
    """33 samples in batches of 16 leave one: the latent BatchNorm1d cannot train on it, and the
    client used to fail the round (seen on a label-skew partition of the leaderboard)."""
    c = cfg(**{"local-epochs": 1, "lsi-pretrain-epochs": 1, "batch-size": 16})
    model = build_model("lsi-cnn", 10, (1, 28, 28))
    client = FedLSIClient(c, tiny_data(n=33))
    for stage in ("pretrain", "train"):
        reply = client.train({"arrays": model.state_dict()}, {"lsi-stage": stage, "server-round": 1}, {})
        assert np.isfinite(reply.metrics["train-loss"]) and reply.metrics["num-examples"] == 33


def test_optimizer_momentum_persists_across_rounds():
    """The official SGD (lr 1e-3, wd 5e-4) keeps its momentum across rounds: round 2's
    buffers, resumed from round 1's (the node state), differ from a fresh optimizer's;
    with lsi-keep-optimizer off nothing is kept."""
    c = cfg(**{"local-epochs": 1, "batch-size": 16})
    assert (c["lsi-lr"], c["lsi-weight-decay"], c["momentum"], c["lsi-keep-optimizer"]) == (0.001, 0.0005, 0.9, True)
    model = build_model("lsi-cnn", 10, (1, 28, 28))
    client = FedLSIClient(c, tiny_data())
    config = {"lsi-stage": "train", "aggregation": "fedavg", "lambda-di": 0.0}
    r1 = client.train({"arrays": model.state_dict()}, {**config, "server-round": 2}, {})
    kept = r1.keep["lsi-optimizer"]
    assert set(kept) == {k for k, _ in model.named_parameters()} and all(v.abs().sum() > 0 for v in kept.values())
    r2 = client.train({"arrays": r1.arrays["arrays"]}, {**config, "server-round": 3}, dict(r1.keep))
    fresh = client.train({"arrays": r1.arrays["arrays"]}, {**config, "server-round": 3}, {})
    assert all(torch.isfinite(v).all() for v in r2.keep["lsi-optimizer"].values())
    assert any(not torch.allclose(r2.keep["lsi-optimizer"][k], fresh.keep["lsi-optimizer"][k]) for k in kept)
    assert any(not torch.equal(r2.arrays["arrays"][k], fresh.arrays["arrays"][k]) for k in kept)
    from types import SimpleNamespace

    from strategies.audit import Audit

    replay = Audit.announced(SimpleNamespace(cfg=c), {"metrics": {"num-examples": 48}})  # the audit's replay
    assert (replay.lr, replay.weight_decay) == (0.001, 0.0005)
    pre = client.train({"arrays": model.state_dict()}, {"lsi-stage": "pretrain", "server-round": 1}, {})
    assert pre.keep == {}  # the pre-training's optimizer is not the federated one
    off = FedLSIClient(cfg(**{"local-epochs": 1, "batch-size": 16, "lsi-keep-optimizer": False}), tiny_data())
    assert off.train({"arrays": model.state_dict()}, {**config, "server-round": 2}, {}).keep == {}


def test_config_errors_are_one_line():
    assert FedLSIStrategy(cfg(model="cnn")).cfg["model"] == "lsi-cnn"  # the latent head goes on the chosen model
    for over, message in [({"model": "timm:resnet18"}, "Linear .classifier"), ({"aggregation": "median"}, "aggregation"),
                          ({"lsi-schedule": "sometimes"}, "lsi-schedule"), ({"lsi-inversion-lr": 0.0}, "lsi-inversion-lr")]:
        with pytest.raises(ConfigError, match=message):
            cfg(**over)


# ---- end to end through Flower -------------------------------------------------------------
def test_fedlsi_end_to_end_reports_heldout_accuracy(tmp_path):
    """Through Flower's simulation engine, then the same sweep in-process (``--local``):
    the local grid must reproduce every metric (all stages: heads only, G sent down,
    importance arrays up)."""
    tiny = {"lsi-num-latents": 32, "lsi-inversion-iters": 10, "lsi-translator-iters": 10, "lsi-translator-hidden": 32,
            "lsi-translator-batch": 32, "lsi-pretrain-epochs": 1, "local-epochs": 1, "batch-size": 64}
    base = {"dataset": "rotated-mnist", "partitioner": "domain", "model": "lsi-cnn", "num-server-rounds": 2,
            "num-supernodes": 5, "heldout-domain": 5, "fraction-evaluate": 0.0, **tiny}
    grid = {"method": ["fedlsi"]}
    code, frame, _ = run_sweep(tmp_path, base, grid)
    assert code == 0, frame
    last = frame[frame["round"] == 2].iloc[0]
    assert {"heldout-accuracy", "source-accuracy", "selected-heldout-accuracy"} <= set(frame.columns)
    assert {f"{m}-{mode}" for m in ("heldout-accuracy", "source-accuracy", "selected-heldout-accuracy")
            for mode in ("eval", "batch")} <= set(frame.columns)  # both BatchNorm modes, every round
    assert frame["heldout-accuracy"].equals(frame["heldout-accuracy-eval"])  # eval-bn=eval names the plain ones
    assert 0 <= last["heldout-accuracy"] <= 1 and last["failures"] == 0
    first = frame[frame["round"] == 1].iloc[0]
    assert first["lsi-stage"] == 1 and last["lsi-stage"] == 4 and last["divergence"] >= 0
    assert first["uplink-bytes"] < last["uplink-bytes"] / 20  # stage 1 uploads the heads only
    real = [f"lsi-real-{k}" for k in ("hit", "hit-identity", "clf-acc", "class-kept", "class-acc")]
    assert frame.loc[frame["round"] >= 1, real].apply(lambda col: col.between(0, 1)).all().all()  # G on real z

    code, local, _ = run_sweep(tmp_path, base, grid, "--local")
    assert code == 0
    provenance = {"flwr-run-id", "client-resources-num-cpus", "client-resources-num-gpus"}  # Flower's engine only
    numeric = [c for c in frame.columns if pd.api.types.is_numeric_dtype(frame[c]) and "seconds" not in c
               and c not in provenance]
    assert {"accuracy", "heldout-accuracy", "uplink-bytes", "divergence"} <= set(numeric)
    # equal up to float summation order (the server's evaluation may use other thread counts)
    np.testing.assert_allclose(local[numeric].to_numpy(float), frame[numeric].to_numpy(float), rtol=1e-5)


def test_label_skew_defaults_stay_finite(tmp_path):
    """The leaderboard's label-skew setting (Fashion-MNIST, Dirichlet 0.1, 5 clients, small
    data; its inversion and translator budgets) for 3 rounds at FedDG-LSI's defaults
    (lambda-di 10, the Tanh G, the official SGD): finite losses, no NaN replies, no failures
    (the unbounded G with lr 0.02 diverged here)."""
    base = {"dataset": "fashion-mnist", "partitioner": "dirichlet", "dirichlet-alpha": 0.1, "num-supernodes": 5,
            "num-server-rounds": 3, "local-epochs": 1, "local-test-fraction": 0.98, "fraction-evaluate": 0.0,
            "lsi-num-latents": 128, "lsi-inversion-iters": 100, "lsi-translator-iters": 200,
            "lsi-translator-hidden": 256, "lsi-pretrain-epochs": 1}
    code, frame, _ = run_sweep(tmp_path, base, {"method": ["fedlsi"]}, "--local")
    assert code == 0 and len(frame) == 4, frame
    rounds = frame[frame["round"] >= 1]
    assert (rounds["failures"] == 0).all() and np.isfinite(rounds[["loss", "train-loss"]].to_numpy()).all()
    assert rounds["loss"].max() < 5 and rounds["divergence"].dropna().between(0, 5).all()
    # the checkpoint keeps the model's shapes (a 1-d num_batches_tracked made resume refuse it)
    arrays = torch.load(next(tmp_path.glob("**/checkpoint.pt")), weights_only=True)["arrays"]
    assert all(v.shape == () for k, v in arrays.items() if k.endswith("num_batches_tracked")), arrays.keys()


def test_schedules_once_pretrains_then_fixes_g_every_round_refits_it():
    tiny = {"lsi-num-latents": 16, "lsi-inversion-iters": 5, "lsi-translator-iters": 5, "lsi-translator-hidden": 16,
            "lsi-translator-batch": 16}
    heads = {p: {f"classifier.{k}": v for k, v in trained_head(p).state_dict().items()} for p in (2, 0, 1)}
    arrays = ArrayRecord(build_model("lsi-cnn", 10, (1, 28, 28)).state_dict())

    once = FedLSIStrategy(cfg(**tiny))
    once.train_record(1, arrays, ConfigRecord())
    assert once.stage == "pretrain"
    stats = once.fit_translator(1, heads)
    assert once.codes == {0: 0, 1: 1, 2: 2} and once.translator.num_domains == 3  # codes in partition order
    assert 0 <= stats["lsi-inversion-acc"] <= 1 and np.isfinite(stats["lsi-fixed-point-gap"])
    record = once.train_record(2, arrays, ConfigRecord())
    assert once.stage == "train" and record["config"]["lsi-code-2"] == 2 and record["config"]["lsi-num-codes"] == 3

    every = FedLSIStrategy(cfg(**tiny, **{"lsi-schedule": "every-round"}))
    record = every.train_record(1, arrays, ConfigRecord())
    assert every.stage == "train" and "translator" not in record.array_records  # round 1: plain training, no G yet
    every.fit_translator(1, heads)
    g1 = {k: v.clone() for k, v in every.translator.state_dict().items()}
    every.fit_translator(2, {p: heads[p] for p in (0, 1)})  # a round with a client missing: warm start, same codes
    assert every.codes == {0: 0, 1: 1, 2: 2} and every.translator.num_domains == 3
    assert any(not torch.equal(g1[k], v) for k, v in every.translator.state_dict().items())  # G was fine-tuned
