"""FedSDWC's model: encoder + invariant/variant heads + three inference MLPs + classifier.

The structure, and which parts of it are a reading of the paper rather than its text,
are described in ``clients/fedsdwc.py`` (module docstring). In short::

    x -> encoder (the ``model`` key: cnn, wrn-40-2, ...) -> f
    f -> invariant head -> h_s -> q(s | h_s) = N(mu_s, diag sigma_s^2)     semantic factor s
    f -> variant head   -> h_v -> q(v | h_v) = N(mu_v, diag sigma_v^2)     variant factor v
    v -> link MLP            -> q(l | v)   = N(mu_l, diag sigma_l^2)     weak causal effect of v on s
    z = s + l -> classifier -> logits                                     (p(y | z))

    priors: p(s | y) = N(m_y, I)                  class-conditional Gaussian mixture (one component per class)
            p(v)     = sum_k 1/K N(c_k, I)         Gaussian mixture with K components
            p(l)     = N(0, tau^2 I)               tau small: the link is weak

``forward(x)`` is the inference path (posterior means, no sampling), so the generic
evaluation (accuracy, the OOD suite) treats it like any classifier; ``features(x)`` is
the representation that feeds ``classifier``.
"""

from __future__ import annotations

import math

import torch
from torch import nn
from torch.nn import functional as F

from . import build_model

# Posterior log-variances are clamped to [-8, 2] (std 0.018 .. 2.7). The priors have unit
# variance (s, v) or tau^2 = 0.01 (l), so a posterior std above 2.7 is never useful; with
# an upper bound of 8 (std 55) the KL to the tight link prior, whose gradient in logvar is
# exp(logvar) / (2 tau^2), blew up within a few SGD steps on a non-IID client (NaN).
LOGVAR_MIN, LOGVAR_MAX = -8.0, 2.0
INIT_LOGVAR = -4.0  # posterior std 0.14 at start


def gaussian_kl(mu_q, logvar_q, mu_p, logvar_p) -> torch.Tensor:
    """KL(N(mu_q, e^logvar_q) || N(mu_p, e^logvar_p)) per sample, summed over dims (>= 0)."""
    kl = 0.5 * (logvar_p - logvar_q + (logvar_q.exp() + (mu_q - mu_p) ** 2) / logvar_p.exp() - 1.0)
    return kl.sum(-1).clamp_min(0.0)


def gmm_kl_upper(mu, logvar, means, log_weights=None) -> torch.Tensor:
    """Closed-form upper bound of KL(N(mu, e^logvar) || sum_k w_k N(means_k, I)) per sample:
    ``-log sum_k w_k exp(-KL(q || N_k))`` (Hershey & Olsen 2007; from Jensen's inequality
    with the optimal variational weights). It is >= 0 and exact for one component."""
    k = means.shape[0]
    if log_weights is None:
        log_weights = torch.full((k,), -math.log(k), device=mu.device, dtype=mu.dtype)
    zeros = torch.zeros_like(mu).unsqueeze(1)
    per = gaussian_kl(mu.unsqueeze(1), logvar.unsqueeze(1), means.unsqueeze(0), zeros)  # [B, K]
    return (-torch.logsumexp(log_weights.unsqueeze(0) - per, dim=1)).clamp_min(0.0)


def _mlp(din: int, hidden: int, dout: int) -> nn.Sequential:
    return nn.Sequential(nn.Linear(din, hidden), nn.ReLU(), nn.Linear(hidden, dout))


def split_encoder(backbone: nn.Module) -> tuple[nn.Module, int]:
    """(module x -> feature vector, its size) from a registry model."""
    if isinstance(getattr(backbone, "classifier", None), nn.Linear) and isinstance(backbone.features, nn.Module):
        return backbone.features, backbone.classifier.in_features
    if hasattr(backbone, "reset_classifier"):  # timm
        backbone.reset_classifier(0)
        return backbone, int(backbone.num_features)
    raise ValueError(f"cannot take an encoder from {type(backbone).__name__}: use cnn, resnet18, wrn-D-W or timm:<name>")


