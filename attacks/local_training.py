"""The announced local training, replayed on the attacker's candidate data.

A client of FedAvg, FedProx, FedSDWC or FedDG-LSI runs ``epochs`` passes of mini-batch SGD
(momentum, weight decay) over its ``num_examples`` images and returns its weights. The
server announced those hyperparameters and sees ``num-examples`` in the reply, but not the
data nor the client's shuffle. The multi-step attack (Geiping et al. 2020, Sec. 5;
breaching's ``multiple updates`` user) replays the same number of steps on a candidate
batch of ``num_examples`` images in a fixed order, differentiably, and matches the
resulting update ``w_sent - w_E``. With one batch per epoch (or one example) the replay
is exact; with several, the unknown shuffle makes it the attacker's approximation.

The replay uses cross-entropy (plus FedProx's proximal term when announced): for a method
whose local loss has more terms (FedSDWC's ELBO, FedDG-LSI's domain-invariance loss) the
replay is the attacker's simplification, so its leakage is a lower bound.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn
from torch.func import functional_call
from torch.nn import functional as F

Tensors = dict[str, torch.Tensor]


@dataclass(frozen=True)
class LocalTraining:
    """What the server announced about local training, plus the reply's example count."""

    lr: float
    epochs: int
    batch_size: int
    num_examples: int
    momentum: float = 0.0
    weight_decay: float = 0.0
    proximal_mu: float = 0.0

    def batches(self) -> list[slice]:
        """The step order the attacker assumes: every epoch, consecutive batches."""
        n, b = int(self.num_examples), max(int(self.batch_size), 1)
        one_epoch = [slice(i, min(i + b, n)) for i in range(0, n, b)]
        return one_epoch * max(int(self.epochs), 1)

    @property
    def steps(self) -> int:
        return len(self.batches())


def replay(model: nn.Module, params: Tensors, buffers: Tensors, x: torch.Tensor, y: torch.Tensor,
           proc: LocalTraining, create_graph: bool = True) -> list[torch.Tensor]:
    """``w_0 - w_E`` after ``proc`` on (x, y), as torch.optim.SGD computes it (dampening 0)."""
    names = list(params)
    start = {n: params[n].detach().requires_grad_(True) for n in names}
    p, velocity = dict(start), None
    for sl in proc.batches():
        logits = functional_call(model, {**buffers, **p}, (x[sl],))
        loss = F.cross_entropy(logits, y[sl])
        if proc.proximal_mu:
            loss = loss + 0.5 * proc.proximal_mu * sum((p[n] - start[n].detach()).pow(2).sum() for n in names)
        grads = torch.autograd.grad(loss, [p[n] for n in names], create_graph=create_graph)
        grads = [g + proc.weight_decay * p[n] if proc.weight_decay else g for n, g in zip(names, grads)]
        if proc.momentum:
            velocity = grads if velocity is None else [proc.momentum * v + g for v, g in zip(velocity, grads)]
            grads = velocity
        p = {n: p[n] - proc.lr * g for n, g in zip(names, grads)}
    return [start[n] - p[n] for n in names]
