"""What every gradient-inversion attack shares: the attacker's view and the matching loss.

``AttackInput`` is the attacker's whole world (breaching's contract): the model the
server sent, the update it received, and the training hyperparameters the server
announced (threat model, batch size, local lr and steps, the dataset's public
normalization). Ground truth has no field here and is never passed to an attack.

Threat models:
- ``fedsgd``: the client returns the gradient g* of one batch (mean cross-entropy).
- ``fedavg``: the client runs ``local_steps`` full-batch SGD steps (lr ``lr``, no momentum)
  on one batch and returns its weights; the attacker sees the update w_sent - w_received
  and simulates the same steps on its candidate batch, differentiably (Geiping et al.
  2020's multi-step attack).

Gradient-matching distance (GIFD's ``sim_cmpr0``, Geiping et al.'s cosine):
``1 - sum_l <g_l, g*_l> / (sqrt(sum_l |g_l|^2) sqrt(sum_l |g*_l|^2))`` over all layers,
GGL's Euclidean ``sum_l |g_l - g*_l|^2 / L`` (``l2``), or DLG's/breaching's
``0.5 sum_l |g_l - g*_l|^2`` (``euclid``). Cosine is invariant to the update's scale, so
norm clipping alone does not change a cosine attack (a known result).

Labels may be class indices or, for DLG's joint optimization, probability vectors
(``F.cross_entropy`` takes both).

Device: an attack runs where its ``AttackInput`` lives (``AttackInput.to``, the run config's
``attack-device``, ``resolve_device``). Random starting points are drawn on the CPU from the
attack's seeded generator and then moved, so a GPU run starts from the CPU run's point, and
an ``AttackResult`` always holds CPU tensors (metrics, CSV and images are computed there).
"""

from __future__ import annotations

import copy
import dataclasses
import math
import re
import time
from dataclasses import dataclass, field

import torch
from torch import nn
from torch.func import functional_call
from torch.nn import functional as F

from .local_training import LocalTraining, replay

Tensors = dict[str, torch.Tensor]


def resolve_device(name: str, key: str = "attack-device") -> torch.device:
    """``auto`` (a CUDA GPU if torch finds one, else the CPU), ``cpu``, ``cuda`` or ``cuda:N``.

    A GPU that is not there is refused with one line naming ``key`` (ValueError)."""
    name = str(name).strip()
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    if name == "cpu":
        return torch.device("cpu")
    found = re.fullmatch(r"cuda(?::(\d+))?", name)
    if found is None:
        raise ValueError(f"{key} must be auto, cpu, cuda or cuda:N, got '{name}'")
    if not torch.cuda.is_available():
        raise ValueError(f"{key}={name} asks for a CUDA GPU, but torch finds none on this machine: "
                         f"pass {key}=cpu (or auto)")
    index = int(found.group(1) or torch.cuda.current_device())
    if index >= torch.cuda.device_count():
        raise ValueError(f"{key}={name}: this machine has {torch.cuda.device_count()} CUDA GPU(s), "
                         f"cuda:0 to cuda:{torch.cuda.device_count() - 1}")
    return torch.device("cuda", index)


@dataclass
class AttackInput:
    """What the server has: the model it sent, the update it got, what it announced."""

    model: nn.Module
    params: Tensors  # parameters sent (trainable ones, in the model's order)
    target: Tensors  # gradient (fedsgd) or update w_sent - w_received (fedavg), same names
    threat: str
    batch_size: int
    lr: float
    local_steps: int
    mean: torch.Tensor  # [C,1,1] public normalization of the FL dataset
    std: torch.Tensor
    num_classes: int
    input_shape: tuple[int, ...]
    buffers: Tensors = field(default_factory=dict)
    procedure: LocalTraining | None = None  # set: replay this announced local training (``local_training``)

    @property
    def lo(self) -> torch.Tensor:
        return (0 - self.mean) / self.std

    @property
    def hi(self) -> torch.Tensor:
        return (1 - self.mean) / self.std

    @property
    def device(self) -> torch.device:
        return self.mean.device

    def to(self, device: torch.device | str) -> "AttackInput":
        """This view on ``device``: a copy of the model and every tensor moved there (itself if it is there)."""
        device = torch.device(device)
        if device.type == "cuda" and device.index is None:
            device = torch.device("cuda", torch.cuda.current_device())
        if device == self.device:
            return self

        def move(tensors: Tensors) -> Tensors:
            return {n: t.to(device) for n, t in tensors.items()}

        return dataclasses.replace(self, model=copy.deepcopy(self.model).to(device), params=move(self.params),
                                   target=move(self.target), buffers=move(self.buffers), mean=self.mean.to(device),
                                   std=self.std.to(device))

    def clamp(self, x: torch.Tensor) -> torch.Tensor:
        """The box constraint: valid pixels in [0, 1] after de-normalization."""
        return torch.maximum(torch.minimum(x, self.hi), self.lo)

    def to_pixels(self, x: torch.Tensor) -> torch.Tensor:
        """[0, 1] pixels; a non-finite entry (a diverged optimizer) becomes 0."""
        return (x * self.std + self.mean).nan_to_num(0.0, 0.0, 0.0).clamp(0, 1)