class SDWCNet(nn.Module):
    def __init__(self, encoder: nn.Module, feat_dim: int, num_classes: int, latent_dim: int = 32,
                 gmm_components: int = 4, hidden: int = 128, link_prior_std: float = 0.1):
        super().__init__()
        self.encoder = encoder
        self.norm = nn.LayerNorm(feat_dim)
        self.inv_head = nn.Sequential(nn.Linear(feat_dim, hidden), nn.ReLU())
        self.var_head = nn.Sequential(nn.Linear(feat_dim, hidden), nn.ReLU())
        self.q_semantic = _mlp(hidden, hidden, 2 * latent_dim)
        self.q_variant = _mlp(hidden, hidden, 2 * latent_dim)
        self.q_link = _mlp(latent_dim, hidden, 2 * latent_dim)
        g = torch.Generator().manual_seed(0)
        self.prior_semantic = nn.Parameter(torch.randn(num_classes, latent_dim, generator=g))
        self.prior_variant = nn.Parameter(torch.randn(gmm_components, latent_dim, generator=g))
        self.register_buffer("link_logvar", torch.tensor(2 * math.log(link_prior_std)))
        self.classifier = nn.Linear(latent_dim, num_classes)
        for head in (self.inv_head, self.var_head, self.q_semantic, self.q_variant, self.q_link):
            for layer in head:
                if isinstance(layer, nn.Linear):  # He init: keeps the signal through the extra ReLU layers
                    nn.init.kaiming_normal_(layer.weight, nonlinearity="relu")
                    nn.init.zeros_(layer.bias)
        with torch.no_grad():  # start near-deterministic, with a link that is weak from the start
            for q in (self.q_semantic, self.q_variant):
                q[-1].bias[latent_dim:].fill_(INIT_LOGVAR)
            self.q_link[-1].weight.mul_(0.01)
            self.q_link[-1].bias[:latent_dim].zero_()
            self.q_link[-1].bias[latent_dim:].fill_(float(self.link_logvar))

    @staticmethod
    def _gauss(out: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        mu, logvar = out.chunk(2, dim=-1)
        return mu, logvar.clamp(LOGVAR_MIN, LOGVAR_MAX)

    @staticmethod
    def sample(mu: torch.Tensor, logvar: torch.Tensor) -> torch.Tensor:
        """Reparameterization: mu + sigma * eps."""
        return mu + (0.5 * logvar).exp() * torch.randn_like(mu)

    def heads(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(invariant feature h_s, variant feature h_v)."""
        f = self.norm(self.encoder(x))
        return self.inv_head(f), self.var_head(f)

    def posteriors(self, h_s: torch.Tensor, h_v: torch.Tensor) -> dict[str, torch.Tensor]:
        mu_s, lv_s = self._gauss(self.q_semantic(h_s))
        mu_v, lv_v = self._gauss(self.q_variant(h_v))
        return {"mu_s": mu_s, "logvar_s": lv_s, "mu_v": mu_v, "logvar_v": lv_v}

    def link(self, v: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return self._gauss(self.q_link(v))

    def mean_logits(self, mu_s: torch.Tensor, h_v: torch.Tensor) -> torch.Tensor:
        """Inference path from the semantic mean and a (possibly intervened) variant feature."""
        mu_v, _ = self._gauss(self.q_variant(h_v))
        mu_l, _ = self.link(mu_v)
        return self.classifier(mu_s + mu_l)

    def features(self, x: torch.Tensor) -> torch.Tensor:
        """z = E[s] + E[l(E[v])]: the representation the classifier reads."""
        h_s, h_v = self.heads(x)
        post = self.posteriors(h_s, h_v)
        mu_l, _ = self.link(post["mu_v"])
        return post["mu_s"] + mu_l

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.features(x))


def build_sdwc(cfg: dict, num_classes: int, input_shape: tuple[int, ...]) -> SDWCNet:
    """FedSDWC's model around the encoder named by the ``model`` key."""
    encoder, feat_dim = split_encoder(build_model(cfg["model"], num_classes, input_shape))
    return SDWCNet(encoder, feat_dim, num_classes, int(cfg["sdwc-latent-dim"]), int(cfg["sdwc-gmm-components"]),
                   link_prior_std=float(cfg["sdwc-link-prior-std"]))
