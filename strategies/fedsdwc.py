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
from pydantic import Field

from clients.base import device_of, evaluate
from clients.fedsdwc import TERMS, variant_config
from common.keys import Int, Keys
from models.causal import build_sdwc

from .base import BaseStrategy
from .fedavg import FedAvgStrategy


class FedSDWCKeys(Keys):
    """FedSDWC's keys (also read by its ablation methods and ``fedavg-fourier``); readings of
    the paper behind each default: docs/methods/fedsdwc.md."""

    sdwc_fourier_alpha: float = Field(1.0, ge=0, le=1, description="amplitude-mix strength: lam ~ U(0, alpha); "
                                                                   "0 = no augmentation (was `fourier-alpha`)")
    intervention_gamma: float = Field(1.0, ge=0, description="std of the Gaussian noise added to the variant "
                                                             "feature h_v for the intervention")
    lambda_intervention: float = Field(1.0, ge=0, description="weight of the interventional consistency KL")
    sdwc_beta: float = Field(1e-4, ge=0, description="weight of the negative ELBO (sampled -log q(y|x), prior "
                                                     "and reconstruction terms) against the deterministic "
                                                     "cross-entropy (CSG's `wgen` for MNIST)")
    sdwc_kl: bool = Field(True, description="the ELBO's prior / KL term log q(s,v|x) - log p(s,v); "
                                            "false drops it (`fedsdwc-no-kl`)")
    sdwc_flip: bool = Field(True, description="random horizontal flip of the image and its Fourier partner "
                                              "(FOOGD's pre-transform) when `sdwc-fourier-alpha` > 0")
    sdwc_x_std: float = Field(0.1, gt=0, description="std of p(x | s, v) in normalized pixel units (CSG's "
                                                    "3e-2 in [0, 1] units is about 0.1 for MNIST-like data)")
    sdwc_latent_dim: Int = Field(16, ge=1, description="size of s0, v (and s)")
    sdwc_gmm_components: Int = Field(10, ge=1, description="components of each Gaussian-mixture prior")
    sdwc_mc_samples: Int = Field(1, ge=1, description="Monte Carlo samples of (s, v) per image (M)")
    sdwc_link: bool = Field(True, description="the weak link g(v); false = s = s0")
    sdwc_generative: bool = Field(True, description="the generative part p(x | s, v); false = no decoder")


class FourierFedAvgStrategy(FedAvgStrategy):
    keys = FedSDWCKeys


class FedSDWCStrategy(BaseStrategy):
    keys = FedSDWCKeys
    train_metrics = BaseStrategy.train_metrics | {f"train-{t}" for t in TERMS}  # what its client reports

    def __init__(self, cfg: dict, *args, **kwargs):
        super().__init__(variant_config(cfg), *args, **kwargs)

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
