"""Euclidean projection onto the l1 ball (Duchi, Shalev-Shwartz, Singer & Chandra, ICML 2008).

GIFD constrains each intermediate-feature stage to ``h0 + {d : |d|_1 <= r}`` and projects
after every Adam step (``inversefed/utils.py:project_onto_l1_ball`` in the official code,
the same sort-based algorithm). Applied per sample (first dimension).
"""

from __future__ import annotations

import torch


def project_l1_ball(v: torch.Tensor, radius: torch.Tensor | float) -> torch.Tensor:
    """argmin_w |w - v|_2 s.t. |w|_1 <= radius, for each sample v[i] (radius per sample or scalar)."""
    n = v.shape[0]
    flat = v.reshape(n, -1)
    r = torch.as_tensor(radius, dtype=flat.dtype, device=flat.device).expand(n).clone()
    if (r < 0).any():
        raise ValueError("l1-ball radius must be >= 0")
    mag = flat.abs()
    inside = mag.sum(1) <= r
    u = mag.sort(1, descending=True).values
    css = u.cumsum(1)
    j = torch.arange(1, flat.shape[1] + 1, device=flat.device, dtype=flat.dtype)
    cond = (u - (css - r[:, None]) / j) > 0
    rho = (cond * j).amax(1).long().clamp(min=1)  # largest j with u_j > (css_j - r) / j
    theta = ((css.gather(1, (rho - 1)[:, None]).squeeze(1) - r) / rho).clamp(min=0)
    w = flat.sign() * (mag - theta[:, None]).clamp(min=0)
    w = torch.where(r[:, None] == 0, torch.zeros_like(w), w)
    return torch.where(inside[:, None], flat, w).view_as(v)
