"""FedSDWC client (Huang, Zhang, Tang, Yang, arXiv 2511.09036): the local objective.

Per batch (the model is ``models/causal.py``; readings of the paper are tabled in
``docs/methods/fedsdwc.md``):

1. Fourier augmentation (Xu et al. 2021, as FOOGD's ``FourierDGDataset``): each image and a
   partner drawn from the client's whole local training data are flipped horizontally with
   probability 1/2 (``sdwc-flip``, FOOGD's pre-transform); the image's amplitude spectrum is
   mixed with the partner's, ``lam ~ U(0, sdwc-fourier-alpha)``, phase kept; the batch is
   ``[x; x_aug]`` (x flipped as its augmented copy is).
2. The paper's Eq. (2)-(3), the CSG-style ELBO of (x, y), with M = ``sdwc-mc-samples``
   reparameterized samples (s_i, v_i) ~ q(s, v | x)::

       q(y | x) = 1/M sum_i p(y | s_i)
       ELBO = log q(y | x) + sum_i w_i [log p(s_i, v_i) - log q(s_i, v_i | x) + log p(x | s_i, v_i)],
       w_i = p(y | s_i) / sum_j p(y | s_j)

   (for M = 1 the weight is 1 and the bracket is the usual ELBO). As in CSG's code, the
   loss is ``ce + sdwc-beta * (-ELBO)``, where ``ce`` is cross-entropy on the deterministic
   path ``classifier(mu_s + g(mu_v))`` (CSG's ``wsup`` 1 on its discriminator, ``wgen`` on
   the ELBO). Terms, reported as ``train-<term>``: ``ce``; ``ce-sampled`` = -log q(y|x);
   ``prior`` = -sum_i w_i [log p(s,v) - log q] (the KL term; ``sdwc-kl`` false drops it);
   ``recon`` = -sum_i w_i log p(x|s,v) (up to its constant, per image).
3. Interventional consistency, Eq. (4): ``h_v' = h_v + intervention-gamma * eps``,
   ``KL(p(y | h_s, h_v) || p(y | h_s, h_v'))`` on the mean path, weighted by
   ``lambda-intervention``; gradients flow through both sides, as written.

The prior p(s, v) is client-specific (the paper's causal invariance: domain shift lives
only in p(s, v)): each client keeps its own mixture means across rounds.

Ablations are methods of the registry (same classes): ``fedsdwc-no-fourier``,
``fedsdwc-no-link``, ``fedsdwc-no-intervention``, ``fedsdwc-no-generative``,
``fedsdwc-no-kl`` (no prior / KL term), and
``fedavg-fourier`` (FedAvg's model and loss on the same Fourier-augmented batches).
"""

from __future__ import annotations

import math

import torch
from torch.nn import functional as F

from datasets.registry import ArrayDataset
from models.causal import PRIOR_KEYS, SDWCNet, build_sdwc, normal_logpdf

from .base import Client, ClientData, Reply, Tensors, batches, device_of

TERMS = ("ce", "ce-sampled", "prior", "recon", "intervention")
ELBO_TERMS = ("ce-sampled", "recon", "prior")  # the -ELBO's, each weighted sdwc-beta (term_weights)
PRIOR_RECORD = "sdwc-prior"
# Each ablation: the method name -> the keys it overrides.
VARIANTS: dict[str, dict] = {
    "fedsdwc": {},
    "fedsdwc-no-fourier": {"sdwc-fourier-alpha": 0.0},
    "fedsdwc-no-link": {"sdwc-link": False},
    "fedsdwc-no-intervention": {"lambda-intervention": 0.0},
    "fedsdwc-no-generative": {"sdwc-generative": False},
    "fedsdwc-no-kl": {"sdwc-kl": False},
    "fedavg-fourier": {},
}


def variant_config(cfg: dict) -> dict:
    """``cfg`` with the overrides of its method's ablation."""
    return {**cfg, **VARIANTS.get(cfg["method"], {})}


def amplitude_mix(x: torch.Tensor, partner: torch.Tensor, lam: torch.Tensor | float) -> torch.Tensor:
    """Keep the phase of ``x``, mix the amplitude: ``(1 - lam) |F(x)| + lam |F(partner)|``
    (per channel, full spectrum; ``lam`` a float or a [B,1,1,1] tensor)."""
    fx, fp = torch.fft.fft2(x), torch.fft.fft2(partner)
    amp = (1 - lam) * fx.abs() + lam * fp.abs()
    return torch.fft.ifft2(torch.polar(amp, torch.angle(fx))).real


