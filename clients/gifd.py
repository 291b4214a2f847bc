"""The client of the GIFD attack experiment: one batch, one update, an optional defense.

In a round the server does not attack (``gifd-plain-round`` in the config) the client
trains as FedAvg's client does (``local-epochs``, ``batch-size``, ``lr``, ``momentum``), so a
run over many rounds trains the model. In an attacked round the client takes
``attack-batch-size`` images of its local training split (a seeded draw per run seed, round
and partition) and, as the server announced:

- ``fedsgd``: returns the gradient of the mean cross-entropy on that batch (record
  ``gradient``); the server applies the averaged gradient itself.
- ``fedavg``: runs ``attack-local-steps`` full-batch SGD steps (lr ``lr``, no momentum or
  weight decay, so that the announced hyperparameters describe the update exactly) and
  returns its weights (record ``arrays``).

The model runs in train mode, as in ordinary training (the project's CNN has no batch
norm or dropout, so train and eval mode coincide and the attacker, who announced the
procedure, simulates it exactly).

Defenses (``defense``; applied to the gradient, or to the update w_sent - w_new):
``none``; ``noise``: + N(0, ``defense-noise-std``^2) on every entry; ``clip``: scale the
whole update to global l2 norm <= ``defense-clip-norm``; ``prune``: zero the entries
whose magnitude is below the ``defense-prune-percentile``-th percentile of their tensor
(per layer, as GGL's/GIFD's ``defense.py``).

**Simulation-only channel.** When the server asks (``sim-ground-truth`` in the train
config of the attack round), the images and labels used are sent back in a separate
ArrayRecord named ``sim-ground-truth``. Only a node that allows it does so
(``clients.base.ground_truth_allowed``: the simulation engine, ``LocalGrid``, or a
SuperNode started with ``--node-config "sim-ground-truth=true"``); elsewhere the ClientApp
turns the request off before this client sees it and logs one warning line. The strategy
strips that record from the reply before validation and before any attack code runs,
and hands it to the evaluator only (see ``strategies/gifd.py``).
"""

from __future__ import annotations

import torch
from torch.nn import functional as F

from datasets.registry import ArrayDataset

from .base import Client, Reply, Tensors

DEFENSES = ("none", "noise", "clip", "prune")
GROUND_TRUTH = "sim-ground-truth"
PLAIN_ROUND = "gifd-plain-round"  # config flag: an ordinary FedAvg round (not attacked)


def apply_defense(update: Tensors, kind: str, noise_std: float = 0.0, clip_norm: float = 1.0,
                  prune_percentile: float = 0.0, seed: int = 0) -> Tensors:
    """A defended copy of ``update`` (gradient or weight delta), see module doc."""
    out = {k: v.detach().clone().float() for k, v in update.items()}
    if kind == "none":
        return out
    if kind == "noise":
        gen = torch.Generator().manual_seed(seed)
        return {k: v + noise_std * torch.randn(v.shape, generator=gen) for k, v in out.items()}
    if kind == "clip":
        norm = torch.sqrt(sum(v.pow(2).sum() for v in out.values()))
        scale = min(1.0, clip_norm / (float(norm) + 1e-12))
        return {k: v * scale for k, v in out.items()}
    if kind == "prune":
        pruned = {}
        for k, v in out.items():
            threshold = torch.quantile(v.abs().flatten(), prune_percentile / 100.0) if v.numel() > 1 else 0.0
            pruned[k] = torch.where(v.abs() < threshold, torch.zeros_like(v), v)
        return pruned
    raise ValueError(f"unknown defense '{kind}': pass one of {DEFENSES}")


class GifdClient(Client):
    def batch(self, server_round: int, size: int) -> tuple[torch.Tensor, torch.Tensor]:
        """``size`` images of the local training split, drawn per (seed, round, partition)."""
        gen = torch.Generator().manual_seed(self.seed(server_round))
        n = len(self.data.train)
        idx = torch.randperm(n, generator=gen)[: min(size, n)]
        if isinstance(self.data.train, ArrayDataset):
            x, y = self.data.train[idx]
        else:
            items = [self.data.train[int(i)] for i in idx]
            x, y = torch.stack([torch.as_tensor(a) for a, _ in items]), torch.tensor([int(b) for _, b in items])
        return x.float(), torch.as_tensor(y).long()

    def defend(self, update: Tensors, server_round: int) -> Tensors:
        cfg = self.cfg
        return apply_defense(update, cfg["defense"], float(cfg["defense-noise-std"]), float(cfg["defense-clip-norm"]),
                             float(cfg["defense-prune-percentile"]), seed=self.seed(server_round) + 1)

    def train(self, arrays: dict[str, Tensors], config: dict, stored: dict[str, Tensors]) -> Reply:
        if config.get(PLAIN_ROUND, False):
            return super().train(arrays, config, stored)
        rnd = int(config.get("server-round", 0))
        threat = str(config.get("attack-threat", self.cfg["attack-threat"]))
        size = int(config.get("attack-batch-size", self.cfg["attack-batch-size"]))
        lr = float(config.get("lr", self.cfg["lr"]))
        steps = int(config.get("attack-local-steps", self.cfg["attack-local-steps"]))
        self.set_weights(arrays["arrays"])
        model = self.model.train()
        x, y = self.batch(rnd, size)
        x, y = x.to(self.device), y.to(self.device)
        params = dict(model.named_parameters())
        sent = {k: v.detach().clone() for k, v in params.items()}
        if threat == "fedsgd":
            loss = F.cross_entropy(model(x), y)
            grads = torch.autograd.grad(loss, list(params.values()))
            update = self.defend({k: g.cpu() for k, g in zip(params, grads)}, rnd)
            out = {"gradient": update}
        else:
            opt = torch.optim.SGD(model.parameters(), lr=lr)
            for _ in range(max(steps, 1)):
                loss = F.cross_entropy(model(x), y)
                opt.zero_grad()
                loss.backward()
                opt.step()
            delta = self.defend({k: (sent[k] - p.detach()).cpu() for k, p in params.items()}, rnd)
            state = {k: v.detach().cpu() for k, v in model.state_dict().items()}
            state.update({k: sent[k].cpu() - delta[k] for k in delta})
            out = {"arrays": state}
        if config.get(GROUND_TRUTH, False):
            out[GROUND_TRUTH] = {"images": x.detach().cpu(), "labels": y.detach().cpu()}
        return Reply(out, {"train-loss": float(loss.detach()), "num-examples": len(y)})
