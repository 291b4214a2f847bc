"""GGL (Li et al., CVPR 2022): search only the GAN's latent code.

``ggl`` is GGL as its authors ran it (``NGReconstructor`` of the GGL code and GIFD's GGL
baseline): CMA-ES from nevergrad over z, 50 candidates per generation, loss = GGL's
Euclidean distance ``sum_l |g_l - g*_l|^2 / L`` + ``kl`` (0.1) * KL(z || N(0, I)), where the
KL term uses the moments of each latent, ``-0.5 * (1 + log var - mean^2 - var)``. It is
gradient-free: each candidate costs one gradient-matching evaluation and no backward pass
through the generator. The equal budget counts those evaluations, so a budget of 200 is 4
generations of 50 (GGL ran 800 generations of 50, i.e. 40,000 evaluations); ``ggl-population=0``
shrinks the population so that the budget gives at least 50 generations (``auto_population``). The candidate with
the lowest gradient distance evaluated is returned (GGL returns CMA's recommendation). The
starting mean is N(0, I) per latent (GGL's code: uniform [0, 1] with a tanh; GIFD's: no
tanh, with the KL term, which is what is done here).

``ggl-adam`` keeps the earlier gradient-based latent search (also in GGL's code, the
``AdamReconstructor``, lr 0.1): Adam with GIFD's warm-up/cosine schedule, the cosine distance
that IG and GIFD use and the same KL term, restarts sharing the budget.

The GAN class is the inferred FL label, mapped by ``GanPrior.map_labels`` for
label-inconsistent priors (its trial evaluations are charged to the budget).
"""

from __future__ import annotations

import time

import numpy as np
import torch

from .common import (
    AttackInput,
    AttackResult,
    BudgetExceeded,
    Matcher,
    get_lr,
    result,
    split_budget,
)
from .prior import GanPrior

POPULATION = 50
MIN_GENERATIONS = 50  # the floor for an equal-budget comparison


def kl_normal(z: torch.Tensor) -> torch.Tensor:
    mean, var = z.mean(1), z.var(1, unbiased=False)
    return (-0.5 * (1 + torch.log(var + 1e-10) - mean.pow(2) - var)).sum()


def auto_population(budget: int) -> int:
    """GGL's 50 candidates per generation, fewer when the budget would give under 50
    generations (at least 2): CMA-ES needs generations more than a wide population."""
    return max(2, min(POPULATION, int(budget) // MIN_GENERATIONS))


def invert_ggl(inp: AttackInput, labels: torch.Tensor, prior: GanPrior, budget: int = 800, kl: float = 0.1,
               population: int = POPULATION, label_map: str = "auto", label_space: str = "",
               distance: str = "l2", seed: int = 0, **_) -> AttackResult:
    """CMA-ES (nevergrad) over the latent; ``budget`` gradient-matching evaluations in all.

    ``population=0``: ``auto_population`` of the budget left after the label mapping."""
    import nevergrad as ng

    t0 = time.perf_counter()
    labels, prior = labels.to(inp.device), prior.to(inp.device)
    matcher = Matcher(inp, labels, budget, distance)
    y_gan = prior.map_labels(labels, inp, label_map, label_space, matcher, seed)
    population = int(population) or auto_population(matcher.left)
    rng = np.random.RandomState(seed % 2**32)
    shape = (len(labels), prior.z_dim)
    param = ng.p.Array(init=rng.randn(*shape))
    param.random_state = np.random.RandomState((seed + 1) % 2**32)
    optimizer = ng.optimizers.ParametrizedCMA(popsize=population)(parametrization=param, budget=max(matcher.left, 1))
    generations = 0
    matcher.stage = "latent"
    try:
        while matcher.left > 0:
            asked = [optimizer.ask() for _ in range(min(population, matcher.left))]
            for cand in asked:
                z = torch.as_tensor(cand.value, dtype=torch.float32, device=inp.device)
                with torch.no_grad():
                    img = prior.image(z, y_gan, inp)
                loss = float(matcher(img, differentiable=False)) + kl * float(kl_normal(z))
                optimizer.tell(cand, loss)
            generations += 1
    except BudgetExceeded:
        pass
    with torch.no_grad():
        start = prior.image(torch.as_tensor(param.value, dtype=torch.float32, device=inp.device), y_gan, inp)
    return result(matcher, start, labels, t0, **{"gan-labels": y_gan.tolist(), "generations": generations,
                                                 "population": population})


def invert_ggl_adam(inp: AttackInput, labels: torch.Tensor, prior: GanPrior, budget: int = 800, restarts: int = 1,
                    lr: float = 0.1, kl: float = 0.1, label_map: str = "auto", label_space: str = "",
                    distance: str = "cosine", seed: int = 0) -> AttackResult:
    """Adam over the latent (see module doc)."""
    t0 = time.perf_counter()
    labels, prior = labels.to(inp.device), prior.to(inp.device)
    matcher = Matcher(inp, labels, budget, distance)
    y_gan = prior.map_labels(labels, inp, label_map, label_space, matcher, seed)
    gen = torch.Generator().manual_seed(seed + 1)
    matcher.stage, start = "latent", None
    for steps in split_budget(matcher.left, restarts):
        z = torch.randn(len(labels), prior.z_dim, generator=gen).to(inp.device)  # drawn on the CPU
        if start is None:
            with torch.no_grad():
                start = prior.image(z, y_gan, inp)
        if steps <= 0:
            continue
        z.requires_grad_(True)
        opt = torch.optim.Adam([z], lr=lr)
        try:
            for t in range(steps):
                for group in opt.param_groups:
                    group["lr"] = get_lr(t / steps, lr)
                opt.zero_grad(set_to_none=True)
                loss = matcher(prior.image(z, y_gan, inp)) + kl * kl_normal(z)
                loss.backward(inputs=[z])
                opt.step()
        except BudgetExceeded:
            break
    return result(matcher, start, labels, t0, **{"gan-labels": y_gan.tolist()})
