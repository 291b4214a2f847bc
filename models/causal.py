"""FedSDWC's causal model (arXiv 2511.09036, Sections 3.2-3.5, Fig. 2(c) and 3).

Graph: latent semantic factor s -> y; (s, v) -> x; a weak causal link v -> s. Modules::

    x -> encoder (the ``model`` key) -> f
    f -> invariant head -> h_s -> q(s0 | h_s) = N(mu_s, diag sigma_s^2)
    f -> variant head   -> h_v -> q(v  | h_v) = N(mu_v, diag sigma_v^2)
    s = s0 + g(v)          weak causal link g (an MLP), additive as in the paper's Assumption 1
    p(y | s) = softmax(classifier(s))
    p(x | s, v) = N(decoder(s, v), sigma_x^2 I)            the generative part for x
    p(s, v) = p(v) p(s | v),  p(v) = GMM_K,  p(s | v) = GMM_K shifted by g(v)

The two priors are Gaussian mixtures with K components whose means, diagonal variances
and weights are all learned (the paper's "Gaussian Mixture Models"). The mean path ``s = mu_s + g(mu_v)``
is the prediction used for evaluation and OOD scores. ``link=False`` drops g (s = s0);
``generative=False`` drops the decoder (no p(x | s, v) term). The loss is in
``clients/fedsdwc.py``; every reading of the paper is tabled in ``docs/methods/fedsdwc.md``.
"""

from __future__ import annotations

import math

import torch
from torch import nn
from torch.nn import functional as F

from . import build_model

# The client-specific part of the model, p(s, v): each mixture's means, stds (softplus), weight logits.
PRIOR_KEYS = tuple(f"prior_{z}_{p}" for z in "sv" for p in ("mean", "std", "logit"))


INIT_STD = 0.14  # posteriors start narrow: the signal is not drowned in sampling noise


def log_var(raw: torch.Tensor) -> torch.Tensor:
    """Log-variance of std = softplus(raw). With std = exp(raw / 2) instead, the first SGD steps
    (lr 0.02, momentum 0.9) sent log-variances from -4 to 26 in three steps and the loss to
    NaN on Fashion-MNIST; softplus grows linearly, so a step moves the std by at most lr * grad."""
    return 2 * torch.log(F.softplus(raw) + 1e-6)


def raw_of(std: float) -> float:
    """Inverse of softplus, for initialization."""
    return math.log(math.expm1(std))


def _mlp(din: int, hidden: int, dout: int) -> nn.Sequential:
    return nn.Sequential(nn.Linear(din, hidden), nn.ReLU(), nn.Linear(hidden, dout))


def normal_logpdf(x: torch.Tensor, mu: torch.Tensor, logvar: torch.Tensor) -> torch.Tensor:
    """log N(x; mu, diag e^logvar), summed over the last dim."""
    return -0.5 * (logvar + (x - mu) ** 2 / logvar.exp() + math.log(2 * math.pi)).sum(-1)


def gmm_logpdf(x: torch.Tensor, means: torch.Tensor, logvars: torch.Tensor, logits: torch.Tensor) -> torch.Tensor:
    """log sum_k pi_k N(x; means_k, diag e^logvars_k) for x [..., d]; means, logvars [K, d];
    pi = softmax(logits)."""
    comp = normal_logpdf(x.unsqueeze(-2), means, logvars)  # [..., K]
    return torch.logsumexp(comp + torch.log_softmax(logits, -1), -1)


