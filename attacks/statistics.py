"""What FedHiP's uploaded statistics give away, and their inversion to images.

A FedHiP client sends ``G_k = X_kᵀX_k`` (upper triangle), ``Q_k = X_kᵀY_k`` (one-hot Y) and
its class counts, where X_k are frozen-backbone features the server can compute itself
(the backbone is public and fixed). Hence:

- ``Q_k[:, c] / counts[c]`` is the mean feature of the client's class c: exactly the
  feature of its image when the class holds one sample;
- ``G_k / n - μμᵀ`` is the client's feature covariance (second moments); when the client
  holds one sample, ``G_k = x xᵀ`` and x is its leading eigenvector scaled by √λ (the sign
  is fixed by Q_k).
- An image is then recovered by optimizing pixels so that the backbone's features match
  (feature inversion, as in model-inversion attacks: cosine + TV prior, Adam in the
  dataset-normalized space, clamped to the valid pixel box).
"""

from __future__ import annotations

import time

import torch
from torch.nn import functional as F

from .common import AttackResult, total_variation


def class_means(q: torch.Tensor, counts: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(mean feature per class [C, d], classes present [C] bool) from Q_k (d x C) and counts."""
    present = counts > 0
    means = (q.T / counts.clamp(min=1)[:, None]).to(q.dtype)
    return means, present


def second_moments(gram: torch.Tensor, q: torch.Tensor, counts: torch.Tensor) -> torch.Tensor:
    """The client's feature covariance ``G/n - μμᵀ`` (μ: its overall mean feature)."""
    n = counts.sum().clamp(min=1)
    mu = q.sum(1) / n
    return gram / n - torch.outer(mu, mu)


def rank_one_feature(gram: torch.Tensor, q: torch.Tensor) -> torch.Tensor:
    """x from ``G = x xᵀ`` (one-sample client): leading eigenvector × √λ, sign from Q's column sum."""
    vals, vecs = torch.linalg.eigh(gram)
    x = vecs[:, -1] * vals[-1].clamp(min=0).sqrt()
    return x if float(x @ q.sum(1)) >= 0 else -x


def invert_features(features, target: torch.Tensor, input_shape: tuple[int, ...], lo: torch.Tensor,
                    hi: torch.Tensor, budget: int = 200, lr: float = 0.05, tv: float = 1e-2,
                    seed: int = 0) -> AttackResult:
    """Images whose features match ``target`` [B, d]: ``features`` maps normalized images
    to features differentiably; ``lo``/``hi`` bound the normalized pixels."""
    t0 = time.perf_counter()
    gen = torch.Generator().manual_seed(seed)  # drawn on the CPU, then moved to ``target``'s device
    lo, hi = lo.to(target.device), hi.to(target.device)
    x = torch.maximum(torch.minimum(0.1 * torch.randn(len(target), *input_shape, generator=gen).to(target.device), hi), lo)
    x.requires_grad_(True)
    opt = torch.optim.Adam([x], lr=lr)
    target = target.float()
    best, best_x, trace = float("inf"), x.detach().clone(), []
    for _ in range(int(budget)):
        opt.zero_grad(set_to_none=True)
        dist = 1 - F.cosine_similarity(features(x), target, dim=1)
        loss = dist.mean() + tv * total_variation(x)
        value = float(dist.mean().detach())
        trace.append(value)
        if value < best:
            best, best_x = value, x.detach().clone()
        loss.backward(inputs=[x])
        opt.step()
        with torch.no_grad():
            x.copy_(torch.maximum(torch.minimum(x, hi), lo))
    return AttackResult(best_x, torch.zeros(len(target), dtype=torch.long), best, int(budget),
                        time.perf_counter() - t0, {"trace": trace})