def simulate(inp: AttackInput, x: torch.Tensor, y: torch.Tensor, create_graph: bool = True) -> list[torch.Tensor]:
    """The update candidate (x, y) would produce: gradient (fedsgd) or w0 - w_E (fedavg)."""
    names = list(inp.target)
    if inp.procedure is not None:
        return replay(inp.model, {n: inp.params[n] for n in names}, inp.buffers, x, y, inp.procedure, create_graph)
    params = {n: inp.params[n].detach().requires_grad_(True) for n in names}

    def loss_of(p):
        logits = functional_call(inp.model, {**inp.buffers, **p}, (x,))
        return F.cross_entropy(logits, y)

    if inp.threat == "fedsgd":
        return list(torch.autograd.grad(loss_of(params), list(params.values()), create_graph=create_graph))
    p = params
    for _ in range(max(int(inp.local_steps), 1)):
        grads = torch.autograd.grad(loss_of(p), list(p.values()), create_graph=create_graph)
        p = {n: w - inp.lr * g for (n, w), g in zip(p.items(), grads)}
    return [params[n] - p[n] for n in names]


def grad_distance(sim: list[torch.Tensor], target: list[torch.Tensor], kind: str = "cosine") -> torch.Tensor:
    """Cosine (global over layers) or Euclidean/L distance between two updates."""
    if kind == "cosine":
        dot = sum((g * t).sum() for g, t in zip(sim, target))
        n_sim = torch.sqrt(sum(g.pow(2).sum() for g in sim))
        n_tgt = math.sqrt(float(sum(t.pow(2).sum() for t in target)))
        return 1 - dot / (n_sim * n_tgt + 1e-12)
    if kind == "l2":
        return sum((g - t).pow(2).sum() for g, t in zip(sim, target)) / len(sim)
    if kind == "euclid":
        return 0.5 * sum((g - t).pow(2).sum() for g, t in zip(sim, target))
    raise ValueError(f"unknown gradient distance '{kind}': pass cosine, l2 or euclid")


def total_variation(x: torch.Tensor) -> torch.Tensor:
    """Anisotropic TV, mean |dx| + mean |dy| (inversefed's ``TV``)."""
    return (x[..., :, 1:] - x[..., :, :-1]).abs().mean() + (x[..., 1:, :] - x[..., :-1, :]).abs().mean()


class BudgetExceeded(RuntimeError):
    pass


class Matcher:
    """Gradient-matching loss for fixed labels; counts evaluations against the budget.

    Every call is one "step" of the equal optimization budget (restarts and the label
    mapping's trial evaluations included), and every call offers its candidate to the
    best-so-far tracker: an attack returns the candidate with the lowest gradient
    distance it ever evaluated (over restarts and, for GIFD, stages). ``stage`` names
    what the attack is doing; ``usage`` counts the evaluations each stage spent (the
    report of where the budget went, also when it ran out).
    """

    def __init__(self, inp: AttackInput, labels: torch.Tensor, budget: int, distance: str = "cosine"):
        self.inp, self.labels, self.budget, self.distance = inp, labels.to(inp.device), int(budget), distance
        self.target = [inp.target[n].detach().float() for n in inp.target]
        self.used = 0
        self.best_loss = math.inf
        self.best_x: torch.Tensor | None = None
        self.best_labels: torch.Tensor | None = None
        self.trace: list[float] = []
        self.stage = "attack"
        self.usage: dict[str, int] = {}

    @property
    def left(self) -> int:
        return self.budget - self.used

    def __call__(self, x: torch.Tensor, labels: torch.Tensor | None = None, track: bool = True,
                 differentiable: bool = True) -> torch.Tensor:
        """The distance of candidate ``x`` (labels: the matcher's, or ``labels``: indices or probabilities).

        ``differentiable=False`` (gradient-free search) skips the double-backward graph.
        """
        if self.used >= self.budget:
            raise BudgetExceeded(f"budget of {self.budget} gradient-matching steps spent")
        self.used += 1
        self.usage[self.stage] = self.usage.get(self.stage, 0) + 1
        y = self.labels if labels is None else labels
        with torch.enable_grad():
            loss = grad_distance(simulate(self.inp, x, y, create_graph=differentiable), self.target, self.distance)
        value = float(loss.detach())
        self.trace.append(value)
        if track and value < self.best_loss:
            self.best_loss, self.best_x = value, x.detach().clone()
            self.best_labels = y.detach().clone()
        return loss


def get_lr(t: float, initial_lr: float, rampdown: float = 0.75, rampup: float = 0.05) -> float:
    """ILO/GIFD's schedule: linear warm-up over 5%, cosine ramp-down over the last 75%."""
    ramp = min(1.0, (1 - t) / rampdown)
    ramp = 0.5 - 0.5 * math.cos(ramp * math.pi)
    ramp *= min(1.0, t / rampup) if rampup > 0 else 1.0
    return initial_lr * ramp


def split_budget(total: int, parts: int) -> list[int]:
    """``total`` steps as ``parts`` near-equal integers."""
    parts = max(int(parts), 1)
    base, extra = divmod(int(total), parts)
    return [base + (i < extra) for i in range(parts)]


def result(matcher: Matcher, fallback: torch.Tensor, labels: torch.Tensor, t0: float, **info) -> "AttackResult":
    """The attack's best candidate so far (``fallback``, e.g. its start, if the budget allowed no
    evaluation at all) with the budget each stage used: an attack out of budget ends here."""
    images = matcher.best_x if matcher.best_x is not None else fallback.detach()
    return AttackResult(images, labels, matcher.best_loss, matcher.used, time.perf_counter() - t0,
                        {"trace": matcher.trace, "budget-used": dict(matcher.usage), **info})


@dataclass
class AttackResult:
    """An attack's output: candidate inputs (normalized, like the model's inputs) and labels, on the CPU."""

    images: torch.Tensor
    labels: torch.Tensor
    grad_loss: float
    steps: int
    seconds: float = 0.0
    info: dict = field(default_factory=dict)

    def __post_init__(self):
        self.images, self.labels = self.images.detach().cpu(), self.labels.detach().cpu()
