"""Inverting Gradients (Geiping et al., NeurIPS 2020): optimize the pixels directly.

Loss: cosine gradient distance + ``tv`` * total variation; Adam (lr 0.1) on the
normalized image with *signed* gradients and a MultiStepLR decay (x0.1 at 3/8, 5/8, 7/8
of each restart's steps), as in invertinggradients' ``DEFAULT_CONFIG``/breaching's
``invertinggradients.yaml``; after every step the image is clamped to the valid pixel
box. Initialization N(0, 1) in normalized space. Restarts share the equal budget
(``budget // restarts`` steps each); the candidate with the lowest gradient distance
over all restarts is returned (the fixed ``choose_optimal``, see gifd.py).
"""

from __future__ import annotations

import time

import torch

from .common import AttackInput, AttackResult, BudgetExceeded, Matcher, split_budget, total_variation


def invert_ig(inp: AttackInput, labels: torch.Tensor, budget: int = 800, restarts: int = 2, lr: float = 0.1,
              tv: float = 1e-4, signed: bool = True, distance: str = "cosine", seed: int = 0) -> AttackResult:
    t0 = time.perf_counter()
    matcher = Matcher(inp, labels, budget, distance)
    gen = torch.Generator().manual_seed(seed)
    for steps in split_budget(budget, restarts):
        if steps <= 0:
            continue
        x = inp.clamp(torch.randn(len(labels), *inp.input_shape, generator=gen)).requires_grad_(True)
        opt = torch.optim.Adam([x], lr=lr)
        sched = torch.optim.lr_scheduler.MultiStepLR(
            opt, milestones=[int(steps * f) for f in (3 / 8, 5 / 8, 7 / 8)], gamma=0.1)
        try:
            for _ in range(steps):
                opt.zero_grad(set_to_none=True)
                loss = matcher(x) + tv * total_variation(x)
                loss.backward(inputs=[x])
                if signed:
                    x.grad.sign_()
                opt.step()
                sched.step()
                with torch.no_grad():
                    x.copy_(inp.clamp(x))
        except BudgetExceeded:
            break
    return AttackResult(matcher.best_x, labels, matcher.best_loss, matcher.used, time.perf_counter() - t0,
                        {"trace": matcher.trace})
