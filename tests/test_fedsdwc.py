"""FedSDWC: Fourier augmentation, the loss terms, one training step, and one tiny
end-to-end run through Flower with the OOD suite on."""

import math
from pathlib import Path

import pytest
import torch

from clients.fedsdwc import TERMS, amplitude_mix, fourier_augment, sdwc_loss, sdwc_terms
from models.causal import build_sdwc, gaussian_kl, gmm_kl_upper
from simulations.config import ConfigError, resolve

SHAPE = (1, 28, 28)


def cfg(**over):
    return resolve({"method": "fedsdwc", **over})


@pytest.fixture
def model():
    torch.manual_seed(0)
    return build_sdwc(cfg(), 10, SHAPE)


def batch(n=16, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(n, *SHAPE, generator=g), torch.randint(0, 10, (n,), generator=g)


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


# ---- the loss terms -----------------------------------------------------------------
def test_kl_helpers_are_nonnegative_and_exact_for_one_component():
    g = torch.Generator().manual_seed(0)
    mu, lv = torch.randn(64, 8, generator=g), torch.randn(64, 8, generator=g)
    means = torch.randn(5, 8, generator=g)
    assert (gmm_kl_upper(mu, lv, means) >= 0).all()
    assert torch.allclose(gmm_kl_upper(mu, lv, means[:1]), gaussian_kl(mu, lv, means[:1], torch.zeros(1, 8)),
                          atol=1e-5)
    assert gaussian_kl(mu, lv, mu, lv).abs().max() < 1e-6
    # upper bound of the mixture KL: a Monte Carlo estimate stays below it (up to MC noise)
    s = mu[:1] + (0.5 * lv[:1]).exp() * torch.randn(20000, 8, generator=g)
    log_q = torch.distributions.Normal(mu[:1], (0.5 * lv[:1]).exp()).log_prob(s).sum(-1)
    log_p = torch.logsumexp(torch.distributions.Normal(means, 1.0).log_prob(s.unsqueeze(1)).sum(-1), 1) - math.log(5)
    assert (log_q - log_p).mean() <= gmm_kl_upper(mu[:1], lv[:1], means)[0] + 0.1


def test_loss_terms_are_finite_and_kls_nonnegative(model):
    x, y = batch()
    terms = sdwc_terms(model, x, y, gamma=0.5, mc_samples=2)
    assert set(terms) == set(TERMS)
    for name, value in terms.items():
        assert value.ndim == 0 and torch.isfinite(value), name
    for name in ("kl-semantic", "kl-variant", "kl-link", "intervention"):
        assert terms[name] >= 0, name


def test_intervention_is_zero_without_noise_and_positive_with_it(model):
    x, y = batch()
    assert sdwc_terms(model, x, y, gamma=0.0)["intervention"] == 0
    with torch.no_grad():  # a link strong enough to move the prediction
        model.q_link[-1].weight.mul_(100)
    assert sdwc_terms(model, x, y, gamma=1.0)["intervention"] > 0


def test_one_step_reduces_the_loss(model):
    x, y = batch(32)
    c = cfg()
    opt = torch.optim.SGD(model.parameters(), lr=0.05)

    def loss_at(seed):
        torch.manual_seed(seed)  # the same reparameterization noise before and after the step
        return sdwc_loss(model, x, y, c)[0]

    before = loss_at(7)
    opt.zero_grad()
    before.backward()
    opt.step()
    with torch.no_grad():
        assert loss_at(7) < before


def test_forward_is_the_inference_path(model):
    x, _ = batch(4)
    model.eval()
    logits = model(x)
    assert logits.shape == (4, 10)
    assert torch.equal(logits, model.classifier(model.features(x)))
    assert torch.equal(logits, model(x))  # no sampling at inference


def test_wideresnet_encoder_builds():
    net = build_sdwc(cfg(model="wrn-16-1"), 10, (3, 32, 32)).eval()
    assert net(torch.randn(2, 3, 32, 32)).shape == (2, 10)


def test_bad_keys_fail_clearly():
    for key, value in (("lambda-kl-link", -1.0), ("sdwc-latent-dim", 0), ("fourier-alpha", 2.0),
                       ("sdwc-grad-clip", -1.0)):
        with pytest.raises(ConfigError, match=key):
            cfg(**{key: value})


def test_client_trains_and_reports_its_terms():
    from clients.base import ClientData
    from clients.fedsdwc import FedSDWCClient
    from datasets import load_dataset

    bundle = load_dataset("mnist")
    data = ClientData(0, bundle.train.subset(range(64)), bundle.train.subset(range(64, 80)), 10, SHAPE)
    client = FedSDWCClient(cfg(**{"local-epochs": 1}), data)
    reply = client.train({"arrays": client.model.state_dict()}, {"server-round": 1}, {})
    assert reply.metrics["num-examples"] == 64
    assert all(math.isfinite(reply.metrics[f"train-{k}"]) for k in TERMS)
    assert set(reply.arrays["arrays"]) == set(client.model.state_dict())


def test_gradient_clipping_bounds_the_step():
    """One SGD step (32 images = one batch; momentum's first step is lr * g) moves the
    weights by at most lr * sdwc-grad-clip; without clipping the first step is larger
    (the KL terms give gradient norms of about 30 at initialization)."""
    from clients.base import ClientData
    from clients.fedsdwc import FedSDWCClient
    from datasets import load_dataset

    bundle = load_dataset("mnist")
    data = ClientData(0, bundle.train.subset(range(32)), bundle.train.subset(range(32, 40)), 10, SHAPE)
    steps = {}
    for clip in (0.5, 0.0):
        client = FedSDWCClient(cfg(**{"local-epochs": 1, "sdwc-grad-clip": clip, "lr": 0.02}), data)
        start = {k: v.clone() for k, v in client.model.state_dict().items()}
        reply = client.train({"arrays": start}, {"server-round": 1}, {})
        new = reply.arrays["arrays"]
        steps[clip] = math.sqrt(sum(float((new[k] - start[k]).pow(2).sum())
                                    for k, _ in client.model.named_parameters()))
    assert steps[0.5] <= 0.02 * 0.5 * (1 + 1e-4)
    assert steps[0.0] > 0.02 * 5


# ---- end to end -----------------------------------------------------------------------
def test_end_to_end_through_flower(tmp_path):
    from conftest import run_sweep

    # local-test-fraction 0.9: each client trains on ~200 images (what is tested here is the
    # plumbing: the model through Flower, the OOD suite's columns in the results)
    base = {"dataset": "mnist", "num-server-rounds": 1, "num-supernodes": 2, "local-epochs": 1,
            "local-test-fraction": 0.9, "fraction-evaluate": 0.0, "corruptions": "gaussian_noise,contrast",
            "ood-datasets": "digits", "ood-max-samples": 100, "data-root": str(tmp_path / "data")}
    code, frame, out = run_sweep(tmp_path, base, {"method": ["fedsdwc"]})
    assert code == 0, (out / "method-fedsdwc" / "flwr.log").read_text()[-3000:]
    last = frame[frame["round"] == 1].iloc[0]
    for col in ("accuracy", "corrupt-accuracy", "corrupt-accuracy-gaussian_noise", "corrupt-accuracy-contrast",
                "auroc", "fpr95", "auroc-energy", "fpr95-energy", "auroc-digits", "fpr95-digits"):
        assert 0.0 <= last[col] <= 1.0, col


def test_a_run_imports_only_its_own_method():
    """The registry imports a method's modules on first use: a module of another method
    that does not import (e.g. mid-edit in the working tree that ``flwr run`` packs into
    the app) cannot fail a FedSDWC run. With the old registry, which imported every method,
    this reproduces exactly the end-to-end test's occasional failure "Simulation failed
    with exception: An error was encountered. Ending simulation." (Flower's message for a
    ClientApp that does not load) while other methods' files were being edited."""
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
