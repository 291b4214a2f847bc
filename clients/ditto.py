"""Ditto's client (Li et al., ICML 2021, "Ditto: Fair and Robust Federated Learning
Through Personalization"): two models per client.

- The global update is FedAvg's local SGD on the received model (what is sent back).
- The personal model ``v_k`` (kept in the node's state, started from the first global
  model the client receives) then takes the same number of local epochs, on the same
  batches, of SGD on ``CE(v_k) + λ/2 ||v_k - w||²`` with ``w`` the global model received
  this round (``ditto-lambda``, announced by the server). λ = 0 is local training only;
  a large λ holds ``v_k`` at the global model.
- Evaluate: ``accuracy`` is the personal model's on the local test split (the run's
  ``personalized-accuracy``), ``global-accuracy`` the received global model's there.
"""

from __future__ import annotations

import torch
from torch import nn

from .base import Client, Reply, Tensors

PERSONAL = "ditto-personal"  # kept in context.state


class DittoClient(Client):
    lam = 0.0  # the proximal weight of the step being taken (0 during the global update)

    def extra_loss(self, model: nn.Module, global_weights: Tensors) -> torch.Tensor | float:
        if self.lam == 0:
            return 0.0
        return 0.5 * self.lam * sum((p - global_weights[name]).pow(2).sum() for name, p in model.named_parameters())

    def train(self, arrays: dict[str, Tensors], config: dict, stored: dict[str, Tensors]) -> Reply:
        received = arrays["arrays"]
        self.lam = 0.0
        reply = super().train(arrays, config, stored)  # the global update (FedAvg's)
        self.lam = float(config.get("ditto-lambda", self.cfg["ditto-lambda"]))
        personal, _ = self.local_sgd(stored.get(PERSONAL, received), received, int(self.cfg["local-epochs"]),
                                        self.seed(int(config.get("server-round", 0))))
        reply.keep[PERSONAL] = personal
        return reply

    def evaluate(self, arrays: dict[str, Tensors], config: dict, stored: dict[str, Tensors]) -> dict[str, float]:
        """The personal model on the local test (and validation) split; a client not yet
        trained has none and is scored with the global model."""
        self.set_weights(arrays["arrays"])
        glob = self.score(self.data.test)["accuracy"]
        self.set_weights(stored.get(PERSONAL, arrays["arrays"]))
        out = {**self.score(self.data.test), "global-accuracy": glob}
        if self.data.val is not None:
            out["val-accuracy"] = self.score(self.data.val)["accuracy"]
        return out
