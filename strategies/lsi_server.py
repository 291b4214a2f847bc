"""FedDG-LSI's server-side computations, pure torch (no Flower): stages 2, 3 and 5.

Stage 2, latent space inversion (``invert_head``): for one client's classifier head
(BatchNorm1d running statistics + linear layer; no encoder, no image), optimize random
latents Z ~ N(0, I) with sampled labels y by Adam (betas 0.5, 0.9) on

    CE(head(Z), y) + norm_weight * mean_i ||Z_i||_2
                   + bn_weight * (||mean_B(Z) - mu_run||_2 + ||var_B(Z) - var_run||_2)

(DeepInversion's feature-statistics term on the BN1d input, as the official
``DeepInversionFeatureHook``). Differences from the official code, all deliberate:
the head runs in eval mode (the official head stays in train mode, so every step both
normalizes with the batch's own statistics and moves the running statistics it is
matched against); Z is re-initialized for every client (the official loop keeps
optimizing the same tensor across domains); the batches (official: 120 batches of 32
with i.i.d. uniform labels, as here) are optimized together, not one after the other;
few iterations with a larger step (paper: 10,000 at lr 1e-4).

Stage 3, latent StarGAN (``train_translator``): G(z, c, c') and D (models/translator.py)
on the pooled synthetic latents, as the official ``solver_stargan_latent.py``:
D: -E[D(z)] + E[D(G(z,c,c'))] + L_CLS * CE(D_cls(z), c) + L_GP * GP;
G (every N_CRITIC steps): -E[D(G)] + L_REC * |z - G(G(z,c,c'),c',c)|_1
+ L_CLS * CE(D_cls(G), c') + L_CONS * sum_k CE(head_k(G(z,c,c')), y);
c' = a random permutation of the batch's codes; Adam(lr, 0.5, 0.999), lr decayed
linearly to 0 over the second half. Bug fixed: the official GP draws
``alpha = rand(B,1,1,1)`` for [B, d] latents, which broadcasts to [B, 1, B, d]; here
``alpha = rand(B, 1)``.

Stage 5, important-weight aggregation (``importance_average``): the official
``normalize_dictionaries`` is called but never defined. Here, per parameter element,
``w_k = n_k * Omega_k / sum_j n_j * Omega_j`` (n_k: the client's training samples) and
``theta = sum_k w_k * theta_k``; where ``sum_j n_j * Omega_j <= EPS`` (no client finds the
element important) the data weights ``n_k / sum_j n_j`` are used. With Omega = 1
everywhere this is exactly FedAvg; an element with zero importance at one client takes
the other clients' (importance-weighted) value. Entries without importance (BN buffers)
are averaged with the data weights. The official ``FedAvg(..., omega)`` multiplies the
parameters by the normalized importance alone (``Dict_multiply``) and uses data weights
only for buffers; the ``n_k`` factor here makes importance 1 reduce to sample-weighted
FedAvg for clients of any size. With equal client sizes (one domain per client, as in the
Rotated MNIST sweep) the two coincide.
"""

from __future__ import annotations

import contextlib

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F

from common.progress import LogProgress
from common.threads import torch_threads
from models.translator import LatentDiscriminator, Translator

Tensors = dict[str, torch.Tensor]

# Official StarGAN weights (feddg_latent.py / solver_stargan_latent.py defaults).
L_CLS, L_REC, L_GP, L_CONS, N_CRITIC = 1.0, 10.0, 10.0, 0.1, 5
EPS = 1e-20


@contextlib.contextmanager
def single_thread():
    """Stages 2-3 are thousands of tiny ops: one thread is much faster than several
    (a shared, loaded CPU makes multi-thread synchronization cost up to 20x)."""
    with torch_threads(1):
        yield


# ---- stage 2: latent space inversion ------------------------------------------------------
def bn_stat_loss(z: torch.Tensor, bn: nn.BatchNorm1d) -> torch.Tensor:
    """||mean_B(z) - running_mean||_2 + ||var_B(z) - running_var||_2 (biased batch var)."""
    return torch.linalg.vector_norm(z.mean(0) - bn.running_mean) + \
        torch.linalg.vector_norm(z.var(0, unbiased=False) - bn.running_var)


