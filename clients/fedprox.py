"""FedProx client (Li et al., MLSys 2020): local loss + (mu/2) * ||w - w_global||^2.

``proximal-mu`` comes from the server's train config (as Flower's FedProx sends it),
falling back to the run config.
"""

from __future__ import annotations

import torch
from torch import nn

from .base import Client, Reply, Tensors


class FedProxClient(Client):
    def train(self, arrays: dict[str, Tensors], config: dict, stored: dict[str, Tensors]) -> Reply:
        self.mu = float(config.get("proximal-mu", self.cfg["proximal-mu"]))
        return super().train(arrays, config, stored)

    def extra_loss(self, model: nn.Module, global_weights: Tensors) -> torch.Tensor | float:
        if self.mu == 0:
            return 0.0
        prox = sum(
            (p - global_weights[name]).pow(2).sum() for name, p in model.named_parameters()
        )
        return 0.5 * self.mu * prox
