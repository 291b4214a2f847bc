"""FedSDWC: Fourier augmentation, the mixture priors, the ELBO and intervention terms,
that every term moves the shared encoder, that the link matters, the per-client prior,
the ablation methods, and one tiny end-to-end run through Flower with the OOD suite on."""

import math
from pathlib import Path

import pytest
import torch

from clients.fedsdwc import (
    TERMS,
    VARIANTS,
    amplitude_mix,
    draw_partners,
    fourier_augment,
    random_flip,
    sdwc_loss,
    term_weights,
    sdwc_terms,
    variant_config,
)
from models.causal import PRIOR_KEYS, build_sdwc, gmm_logpdf, log_var, normal_logpdf
from simulations.config import ConfigError, resolve
from studies.fedsdwc_probe import encoder_shares

SHAPE = (1, 28, 28)
SHARE = 0.005  # "non-negligible": each term's gradient norm on the encoder >= 0.5% of the sum over terms


def cfg(**over):
    return resolve({"method": "fedsdwc", **over})


@pytest.fixture
def model():
    torch.manual_seed(0)
    return build_sdwc(cfg(), 10, SHAPE)


def batch(n=16, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(n, *SHAPE, generator=g), torch.randint(0, 10, (n,), generator=g)


@pytest.fixture(scope="module")
def mnist():
    from datasets import load_dataset

    return load_dataset("mnist")


# ---- Fourier amplitude mix ----------------------------------------------------------
def test_amplitude_mix_keeps_the_phase_and_mixes_the_amplitude():
    x, _ = batch(4, 1)
    partner, _ = batch(4, 2)
    out = amplitude_mix(x, partner, 0.7)
    fx, fo, fp = torch.fft.fft2(x.double()), torch.fft.fft2(out.double()), torch.fft.fft2(partner.double())
    dphase = torch.angle(fo) - torch.angle(fx)
    wrapped = torch.atan2(torch.sin(dphase), torch.cos(dphase))
    strong = fo.abs() > 1e-3
    assert wrapped[strong].abs().max() < 1e-3  # same phase
    assert torch.allclose(fo.abs(), 0.3 * fx.abs() + 0.7 * fp.abs(), atol=1e-3)  # mixed amplitude
    assert not torch.allclose(fo.abs(), fx.abs(), atol=1e-1)
    assert torch.allclose(amplitude_mix(x, partner, 0.0), x, atol=1e-5)


def test_fourier_augment_is_seeded_and_clipped():
    x, _ = batch(8)
    lo, hi = torch.tensor(-1.0).view(1, 1, 1), torch.tensor(1.0).view(1, 1, 1)
    a = fourier_augment(x, 1.0, torch.Generator().manual_seed(3), lo, hi)
    b = fourier_augment(x, 1.0, torch.Generator().manual_seed(3), lo, hi)
    assert torch.equal(a, b) and a.shape == x.shape and a.min() >= -1 and a.max() <= 1


def test_the_fourier_partner_comes_from_the_local_data_not_the_batch():
    """Partners are images of the whole pool (here 200 distinct ones), mostly outside the
    4-image batch; the augmented image mixes in exactly the partner it was given."""
    g = torch.Generator().manual_seed(0)
    pool = torch.randn(200, *SHAPE, generator=g)
    from datasets.registry import ArrayDataset

    data = ArrayDataset(pool, torch.zeros(200, dtype=torch.long))
    x = pool[:4]
    partners = draw_partners(data, 64, torch.Generator().manual_seed(1))
    match = (partners.flatten(1)[:, None] == pool.flatten(1)[None]).all(-1)  # [64, 200]
    assert match.any(1).all()  # every partner is an image of the pool
    assert match[:, 4:].any(1).float().mean() > 0.9  # almost all from outside the batch
    out = fourier_augment(x, 1.0, torch.Generator().manual_seed(2), partners=partners[:4])
    lam = torch.rand(4, 1, 1, 1, generator=torch.Generator().manual_seed(2))
    assert torch.allclose(out, amplitude_mix(x, partners[:4], lam), atol=1e-5)


def test_random_flip_mirrors_about_half_the_images():
    x, _ = batch(200)
    out = random_flip(x, torch.Generator().manual_seed(0))
    same = (out == x).flatten(1).all(1)
    mirrored = (out == x.flip(-1)).flatten(1).all(1)
    assert (same | mirrored).all() and 60 < int(mirrored.sum()) < 140


# ---- densities ------------------------------------------------------------------------
def test_mixture_density_matches_torch_distributions():
    g = torch.Generator().manual_seed(0)
    x, means = torch.randn(50, 4, generator=g), torch.randn(3, 4, generator=g)
    logvars, logits = torch.randn(3, 4, generator=g) * 0.5, torch.randn(3, generator=g)
    ref = torch.distributions.MixtureSameFamily(
        torch.distributions.Categorical(logits=logits),
        torch.distributions.Independent(torch.distributions.Normal(means, (0.5 * logvars).exp()), 1))
    assert torch.allclose(gmm_logpdf(x, means, logvars, logits), ref.log_prob(x), atol=1e-5)
    one = gmm_logpdf(x, means[:1], logvars[:1], logits[:1])
    assert torch.allclose(one, normal_logpdf(x, means[0], logvars[0]), atol=1e-5)
    assert torch.allclose(log_var(torch.tensor([0.0])).exp().sqrt(), torch.log1p(torch.tensor([1.0])), atol=1e-5)


# ---- the loss terms -----------------------------------------------------------------
def test_terms_are_finite_and_one_sample_gives_the_plain_elbo(model):
    """With M = 1 the CSG weights are 1: prior = log q - log p at the sample and
    ce = -log p(y | s); recon is 0 without the decoder."""
    x, y = batch()
    terms = sdwc_terms(model, x, y, gamma=0.5, mc_samples=3)
    assert set(terms) == set(TERMS) and all(v.ndim == 0 and torch.isfinite(v) for v in terms.values())
    torch.manual_seed(1)
    t1 = sdwc_terms(model, x, y, gamma=0.0, mc_samples=1)
    torch.manual_seed(1)  # the same draws, by hand
    h_s, h_v = model.heads(x)
    mu_s, lv_s = model._gauss(model.q_s(h_s))
    mu_v, lv_v = model._gauss(model.q_v(h_v))
    s0 = mu_s + (0.5 * lv_s).exp() * torch.randn(1, *mu_s.shape)
    v = mu_v + (0.5 * lv_v).exp() * torch.randn(1, *mu_v.shape)
    s = s0 + model.link(v)
    ce = torch.nn.functional.cross_entropy(model.classifier(s[0]), y)
    det = torch.nn.functional.cross_entropy(model.classifier(mu_s + model.link(mu_v)), y)
    kl = (normal_logpdf(s0, mu_s, lv_s) + normal_logpdf(v, mu_v, lv_v)
          - model.log_prior("s", s0) - model.log_prior("v", v)).mean()
    assert t1["ce-sampled"].item() == pytest.approx(ce.item(), rel=1e-5)
    assert t1["ce"].item() == pytest.approx(det.item(), rel=1e-5)  # the deterministic path
    assert t1["prior"].item() == pytest.approx(kl.item(), rel=1e-5)
    assert t1["intervention"] == 0
    flat = build_sdwc(cfg(**{"sdwc-generative": False}), 10, SHAPE)
    assert flat.decoder is None and sdwc_terms(flat, x, y, 0.5)["recon"] == 0


def encoder_grad(model, x, y, c) -> torch.Tensor:
    """The full loss's gradient on the encoder, flattened (same noise draws every call)."""
    torch.manual_seed(5)
    model.zero_grad()
    sdwc_loss(model, x, y, c)[0].backward()
    return torch.cat([p.grad.flatten() for p in model.encoder.parameters()])


@pytest.mark.parametrize("key", ["sdwc-beta", "lambda-intervention"])
def test_each_weight_comes_from_the_config_and_reaches_the_encoder(model, key):
    """The loss is linear in each weight: the encoder gradient at weight 2a minus weight 0
    is twice that at a, and not 0 (the weighted terms move the encoder)."""
    x, y = batch(16)
    g0, ga, g2a = (encoder_grad(model, x, y, cfg(**{key: w})) for w in (0.0, 0.05, 0.1))
    assert (ga - g0).norm() > 1e-4 * g0.norm()
    assert torch.allclose(g2a - g0, 2 * (ga - g0), rtol=1e-3, atol=1e-6)


@pytest.mark.parametrize("key, a, b, weight", [("intervention-gamma", 0.5, 1.0, "lambda-intervention"),
                                                ("sdwc-x-std", 0.1, 0.3, "sdwc-beta")])
def test_each_scale_comes_from_the_config_and_reaches_the_encoder(model, key, a, b, weight):
    """The two scales inside the weighted terms (the intervention noise gamma, the std of
    p(x | s, v)) change the encoder gradient, and only through their term: with that
    term's weight at 0 they change nothing."""
    x, y = batch(16)
    on = {weight: 0.1}
    assert (encoder_grad(model, x, y, cfg(**on, **{key: a})) - encoder_grad(model, x, y, cfg(**on, **{key: b}))).norm() \
        > 1e-3 * encoder_grad(model, x, y, cfg(**on, **{key: a})).norm()
    off = {weight: 0.0}
    assert torch.equal(encoder_grad(model, x, y, cfg(**off, **{key: a})), encoder_grad(model, x, y, cfg(**off, **{key: b})))


def test_the_kl_switch_removes_only_the_prior_term(model):
    """``sdwc-kl`` false: the gradient differs from the full loss's by exactly beta times
    the prior term's."""
    x, y = batch(16)
    on = {"sdwc-beta": 0.1, "sdwc-x-std": 3.0}  # a small reconstruction term: float32 differences stay exact
    c_on, c_off = cfg(**on), cfg(**on, **{"sdwc-kl": False})
    diff = encoder_grad(model, x, y, c_on) - encoder_grad(model, x, y, c_off)
    torch.manual_seed(5)
    model.zero_grad()
    terms = sdwc_terms(model, x, y, 1.0, 1, float(c_on["sdwc-x-std"]))
    (0.1 * terms["prior"]).backward()
    prior = torch.cat([p.grad.flatten() for p in model.encoder.parameters()])
    assert prior.norm() > 0 and torch.allclose(diff, prior, rtol=1e-3, atol=1e-7)


def test_at_beta_zero_prior_and_reconstruction_give_no_gradient(model):
    x, y = batch(16)
    c = cfg(**{"sdwc-beta": 0.0})
    torch.manual_seed(5)
    model.zero_grad()
    sdwc_loss(model, x, y, c)[0].backward()
    prior_and_decoder = [getattr(model, k) for k in PRIOR_KEYS] + list(model.decoder.parameters())
    assert all(p.grad is None or not p.grad.any() for p in prior_and_decoder)
    full = encoder_grad(model, x, y, c)
    torch.manual_seed(5)
    model.zero_grad()
    terms = sdwc_terms(model, x, y, float(c["intervention-gamma"]), 1, float(c["sdwc-x-std"]))
    (terms["ce"] + float(c["lambda-intervention"]) * terms["intervention"]).backward()
    assert torch.allclose(full, torch.cat([p.grad.flatten() for p in model.encoder.parameters()]), atol=1e-7)


def test_intervention_is_zero_without_noise_or_link_and_positive_otherwise(model):
    x, y = batch()
    assert sdwc_terms(model, x, y, gamma=0.0)["intervention"] == 0
    assert sdwc_terms(model, x, y, gamma=1.0)["intervention"] > 1e-3
    nolink = build_sdwc(cfg(**{"sdwc-link": False}), 10, SHAPE)
    assert nolink.link is None and sdwc_terms(nolink, x, y, gamma=1.0)["intervention"] == 0


def test_probe_measures_the_link_and_the_intervention(model):
    """The sweep probe: no link -> nothing flips and the shift is 0; gamma 0 -> KL 0; a
    link scaled x10 moves more predictions than the link as initialized."""
    from studies.fedsdwc_probe import probe

    x, _ = batch(64)
    nolink = build_sdwc(cfg(**{"sdwc-link": False}), 10, SHAPE).eval()
    p0 = probe(nolink, x, gamma=1.0)
    assert p0["link-flip"] == p0["link-ratio"] == p0["intervention-kl"] == p0["intervention-flip"] == 0
    assert probe(model.eval(), x, gamma=0.0)["intervention-kl"] == pytest.approx(0, abs=1e-7)
    base = probe(model, x, gamma=1.0)
    with torch.no_grad():
        model.link[-1].weight.mul_(10)
        model.link[-1].bias.mul_(10)
    strong = probe(model, x, gamma=1.0)
    assert strong["link-ratio"] == pytest.approx(10 * base["link-ratio"], rel=1e-4)
    assert strong["link-flip"] > base["link-flip"] and strong["intervention-kl"] > base["intervention-kl"] > 0


def train_steps(net, data, c, steps: int) -> None:
    """``steps`` SGD steps of the full objective on shuffled batches of 32 of ``data``
    (mnist's training images are ordered by class)."""
    opt = torch.optim.SGD(net.parameters(), lr=float(c["lr"]), momentum=float(c["momentum"]))
    order = torch.randperm(len(data), generator=torch.Generator().manual_seed(0))
    for step in range(steps):
        idx = order[32 * step:32 * step + 32]
        loss, _ = sdwc_loss(net, *data[idx], c)
        opt.zero_grad()
        loss.backward()
        opt.step()


@pytest.fixture(scope="module")
def warmed(mnist):
    """A model at the default keys after 30 SGD steps of the full objective on MNIST."""
    torch.manual_seed(0)
    c = cfg()
    net = build_sdwc(c, 10, SHAPE)
    train_steps(net, mnist.train, c, 30)
    return net, c


def test_every_term_moves_the_encoder_at_the_defaults(warmed, mnist):
    """Each term's weighted gradient on the shared encoder, averaged over 4 held-out
    batches, as a share of the sum over terms. At CSG's weights (beta 1e-4, x-std 0.1)
    cross-entropy, reconstruction and intervention each give >= SHARE (measured: 0.70,
    0.28, 0.022); the ELBO's prior (KL) and sampled cross-entropy terms are small but not
    zero (0.0008, 0.0001): at this beta the KL mostly shapes the posterior stds, which the
    encoder does not hold (the `fedsdwc-no-kl` arm measures what it does)."""
    net, c = warmed
    held_out = [mnist.test[torch.arange(32 * i, 32 * i + 32)] for i in range(4)]
    shares = encoder_shares(net, held_out, c)
    assert min(shares[k] for k in ("ce", "recon", "intervention")) >= SHARE, shares
    assert min(shares["prior"], shares["ce-sampled"]) > 0, shares


def test_the_shares_follow_the_objectives_weights(warmed, mnist):
    """The probe's shares weight each term as the objective does: they sum to 1, the KL
    gives none with ``sdwc-kl`` off, and at beta 1e-7 (1,000 times less) the ELBO's terms
    fall by more than 100 times while cross-entropy's share grows."""
    net, c = warmed
    held_out = [mnist.test[torch.arange(32 * i, 32 * i + 32)] for i in range(2)]

    def shares(**over):
        torch.manual_seed(0)
        return encoder_shares(net, held_out, {**c, **over})

    base, no_kl, tiny = shares(), shares(**{"sdwc-kl": False}), shares(**{"sdwc-beta": 1e-7})
    assert sum(base.values()) == pytest.approx(1.0) and base["prior"] > 0
    assert no_kl["prior"] == 0 and no_kl["recon"] == pytest.approx(base["recon"] / (1 - base["prior"]))
    assert tiny["recon"] < base["recon"] / 100 and tiny["ce"] > base["ce"]


def test_removing_the_link_changes_predictions(warmed, mnist):
    """Zeroing the link g(v) changes >= 5% of the predictions on 200 held-out images (the
    link is not inert)."""
    net, _ = warmed
    net.eval()
    x, _ = mnist.test[torch.arange(200)]
    with torch.no_grad():
        with_link = net(x).argmax(1)
        link, net.link = net.link, None
        without = net(x).argmax(1)
        net.link = link
    assert (with_link != without).float().mean() >= 0.05


def test_one_step_reduces_the_loss(model):
    x, y = batch(32)
    c = cfg()
    opt = torch.optim.SGD(model.parameters(), lr=0.01)

    def loss_at(seed):
        torch.manual_seed(seed)  # the same reparameterization noise before and after the step
        return sdwc_loss(model, x, y, c)[0]

    before = loss_at(7)
    opt.zero_grad()
    before.backward()
    opt.step()
    with torch.no_grad():
        assert loss_at(7) < before


@pytest.mark.parametrize("over", [{}, {"sdwc-kl": False}, {"sdwc-beta": 0.5, "lambda-intervention": 0.0}])
def test_the_loss_is_the_terms_weighted_as_term_weights_says(model, over):
    x, y = batch(16)
    c = cfg(**over)
    torch.manual_seed(3)
    loss, terms = sdwc_loss(model, x, y, c)
    weights = term_weights(c)
    assert set(weights) == set(terms) and weights["ce"] == 1.0
    assert (weights["prior"] == 0.0) == (not c["sdwc-kl"])
    assert torch.allclose(loss, sum(w * terms[k] for k, w in weights.items()), rtol=1e-6)


def test_forward_is_the_mean_path(model):
    x, _ = batch(4)
    model.eval()
    logits = model(x)
    assert logits.shape == (4, 10)
    assert torch.equal(logits, model.mean_logits(*model.heads(x)))
    assert torch.equal(logits, model(x))  # no sampling at inference


def test_wideresnet_encoder_and_rgb_decoder():
    net = build_sdwc(cfg(model="wrn-16-1"), 10, (3, 32, 32)).eval()
    x = torch.randn(2, 3, 32, 32)
    assert net(x).shape == (2, 10)
    assert net.decoder(torch.zeros(2, 2 * net.classifier.in_features)).shape == (2, 3, 32, 32)


# ---- keys, variants, the client ----------------------------------------------------------
def test_bad_keys_fail_clearly():
    for key, value in (("sdwc-latent-dim", 0), ("sdwc-fourier-alpha", 2.0), ("sdwc-x-std", 0.0),
                       ("intervention-gamma", -1.0)):
        with pytest.raises(ConfigError, match=key):
            cfg(**{key: value})
    with pytest.raises(ConfigError, match="renamed: pass sdwc-fourier-alpha"):
        cfg(**{"fourier-alpha": 0.5})


def test_each_ablation_is_a_method_with_its_overrides():
    from simulations.methods import METHODS

    assert set(VARIANTS) <= set(METHODS)
    assert variant_config(cfg(method="fedsdwc-no-fourier"))["sdwc-fourier-alpha"] == 0
    assert variant_config(cfg(method="fedsdwc-no-link"))["sdwc-link"] is False
    assert variant_config(cfg(method="fedsdwc-no-intervention"))["lambda-intervention"] == 0
    assert variant_config(cfg(method="fedsdwc-no-generative"))["sdwc-generative"] is False
    assert variant_config(cfg(method="fedsdwc-no-kl"))["sdwc-kl"] is False
    assert variant_config(cfg()) == cfg()


def client_data(mnist, n=64):
    from clients.base import ClientData

    return ClientData(0, mnist.train.subset(range(n)), mnist.train.subset(range(n, n + 16)), 10, SHAPE)


def test_client_keeps_its_own_prior_and_reports_its_terms(mnist):
    from clients.fedsdwc import PRIOR_RECORD, FedSDWCClient

    client = FedSDWCClient(cfg(**{"local-epochs": 1}), client_data(mnist))
    start = {k: v.clone() for k, v in client.model.state_dict().items()}
    reply = client.train({"arrays": start}, {"server-round": 1}, {})
    assert reply.metrics["num-examples"] == 64
    assert all(math.isfinite(reply.metrics[f"train-{k}"]) for k in TERMS)
    kept = reply.keep[PRIOR_RECORD]
    assert set(kept) == set(PRIOR_KEYS) and not torch.equal(kept["prior_s_mean"], start["prior_s_mean"])
    # next round: the server's (averaged) prior is replaced by the client's own before training
    own = {k: v + 1.0 for k, v in kept.items()}
    client.cfg = {**client.cfg, "local-epochs": 0}
    reply = client.train({"arrays": start}, {"server-round": 2}, {PRIOR_RECORD: own})
    assert torch.equal(reply.arrays["arrays"]["prior_v_std"], own["prior_v_std"])
    assert torch.equal(reply.arrays["arrays"]["encoder.0.weight"], start["encoder.0.weight"])


def test_fedavg_fourier_client_trains_the_plain_model_on_augmented_batches(mnist):
    from clients.fedsdwc import FourierClient

    client = FourierClient(cfg(method="fedavg-fourier", **{"local-epochs": 1}), client_data(mnist, 32))
    start = {k: v.clone() for k, v in client.model.state_dict().items()}
    assert "classifier.weight" in start and not any(k.startswith("prior_") for k in start)
    reply = client.train({"arrays": start}, {"server-round": 1}, {})
    assert math.isfinite(reply.metrics["train-loss"])
    assert not torch.equal(reply.arrays["arrays"]["classifier.weight"], start["classifier.weight"])


# ---- end to end -----------------------------------------------------------------------
def test_end_to_end_in_process(tmp_path):
    """One round of FedSDWC on two clients through Flower's in-process grid (--local), with
    the OOD suite's columns in the results."""
    import json

    from conftest import run_sweep

    base = {"dataset": "mnist", "num-server-rounds": 1, "num-supernodes": 2, "local-epochs": 1,
            "local-test-fraction": 0.9, "fraction-evaluate": 0.0, "corruptions": "gaussian_noise,contrast",
            "ood-datasets": "digits,blobs", "ood-max-samples": 100, "data-root": str(tmp_path / "data")}
    code, frame, out = run_sweep(tmp_path, base, {"method": ["fedsdwc", "fedsdwc-no-intervention"]}, "--local")
    assert code == 0, (out / "method-fedsdwc" / "flwr.log").read_text()[-3000:]
    last = frame[(frame["round"] == 1) & (frame["method"] == "fedsdwc")].iloc[0]
    # an ablation's run records the value it trains with, not the one it was given
    ablation = json.loads((out / "method-fedsdwc-no-intervention" / "config.json").read_text())
    assert ablation["lambda-intervention"] == 0 and last["lambda-intervention"] == cfg()["lambda-intervention"] > 0
    assert (frame.loc[frame["method"] == "fedsdwc-no-intervention", "lambda-intervention"] == 0).all()
    for col in ("accuracy", "corrupt-accuracy", "corrupt-accuracy-gaussian_noise", "auroc", "fpr95",
                "fpr95-foogd", "auroc-energy", "auroc-blobs", "fpr95-digits", "train-recon"):
        assert 0.0 <= last[col] <= 1.0 or col == "train-recon", col
    assert math.isfinite(last["train-recon"])


def test_a_run_imports_only_its_own_method():
    """The registry imports a method's modules on first use: a module of another method
    that does not import (e.g. mid-edit in the working tree that ``flwr run`` packs into
    the app) cannot fail a FedSDWC run."""
    import json
    import subprocess
    import sys

    code = ("import json, sys; from simulations.methods import METHODS; "
            "METHODS['fedsdwc'].strategy, METHODS['fedsdwc'].client; "
            "print(json.dumps(sorted(m for m in sys.modules if m.split('.')[0] in ('clients', 'strategies'))))")
    out = subprocess.run([sys.executable, "-c", code], cwd=Path(__file__).resolve().parent.parent,
                         capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr[-2000:]
    loaded = json.loads(out.stdout.strip().splitlines()[-1])
    assert "clients.fedsdwc" in loaded and "strategies.fedsdwc" in loaded
    assert not {"clients.fedlsi", "clients.gifd", "clients.fedhip", "strategies.fedlsi", "strategies.gifd",
                "strategies.fedhip"} & set(loaded), loaded