def invert_head(
    head: nn.Sequential,
    num_latents: int,
    iters: int,
    lr: float,
    bn_weight: float,
    norm_weight: float,
    generator: torch.Generator,
    tick=None,
    batch: int | None = None,
) -> tuple[torch.Tensor, torch.Tensor, dict[str, float]]:
    """Synthetic latents and i.i.d. uniform labels for one head (``BatchNorm1d -> Linear``,
    eval mode), in independent batches of ``batch`` latents (each matched to the BN
    statistics on its own; all optimized at once); ``tick()`` after each step (progress)."""
    head = head.eval()
    bn, linear = head[0], head[1]
    num_classes, dim = linear.weight.shape
    batch = min(batch or num_latents, num_latents)
    nb = max(num_latents // batch, 1)
    y = torch.randint(num_classes, (nb, batch), generator=generator)
    z = torch.randn(nb, batch, dim, generator=generator).requires_grad_(True)
    opt = torch.optim.Adam([z], lr=lr, betas=(0.5, 0.9))
    for _ in range(iters):
        # Summed over batches: each batch's latents get exactly their own batch's gradient.
        loss = batch_losses(head, bn, z, y, bn_weight, norm_weight).sum()
        opt.zero_grad()
        loss.backward()
        opt.step()
        if tick:
            tick()
    z, y = z.detach().flatten(0, 1), y.flatten()
    with torch.no_grad():
        stats = {
            "acc": float((head(z).argmax(1) == y).float().mean()),
            "bn-gap": float(bn_stat_loss(z, bn)),
            "ce": float(F.cross_entropy(head(z), y)),
        }
    return z, y, stats


def batch_losses(head, bn, z: torch.Tensor, y: torch.Tensor, bn_weight: float, norm_weight: float) -> torch.Tensor:
    """The inversion loss of every batch ([nb]) of latents ``z`` [nb, B, d] with labels [nb, B]."""
    ce = F.cross_entropy(head(z.flatten(0, 1)), y.flatten(), reduction="none").view(y.shape).mean(1)
    stat = torch.linalg.vector_norm(z.mean(1) - bn.running_mean, dim=1) + \
        torch.linalg.vector_norm(z.var(1, unbiased=False) - bn.running_var, dim=1)
    return ce + norm_weight * z.norm(dim=2).mean(1) + bn_weight * stat


def invert_heads(heads: list[nn.Sequential], cfg: dict, seed: int):
    """Stage 2 for every head: pooled (Z, y, code) with code = the head's index, + stats."""
    gen = torch.Generator().manual_seed(seed)
    zs, ys, codes, stats = [], [], [], []
    progress = LogProgress("fedlsi latent inversion", len(heads) * int(cfg["lsi-inversion-iters"]), "step")
    for k, head in enumerate(heads):
        with single_thread():
            z, y, s = invert_head(head, int(cfg["lsi-num-latents"]), int(cfg["lsi-inversion-iters"]),
                                  float(cfg["lsi-inversion-lr"]), float(cfg["lsi-bn-weight"]),
                                  float(cfg["lsi-norm-weight"]), gen, progress.tick, int(cfg["lsi-inversion-batch"]))
        zs.append(z), ys.append(y), codes.append(torch.full_like(y, k)), stats.append(s)
    summary = {f"lsi-inversion-{key}": float(np.mean([s[key] for s in stats])) for key in stats[0]}
    return torch.cat(zs), torch.cat(ys), torch.cat(codes), summary


# ---- stage 3: latent StarGAN ----------------------------------------------------------------
def gradient_penalty(d: LatentDiscriminator, real: torch.Tensor, fake: torch.Tensor,
                     generator: torch.Generator | None = None) -> torch.Tensor:
    """WGAN-GP on latents: alpha has shape [B, 1] (the official [B,1,1,1] broadcasts wrongly)."""
    alpha = torch.rand(real.size(0), 1, generator=generator)
    x_hat = (alpha * real.detach() + (1 - alpha) * fake.detach()).requires_grad_(True)
    out, _ = d(x_hat)
    grad = torch.autograd.grad(out, x_hat, torch.ones_like(out), create_graph=True, retain_graph=True)[0]
    return ((grad.flatten(1).norm(dim=1) - 1) ** 2).mean()


def d_step_losses(g, d, z, c, c_trg, generator=None) -> dict[str, torch.Tensor]:
    out_real, cls_real = d(z)
    fake = g(z, c, c_trg)
    out_fake, _ = d(fake.detach())
    return {"real": -out_real.mean(), "fake": out_fake.mean(), "cls": F.cross_entropy(cls_real, c),
            "gp": gradient_penalty(d, z, fake, generator)}


def g_step_losses(g, d, z, y, c, c_trg, heads) -> dict[str, torch.Tensor]:
    fake = g(z, c, c_trg)
    out_fake, cls_fake = d(fake)
    rec = g(fake, c_trg, c)
    cons = sum(F.cross_entropy(h(fake), y) for h in heads) if heads else fake.new_zeros(())
    return {"fake": -out_fake.mean(), "rec": (z - rec).abs().mean(), "cls": F.cross_entropy(cls_fake, c_trg),
            "cons": cons}


def train_translator(*args, **kwargs) -> tuple[Translator, LatentDiscriminator, dict[str, float]]:
    """Stage 3 (see ``_train_translator``), on one thread."""
    with single_thread():
        return _train_translator(*args, **kwargs)


def _train_translator(
    z: torch.Tensor,
    y: torch.Tensor,
    codes: torch.Tensor,
    heads: list[nn.Sequential],
    num_domains: int,
    cfg: dict,
    seed: int,
    g: Translator | None = None,
    d: LatentDiscriminator | None = None,
) -> tuple[Translator, LatentDiscriminator, dict[str, float]]:
    """Stage 3 on the synthetic latents; ``g``/``d`` warm-start (every-round schedule)."""
    torch.manual_seed(seed)
    gen = torch.Generator().manual_seed(seed)
    dim, hidden = z.shape[1], int(cfg["lsi-translator-hidden"])
    if g is None:
        g = Translator(dim, num_domains, hidden, form=str(cfg["lsi-translator"]))
        g.set_scale(z)
    d = d or LatentDiscriminator(dim, num_domains, hidden)
    g.train(), d.train()
    for h in heads:
        h.eval()
    lr, iters, batch = float(cfg["lsi-translator-lr"]), int(cfg["lsi-translator-iters"]), int(cfg["lsi-translator-batch"])
    g_opt = torch.optim.Adam(g.parameters(), lr, betas=(0.5, 0.999))
    d_opt = torch.optim.Adam(d.parameters(), lr, betas=(0.5, 0.999))
    decay_from = iters // 2
    logged: dict[str, float] = {}
    progress = LogProgress("fedlsi translator training", iters, "step")
    for i in range(iters):
        idx = torch.randint(len(z), (min(batch, len(z)),), generator=gen)
        zb, yb, cb = z[idx], y[idx], codes[idx]
        ct = cb[torch.randperm(len(cb), generator=gen)]
        dl = d_step_losses(g, d, zb, cb, ct, gen)
        d_loss = dl["real"] + dl["fake"] + L_CLS * dl["cls"] + L_GP * dl["gp"]
        d_opt.zero_grad()
        d_loss.backward()
        d_opt.step()
        if (i + 1) % N_CRITIC == 0:
            gl = g_step_losses(g, d, zb, yb, cb, ct, heads)
            g_loss = gl["fake"] + L_REC * gl["rec"] + L_CLS * gl["cls"] + L_CONS * gl["cons"]
            g_opt.zero_grad()
            g_loss.backward()
            g_opt.step()
            logged = {"lsi-g-loss": g_loss.item(), "lsi-g-rec": gl["rec"].item(), "lsi-g-cons": gl["cons"].item(),
                      "lsi-d-loss": d_loss.item(), "lsi-d-gp": dl["gp"].item()}
        if i >= decay_from:
            for opt in (g_opt, d_opt):
                for group in opt.param_groups:
                    group["lr"] = lr * (iters - i - 1) / max(iters - decay_from, 1)
        progress.tick()
    for p in g.parameters():  # heads' gradients are never needed again
        p.grad = None
    return g.eval(), d, logged


@torch.no_grad()
def translator_fixed_point_gap(g: Translator, z: torch.Tensor, codes: torch.Tensor, num_domains: int) -> float:
    """MSE(G(z, c, c'), z) on the synthetic latents, c' uniform: the clients' divergence term."""
    g.eval()
    trg = torch.randint(num_domains, (len(z),), generator=torch.Generator().manual_seed(0))
    return float(F.mse_loss(g(z, codes, trg), z))


@torch.no_grad()
def _other_codes(codes: torch.Tensor, num_domains: int, generator: torch.Generator) -> torch.Tensor:
    return (codes + 1 + torch.randint(num_domains - 1, codes.shape, generator=generator)) % num_domains


def domain_classifier(z: torch.Tensor, codes: torch.Tensor, num_domains: int):
    """A linear domain classifier fit on ``z`` (standardized; 200 Adam steps from zero):
    a function of latents -> predicted code, standardized the same way."""
    mean, std = z.mean(0), z.std(0).clamp_min(1e-6)
    with torch.enable_grad():
        clf = nn.Linear(z.shape[1], num_domains)
        nn.init.zeros_(clf.weight), nn.init.zeros_(clf.bias)  # deterministic
        zn = (z - mean) / std
        opt = torch.optim.Adam(clf.parameters(), 0.05)
        for _ in range(200):
            loss = F.cross_entropy(clf(zn), codes)
            opt.zero_grad()
            loss.backward()
            opt.step()
    return lambda v: clf((v - mean) / std).argmax(1)


@torch.no_grad()
def translation_scores(g: Translator, z: torch.Tensor, y: torch.Tensor, codes: torch.Tensor,
                       heads: list[nn.Sequential], num_domains: int, seed: int = 0) -> dict[str, float]:
    """Does G translate the synthetic latents? A linear domain classifier fit on them labels
    G(z, c, c'), c' != c uniform: ``hit`` = the share labelled c' (0 for the identity),
    ``clf-acc`` = its accuracy on z itself, ``class-kept`` = the share that the target
    domain's head still gives label y (``heads`` indexed by code)."""
    gen = torch.Generator().manual_seed(seed)
    clf = domain_classifier(z, codes, num_domains)
    g.eval()
    target = _other_codes(codes, num_domains, gen)
    out = g(z, codes, target)
    kept = torch.zeros(len(z), dtype=torch.bool)
    for k, head in enumerate(heads):
        at = target == k
        kept[at] = head(out[at]).argmax(1) == y[at]
    return {"hit": float((clf(out) == target).float().mean()),
            "clf-acc": float((clf(z) == codes).float().mean()),
            "class-kept": float(kept.float().mean())}


@torch.no_grad()
def real_translation_scores(g: Translator, model: nn.Module, data: dict[int, tuple[torch.Tensor, torch.Tensor]],
                            num_domains: int, seed: int = 0) -> dict[str, float]:
    """Does G translate real latents? ``model`` (a ``LatentNet``, eval mode) encodes real
    images ``data`` (code -> (x, y)) into z; a linear domain classifier is fit on half of
    each code's latents, and the other (held-out) half is translated to c' != c:
    ``hit`` = the share of G(z, c, c') the classifier labels c', ``hit-identity`` the same
    for z untranslated (chance-level floor), ``clf-acc`` its accuracy on held-out z;
    ``class-kept`` = the share of G(z, c, c') the global classifier still gives the true
    label, ``class-acc`` the same for z (the ceiling)."""
    model.eval(), g.eval()
    zs, ys, cs = [], [], []
    for code, (x, y) in sorted(data.items()):
        zs.append(model.encoder(x)), ys.append(y), cs.append(torch.full((len(y),), code, dtype=torch.long))
    z, y, codes = torch.cat(zs), torch.cat(ys), torch.cat(cs)
    gen = torch.Generator().manual_seed(seed)
    fit = torch.zeros(len(z), dtype=torch.bool)
    for code in codes.unique():  # a random half of each code's latents fits the classifier
        at = torch.nonzero(codes == code).flatten()
        fit[at[torch.randperm(len(at), generator=gen)[: len(at) // 2]]] = True
    clf = domain_classifier(z[fit], codes[fit], num_domains)
    z, y, codes = z[~fit], y[~fit], codes[~fit]
    target = _other_codes(codes, num_domains, gen)
    out = g(z, codes, target)
    return {"hit": float((clf(out) == target).float().mean()),
            "hit-identity": float((clf(z) == target).float().mean()),
            "clf-acc": float((clf(z) == codes).float().mean()),
            "class-kept": float((model.classifier(out).argmax(1) == y).float().mean()),
            "class-acc": float((model.classifier(z).argmax(1) == y).float().mean())}


# ---- stage 5: important-weight aggregation ----------------------------------------------------
def importance_weights(omegas: list[torch.Tensor], num_examples: list[float]) -> torch.Tensor:
    """Per-element client weights [K, ...] for one entry: ``n_k Omega_k / sum_j n_j Omega_j``,
    the data weights where no client finds the element important; they sum to 1 over K."""
    n = torch.tensor([float(v) for v in num_examples], dtype=torch.float64)
    omega = torch.stack([o.to(torch.float64) for o in omegas]).clamp_min(0)
    shape = (-1,) + (1,) * (omega.ndim - 1)
    mass = omega * n.view(shape)
    total = mass.sum(0, keepdim=True)
    return torch.where(total > EPS, mass / total.clamp_min(EPS), (n / n.sum()).view(shape).expand_as(mass))


def importance_average(states: list[Tensors], importances: list[Tensors], num_examples: list[float]) -> Tensors:
    """Element-wise importance-weighted mean of ``states`` (see the module docstring)."""
    n = torch.tensor([float(v) for v in num_examples], dtype=torch.float64)
    data_w = n / n.sum()
    out: Tensors = {}
    for key, ref in states[0].items():
        stacked = torch.stack([s[key].to(torch.float64) for s in states])  # [K, ...]
        shape = (-1,) + (1,) * (stacked.ndim - 1)
        if key in importances[0]:
            weights = importance_weights([imp[key] for imp in importances], num_examples)
        else:
            weights = data_w.view(shape).expand_as(stacked)
        value = (weights * stacked).sum(0)
        out[key] = value.round().to(ref.dtype) if not ref.dtype.is_floating_point else value.to(ref.dtype)
    return out


def data_average(states: list[Tensors], num_examples: list[float]) -> Tensors:
    """Plain FedAvg (sample-weighted mean): ``importance_average`` with no importance."""
    return importance_average(states, [{} for _ in states], num_examples)
