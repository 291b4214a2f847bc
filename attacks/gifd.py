"""GIFD (Fang et al., ICCV 2023): latent search, then the generator's feature domains.

Per restart (the official ``GeneratorBasedGradientReconstructor`` with ``ILO``):
1. Stage 0, latent: z ~ N(0, I); Adam (lr ``lr``, ILO's warm-up + cosine ramp-down
   schedule ``get_lr``) on ``cos-distance + tv * TV`` of the rendered image; after every
   step z is rescaled to its initial norm (the official ``SphericalOptimizer``).
2. Stages k = 1..K, features: starting from the last iterate of stage k-1 (the official
   code; ``stage_start="best"``: its best point), run the
   generator up to the output of stage k-1 of the generator to get the feature h0 of
   domain k, then optimize h with Adam; after every step
   ``h <- h0 + Proj_{|.|_1 <= r_k}(h - h0)`` (Duchi projection, per sample).
3. Output: the candidate with the lowest gradient-matching distance seen in any stage
   (the official "Best_first_i_layer" image).
The restart with the lowest distance wins.

Choices and fixes (see the module docs of ``common``/``prior``):
- **Official-code bug fixed**: ``choose_optimal`` returns ``x[trial]`` (the *last*
  restart's image) with the *best* restart's score; here the best restart's image is
  returned.
- The l1 radii are absolute and tuned per generator in the official code (BigGAN
  1000 .. 7500). For this small generator they are relative: ``r_k = radii[k-1] *
  |h0|_1`` per sample (a stage may move its features by that fraction of their l1
  mass), and the feature learning rate is ``lr * mean|h0|``, so one setting fits every
  stage's scale.
- Equal budget: ``budget`` gradient-matching evaluations per image in total, restarts,
  stages and label-mapping trials included (a budget too small for a stage ends the
  attack with its best candidate so far, or the first restart's start if none was
  evaluated); per restart, ``latent_fraction`` of the
  steps go to the latent and the rest is split evenly over the K feature stages (the
  official code runs 1000 steps per stage).
- The KL term is off for GIFD, as in the official code (it forces KLD to -1); TV stays
  on. The image-norm term (1e-6) of the official loss is omitted (negligible).
- K (``stages``): the last feature domain searched; default all 4 of the generator (the
  official default is all layers; the paper's choice of K per setting is [paper]).
- Restarts run the whole pipeline independently (latent + all stages), as the official
  ``reconstruct`` loop over trials does.
"""

from __future__ import annotations

import time

import torch

from .common import (
    AttackInput,
    AttackResult,
    BudgetExceeded,
    Matcher,
    get_lr,
    result,
    split_budget,
    total_variation,
)
from .l1 import project_l1_ball
from .prior import GanPrior

DEFAULT_RADII = (0.11, 0.071, 0.061, 0.032)  # calibrated: studies/calibrate_gifd_radii.py (method page)


class BallStats:
    """How often the l1 projection moved the point, and how far the stages want to go.

    ``active``: share of (projection step, sample) pairs where the Adam step left the ball,
    i.e. the projection changed the point (NaN without feature stages).
    ``displacement[k]``: the largest ``|h - h0|_1 / |h0|_1`` seen before projection in stage k
    (with ``radii=inf`` it is the unconstrained distance a stage travels, used to calibrate).
    """

    def __init__(self):
        self.steps, self.moved = 0, 0
        self.displacement: dict[int, float] = {}

    def step(self, stage: int, ratio: torch.Tensor, moved: torch.Tensor) -> None:
        self.steps += int(moved.numel())
        self.moved += int(moved.sum())
        self.displacement[stage] = max(self.displacement.get(stage, 0.0), float(ratio.max()))

    @property
    def active(self) -> float:
        return self.moved / self.steps if self.steps else float("nan")


def _optimize(var, render, matcher: Matcher, steps: int, lr: float, tv: float, after_step) -> tuple[torch.Tensor, float]:
    """Adam on ``var`` for ``steps``; returns the stage's best ``var`` and its distance.

    ``var`` is updated in place: after the call (or a ``BudgetExceeded`` from it) it holds the
    stage's last iterate."""
    opt = torch.optim.Adam([var], lr=lr)
    best_var, best = var.detach().clone(), float("inf")
    for t in range(steps):
        for group in opt.param_groups:
            group["lr"] = get_lr(t / steps, lr)
        opt.zero_grad(set_to_none=True)
        img = render(var)
        dist = matcher(img)
        if dist.item() < best:
            best, best_var = dist.item(), var.detach().clone()
        (dist + tv * total_variation(img)).backward(inputs=[var])
        opt.step()
        with torch.no_grad():
            after_step(var)
    return best_var, best