def random_flip(x: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
    """Each image mirrored left-right with probability 1/2 (torchvision's RandomHorizontalFlip)."""
    flip = (torch.rand(len(x), generator=generator) < 0.5).to(x.device)
    return torch.where(flip.view(-1, *([1] * (x.ndim - 1))), x.flip(-1), x)


def draw_partners(pool, n: int, generator: torch.Generator | None = None) -> torch.Tensor:
    """``n`` images drawn uniformly (with replacement) from the dataset ``pool``."""
    idx = torch.randint(len(pool), (n,), generator=generator)
    if isinstance(pool, ArrayDataset):
        return pool[idx][0]
    return torch.stack([pool[int(i)][0] for i in idx])


def fourier_augment(x: torch.Tensor, alpha: float, generator: torch.Generator | None = None,
                    lo: torch.Tensor | None = None, hi: torch.Tensor | None = None,
                    partners: torch.Tensor | None = None) -> torch.Tensor:
    """Amplitude mix of each image with its partner (``partners[i]``; default a random other
    image of the batch), ``lam ~ U(0, alpha)`` per image; clipped to the valid pixel range
    [lo, hi] when given."""
    b = len(x)
    if partners is None:
        partners = x[torch.randperm(b, generator=generator).to(x.device)]
    lam = torch.rand(b, 1, 1, 1, generator=generator) * alpha
    out = amplitude_mix(x, partners.to(x.device), lam.to(x.device))
    if lo is not None:
        out = torch.maximum(torch.minimum(out, hi), lo)
    return out


def sdwc_terms(model: SDWCNet, x: torch.Tensor, y: torch.Tensor, gamma: float, mc_samples: int = 1,
               x_std: float = 1.0) -> dict[str, torch.Tensor]:
    """The unweighted loss terms (batch means), see the module docstring."""
    m = max(int(mc_samples), 1)
    h_s, h_v = model.heads(x)
    mu_s, lv_s = model._gauss(model.q_s(h_s))
    mu_v, lv_v = model._gauss(model.q_v(h_v))
    s0 = mu_s + (0.5 * lv_s).exp() * torch.randn(m, *mu_s.shape, device=x.device)  # [M, B, d]
    v = mu_v + (0.5 * lv_v).exp() * torch.randn(m, *mu_v.shape, device=x.device)
    s = s0 + model.shift(v)
    log_py = -F.cross_entropy(model.classifier(s).flatten(0, 1), y.repeat(m), reduction="none").view(m, -1)
    log_qy = torch.logsumexp(log_py, 0) - math.log(m)  # log q(y | x), [B]
    w = torch.softmax(log_py, 0)  # p(y | s_i) / sum_j p(y | s_j)
    # log p(s, v) - log q(s, v | x): s = s0 + g(v) is a unit-Jacobian shift, so p(s | v) = p_s0(s0)
    log_prior = model.log_prior("v", v) + model.log_prior("s", s0)
    log_q = normal_logpdf(s0, mu_s, lv_s) + normal_logpdf(v, mu_v, lv_v)
    mean_logits = model.classifier(mu_s + model.shift(mu_v))  # the deterministic (mean) path
    ce = F.cross_entropy(mean_logits, y)
    terms = {"ce": ce, "ce-sampled": -log_qy.mean(), "prior": -(w * (log_prior - log_q)).sum(0).mean()}
    if model.decoder is not None:
        x_hat = model.decoder(torch.cat([s, v], -1))  # [M, B, C, H, W]
        log_px = -0.5 * ((x - x_hat) ** 2).flatten(2).sum(-1) / x_std**2
        terms["recon"] = -(w * log_px).sum(0).mean()
    else:
        terms["recon"] = torch.zeros((), device=x.device)
    if gamma > 0 and model.link is not None:
        clean = mean_logits
        intervened = model.mean_logits(h_s, h_v + gamma * torch.randn_like(h_v))
        terms["intervention"] = F.kl_div(F.log_softmax(intervened, 1), F.log_softmax(clean, 1),
                                         reduction="batchmean", log_target=True)
    else:  # without the link, the variant feature does not reach the prediction
        terms["intervention"] = torch.zeros((), device=x.device)
    return terms


def term_weights(cfg: dict) -> dict[str, float]:
    """Each term's weight in the objective: cross-entropy 1, the -ELBO's terms ``sdwc-beta``
    (the KL none where ``sdwc-kl`` is off), the intervention ``lambda-intervention``."""
    beta = float(cfg["sdwc-beta"])
    return {"ce": 1.0, "ce-sampled": beta, "recon": beta, "prior": beta if cfg["sdwc-kl"] else 0.0,
            "intervention": float(cfg["lambda-intervention"])}


def sdwc_loss(model: SDWCNet, x: torch.Tensor, y: torch.Tensor, cfg: dict) -> tuple[torch.Tensor, dict]:
    terms = sdwc_terms(model, x, y, float(cfg["intervention-gamma"]), int(cfg["sdwc-mc-samples"]),
                       float(cfg["sdwc-x-std"]))
    w = term_weights(cfg)
    # sum_k w_k * term_k with the ELBO's common weight factored out, as the recorded studies ran
    elbo = terms["ce-sampled"] + terms["recon"] + (terms["prior"] if w["prior"] else 0.0)  # -ELBO
    loss = terms["ce"] + w["recon"] * elbo + w["intervention"] * terms["intervention"]
    return loss, terms


def pixel_bounds(data) -> tuple[torch.Tensor | None, torch.Tensor | None]:
    """Normalized values of pixels 0 and 1 (clip range of the augmentation), if known."""
    if isinstance(data, ArrayDataset) and data.x.dtype == torch.uint8:
        return (0.0 - data.mean) / data.std, (1.0 - data.mean) / data.std
    return None, None


class FourierClient(Client):
    """Local SGD on ``loss(model, x, y)`` over ``[x; fourier_augment(x)]`` batches:
    FedAvg's cross-entropy here (``fedavg-fourier``), FedSDWC's objective in the subclass."""

    terms: tuple[str, ...] = ()

    def __init__(self, cfg: dict, data: ClientData):
        super().__init__(cfg, data)
        lo, hi = pixel_bounds(data.train)
        self.lo = lo.to(self.device) if lo is not None else None
        self.hi = hi.to(self.device) if hi is not None else None

    def loss(self, model, x, y) -> tuple[torch.Tensor, dict]:
        return F.cross_entropy(model(x), y), {}

    def local_sgd(self, config: dict) -> dict[str, float]:
        seed = self.seed(int(config.get("server-round", 0)))
        torch.manual_seed(seed)
        gen = torch.Generator().manual_seed(seed + 1)
        model = self.model.train()
        opt = torch.optim.SGD(model.parameters(), lr=float(self.cfg["lr"]), momentum=float(self.cfg["momentum"]),
                              weight_decay=float(self.cfg["weight-decay"]))
        alpha, flip = float(self.cfg["sdwc-fourier-alpha"]), bool(self.cfg["sdwc-flip"])
        sums = dict.fromkeys(("loss", *self.terms), 0.0)
        steps = 0
        for epoch in range(int(self.cfg["local-epochs"])):
            for x, y in batches(self.data.train, int(self.cfg["batch-size"]), True, seed + epoch):
                x, y = x.to(self.device), y.to(self.device)
                if alpha > 0:  # FOOGD's pair: (flipped x, x mixed with a flipped partner of the local data)
                    partners = draw_partners(self.data.train, len(x), gen).to(self.device)
                    if flip:
                        x, partners = random_flip(x, gen), random_flip(partners, gen)
                    x = torch.cat([x, fourier_augment(x, alpha, gen, self.lo, self.hi, partners)])
                    y = torch.cat([y, y])
                loss, terms = self.loss(model, x, y)
                opt.zero_grad()
                loss.backward()
                opt.step()
                sums["loss"] += loss.item()
                for k in self.terms:
                    sums[k] += float(terms[k].detach())
                steps += 1
        metrics = {"train-loss": sums["loss"] / max(steps, 1), "num-examples": len(self.data.train)}
        metrics.update({f"train-{k}": sums[k] / max(steps, 1) for k in self.terms})
        return metrics

    def train(self, arrays: dict[str, Tensors], config: dict, stored: dict[str, Tensors]) -> Reply:
        self.set_weights(arrays["arrays"])
        metrics = self.local_sgd(config)
        return Reply({"arrays": {k: v.detach().cpu() for k, v in self.model.state_dict().items()}}, metrics)


class FedSDWCClient(FourierClient):
    terms = TERMS

    def __init__(self, cfg: dict, data: ClientData):
        cfg = variant_config(cfg)
        self.cfg, self.data = cfg, data
        self.device = device_of(cfg)
        self.model = build_sdwc(cfg, data.num_classes, data.input_shape).to(self.device)
        lo, hi = pixel_bounds(data.train)
        self.lo = lo.to(self.device) if lo is not None else None
        self.hi = hi.to(self.device) if hi is not None else None

    def loss(self, model, x, y):
        return sdwc_loss(model, x, y, self.cfg)

    def train(self, arrays: dict[str, Tensors], config: dict, stored: dict[str, Tensors]) -> Reply:
        self.set_weights(arrays["arrays"])
        own = stored.get(PRIOR_RECORD)
        if own and set(own) == set(PRIOR_KEYS):  # this client's p(s, v) from its last round
            with torch.no_grad():
                for key in PRIOR_KEYS:
                    if own[key].shape == getattr(self.model, key).shape:
                        getattr(self.model, key).copy_(own[key])
        metrics = self.local_sgd(config)
        state = {k: v.detach().cpu() for k, v in self.model.state_dict().items()}
        return Reply({"arrays": state}, metrics, keep={PRIOR_RECORD: {k: state[k].clone() for k in PRIOR_KEYS}})
