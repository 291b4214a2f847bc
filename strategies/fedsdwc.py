"""FedSDWC (arXiv 2511.09036): FedAvg aggregation of the causal model.

The paper's server "aggregates the updated client models using the FedAvg algorithm";
everything method-specific is on the clients (``clients/fedsdwc.py``). The server builds
the model (``models/causal.py``) for the initial weights and the global evaluation, where
the OOD suite scores its mean-path prediction. The averaged prior means only seed clients
in their first round: each client then keeps its own p(s, v). ``FourierFedAvgStrategy``
serves the ``fedavg-fourier`` ablation (plain FedAvg; its client augments).
"""

from __future__ import annotations

import torch
from flwr.app import ArrayRecord, MetricRecord

from clients.base import device_of, evaluate
from clients.fedsdwc import variant_config
from models.causal import build_sdwc

from .base import BaseStrategy
from .fedavg import FedAvgStrategy


def check_fourier(cfg: dict) -> None:
    from simulations.config import ConfigError

    if not 0 <= cfg["sdwc-fourier-alpha"] <= 1:
        raise ConfigError(f"sdwc-fourier-alpha must be in [0, 1] (lam ~ U(0, alpha)), got {cfg['sdwc-fourier-alpha']}")


class FourierFedAvgStrategy(FedAvgStrategy):
    @staticmethod
    def check_config(cfg: dict) -> None:
        BaseStrategy.check_config(cfg)
        check_fourier(cfg)


class FedSDWCStrategy(BaseStrategy):
    def __init__(self, cfg: dict, *args, **kwargs):
        super().__init__(variant_config(cfg), *args, **kwargs)

    @staticmethod
    def check_config(cfg: dict) -> None:
        from simulations.config import ConfigError

        BaseStrategy.check_config(cfg)
        check_fourier(cfg)
        for key in ("sdwc-latent-dim", "sdwc-gmm-components", "sdwc-mc-samples"):
            if not (int(cfg[key]) == cfg[key] and cfg[key] >= 1):
                raise ConfigError(f"{key} must be an integer >= 1, got {cfg[key]}")
        for key in ("lambda-intervention", "intervention-gamma"):
            if cfg[key] < 0:
                raise ConfigError(f"{key} must be >= 0, got {cfg[key]}")
        if not cfg["sdwc-x-std"] > 0:
            raise ConfigError(f"sdwc-x-std must be > 0, got {cfg['sdwc-x-std']}")

    def build(self) -> torch.nn.Module:
        return build_sdwc(self.cfg, self.test_data.num_classes, self.test_data.input_shape)

    def initial_arrays(self) -> ArrayRecord:
        return ArrayRecord(self.build().state_dict())

    def eval_model(self, arrays: ArrayRecord) -> torch.nn.Module:
        model = self.build()
        model.load_state_dict(arrays.to_torch_state_dict())
        return model.eval()

    def evaluate_global(self, server_round: int, arrays: ArrayRecord) -> MetricRecord | None:
        if self.test_data is None:
            return None
        res = evaluate(self.eval_model(arrays), self.test_data.test, 512, device_of(self.cfg))
        return MetricRecord({"accuracy": res["accuracy"], "loss": res["loss"]})
