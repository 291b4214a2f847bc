"""FedSDWC (arXiv 2511.09036): FedAvg aggregation of the whole causal model.

Everything method-specific happens on the clients (``clients/fedsdwc.py``); the server
only builds FedSDWC's model (``models/causal.py``: the ``model`` key names its encoder)
for the initial weights and the global evaluation. The OOD suite (``corruptions``,
``ood-datasets``) runs on it through ``eval_model`` like for every other method.
"""

from __future__ import annotations

import torch
from flwr.app import ArrayRecord, MetricRecord

from clients.base import device_of, evaluate
from clients.fedsdwc import TERMS
from models.causal import build_sdwc

from .base import BaseStrategy


class FedSDWCStrategy(BaseStrategy):
    train_metrics = BaseStrategy.train_metrics | {f"train-{t}" for t in TERMS}  # what its client reports

    @staticmethod
    def check_config(cfg: dict) -> None:
        from simulations.config import ConfigError

        BaseStrategy.check_config(cfg)
        for key in ("sdwc-latent-dim", "sdwc-gmm-components", "sdwc-mc-samples"):
            if not (int(cfg[key]) == cfg[key] and cfg[key] >= 1):
                raise ConfigError(f"{key} must be an integer >= 1, got {cfg[key]}")
        for key in ("lambda-kl-semantic", "lambda-kl-variant", "lambda-kl-link", "lambda-intervention",
                    "intervention-gamma", "fourier-alpha", "sdwc-grad-clip"):
            if cfg[key] < 0:
                raise ConfigError(f"{key} must be >= 0, got {cfg[key]}")
        if cfg["fourier-alpha"] > 1:
            raise ConfigError(f"fourier-alpha must be in [0, 1] (lam ~ U(0, alpha)), got {cfg['fourier-alpha']}")
        if not cfg["sdwc-link-prior-std"] > 0:
            raise ConfigError(f"sdwc-link-prior-std must be > 0, got {cfg['sdwc-link-prior-std']}")

    def initial_arrays(self) -> ArrayRecord:
        data = self.test_data
        return ArrayRecord(build_sdwc(self.cfg, data.num_classes, data.input_shape).state_dict())

    def eval_model(self, arrays: ArrayRecord) -> torch.nn.Module:
        model = build_sdwc(self.cfg, self.test_data.num_classes, self.test_data.input_shape)
        model.load_state_dict(arrays.to_torch_state_dict())
        return model.eval()

    def evaluate_global(self, server_round: int, arrays: ArrayRecord) -> MetricRecord | None:
        if self.test_data is None:
            return None
        res = evaluate(self.eval_model(arrays), self.test_data.test, 512, device_of(self.cfg))
        return MetricRecord({"accuracy": res["accuracy"], "loss": res["loss"]})