class Decoder(nn.Module):
    """(s, v) -> image mean: fc then two stride-2 transposed convs (H, W divisible by 4),
    else an MLP. Output in the dataset's normalized pixel units."""

    def __init__(self, din: int, shape: tuple[int, ...], hidden: int = 128):
        super().__init__()
        c, h, w = shape
        self.shape = (c, h, w)
        if h % 4 == 0 and w % 4 == 0:
            self.net = nn.Sequential(
                nn.Linear(din, 64 * (h // 4) * (w // 4)), nn.ReLU(), nn.Unflatten(1, (64, h // 4, w // 4)),
                nn.ConvTranspose2d(64, 32, 4, 2, 1), nn.ReLU(), nn.ConvTranspose2d(32, c, 4, 2, 1))
        else:
            self.net = nn.Sequential(_mlp(din, hidden * 4, c * h * w), nn.Unflatten(1, (c, h, w)))

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        lead = z.shape[:-1]
        return self.net(z.reshape(-1, z.shape[-1])).reshape(*lead, *self.shape)


def split_encoder(backbone: nn.Module) -> tuple[nn.Module, int]:
    """(module x -> feature vector, its size) from a registry model."""
    if isinstance(getattr(backbone, "classifier", None), nn.Linear) and isinstance(backbone.features, nn.Module):
        return backbone.features, backbone.classifier.in_features
    if hasattr(backbone, "reset_classifier"):  # timm
        backbone.reset_classifier(0)
        return backbone, int(backbone.num_features)
    raise ValueError(f"cannot take an encoder from {type(backbone).__name__}: use cnn, resnet18, wrn-D-W or timm:<name>")


class SDWCNet(nn.Module):
    def __init__(self, encoder: nn.Module, feat_dim: int, num_classes: int, input_shape: tuple[int, ...],
                 latent_dim: int = 32, components: int = 10, hidden: int = 128, link: bool = True,
                 generative: bool = True):
        super().__init__()
        d = latent_dim
        self.encoder = encoder
        self.inv_head = nn.Sequential(nn.Linear(feat_dim, hidden), nn.ReLU())
        self.var_head = nn.Sequential(nn.Linear(feat_dim, hidden), nn.ReLU())
        self.q_s = _mlp(hidden, hidden, 2 * d)
        self.q_v = _mlp(hidden, hidden, 2 * d)
        self.link = _mlp(d, hidden, d) if link else None
        self.decoder = Decoder(2 * d, tuple(input_shape), hidden) if generative else None
        self.classifier = nn.Linear(d, num_classes)
        for module in (self.inv_head, self.var_head, self.q_s, self.q_v, self.link):
            for layer in module or ():  # He init: the signal keeps its scale through the ReLU layers
                if isinstance(layer, nn.Linear):
                    nn.init.kaiming_normal_(layer.weight, nonlinearity="relu")
                    nn.init.zeros_(layer.bias)
        with torch.no_grad():
            for q in (self.q_s, self.q_v):
                q[-1].bias[d:].fill_(raw_of(INIT_STD))
        g = torch.Generator().manual_seed(0)
        for z in "sv":  # a Gaussian mixture: means, diagonal log-variances, weight logits, all learned
            setattr(self, f"prior_{z}_mean", nn.Parameter(torch.randn(components, d, generator=g)))
            setattr(self, f"prior_{z}_std", nn.Parameter(torch.full((components, d), raw_of(1.0))))
            setattr(self, f"prior_{z}_logit", nn.Parameter(torch.zeros(components)))

    def log_prior(self, z: str, x: torch.Tensor) -> torch.Tensor:
        """log p_z(x) under the mixture of factor ``z`` ("s": s0, "v": v)."""
        mean, raw, logit = (getattr(self, f"prior_{z}_{p}") for p in ("mean", "std", "logit"))
        return gmm_logpdf(x, mean, log_var(raw), logit)

    @staticmethod
    def _gauss(out: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(mean, log-variance) from an MLP output; the std is softplus(raw)."""
        mu, raw = out.chunk(2, dim=-1)
        return mu, log_var(raw)

    def heads(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(invariant feature h_s, variant feature h_v)."""
        f = self.encoder(x)
        return self.inv_head(f), self.var_head(f)

    def shift(self, v: torch.Tensor) -> torch.Tensor:
        """g(v): the weak causal effect of v on s (0 without the link)."""
        return self.link(v) if self.link is not None else torch.zeros_like(v)

    def mean_logits(self, h_s: torch.Tensor, h_v: torch.Tensor) -> torch.Tensor:
        """Prediction from posterior means: classifier(mu_s + g(mu_v))."""
        mu_s, _ = self._gauss(self.q_s(h_s))
        mu_v, _ = self._gauss(self.q_v(h_v))
        return self.classifier(mu_s + self.shift(mu_v))

    def features(self, x: torch.Tensor) -> torch.Tensor:
        """E[s0] + g(E[v]): the representation the classifier reads at test time."""
        h_s, h_v = self.heads(x)
        return self._gauss(self.q_s(h_s))[0] + self.shift(self._gauss(self.q_v(h_v))[0])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.features(x))


def build_sdwc(cfg: dict, num_classes: int, input_shape: tuple[int, ...]) -> SDWCNet:
    """FedSDWC's model around the encoder named by the ``model`` key."""
    encoder, feat_dim = split_encoder(build_model(cfg["model"], num_classes, input_shape))
    return SDWCNet(encoder, feat_dim, num_classes, input_shape, int(cfg["sdwc-latent-dim"]),
                   int(cfg["sdwc-gmm-components"]), link=bool(cfg["sdwc-link"]),
                   generative=bool(cfg["sdwc-generative"]))