STAGE_STARTS = ("last", "best")


def invert_gifd(inp: AttackInput, labels: torch.Tensor, prior: GanPrior, budget: int = 800, restarts: int = 2,
                lr: float = 0.1, tv: float = 1e-4, latent_fraction: float = 0.5,
                radii: tuple[float, ...] = DEFAULT_RADII, stages: int | None = None, feature_lr: float | None = None,
                label_map: str = "auto", label_space: str = "", distance: str = "cosine", stage_start: str = "last",
                seed: int = 0) -> AttackResult:
    """GIFD within ``budget`` evaluations; out of budget it ends with its best candidate so far.

    ``stage_start``: stage k starts from stage k-1's ``last`` iterate (the official code) or
    its ``best`` one. ``info["budget-used"]``: evaluations per stage (``label-map``,
    ``latent``, ``stage-k``), summed over restarts."""
    if stage_start not in STAGE_STARTS:
        raise ValueError(f"unknown gifd stage start '{stage_start}': pass one of {STAGE_STARTS}")
    t0 = time.perf_counter()
    gen_stages = prior.gen.num_stages - 1  # feature domains: outputs of stages 0 .. n-2
    K = gen_stages if stages is None else min(int(stages), gen_stages)
    if len(radii) < K:
        raise ValueError(f"gifd needs {K} l1 radii, got {len(radii)}")
    labels, prior = labels.to(inp.device), prior.to(inp.device)
    matcher = Matcher(inp, labels, budget, distance)
    y_gan = prior.map_labels(labels, inp, label_map, label_space, matcher, seed)
    gen = torch.Generator().manual_seed(seed + 1)
    stage_best: list[list[float]] = []
    ball = BallStats()
    fallback = None
    for per_restart in split_budget(matcher.left, restarts):
        latent_steps = int(round(per_restart * latent_fraction)) if K else per_restart
        feature_steps = split_budget(per_restart - latent_steps, K) if K else []
        z = torch.randn(len(labels), prior.z_dim, generator=gen).to(inp.device)  # drawn on the CPU, then moved
        if fallback is None:
            with torch.no_grad():
                fallback = prior.image(z, y_gan, inp)
        if per_restart <= 0:
            continue
        norm0 = z.norm(dim=1, keepdim=True)
        z.requires_grad_(True)
        losses = []
        try:
            def sphere(v):
                v.mul_(norm0 / v.norm(dim=1, keepdim=True).clamp(min=1e-12))

            matcher.stage = "latent"
            best_z, best = _optimize(z, lambda v: prior.image(v, y_gan, inp), matcher, latent_steps, lr, tv, sphere)
            current = z.detach() if stage_start == "last" else best_z
            losses.append(best)
            for k, steps in enumerate(feature_steps, start=1):
                matcher.stage = f"stage-{k}"
                with torch.no_grad():
                    h0 = prior.feature(current, y_gan, k - 1, k)
                mass = h0.flatten(1).abs().sum(1)
                radius = radii[k - 1] * mass
                h = h0.clone().requires_grad_(True)

                def project(v, h0=h0, radius=radius, mass=mass, k=k):
                    moved = (v - h0).flatten(1).abs().sum(1)
                    ball.step(k, moved / mass.clamp(min=1e-12), moved > radius)
                    if torch.isfinite(radius).all():
                        v.copy_(h0 + project_l1_ball(v - h0, radius))

                best_h, best = _optimize(h, lambda v, k=k: prior.image(v, y_gan, inp, start=k), matcher, steps,
                                         (lr if feature_lr is None else feature_lr) * float(h0.abs().mean()), tv,
                                         project)
                current = h.detach() if stage_start == "last" else best_h
                losses.append(best)
        except BudgetExceeded:
            pass
        stage_best.append(losses)
    return result(matcher, fallback, labels, t0, **{
        "gan-labels": y_gan.tolist(), "stage-best": stage_best, "l1-active": ball.active, "l1-steps": ball.steps,
        "l1-displacement": ball.displacement})
