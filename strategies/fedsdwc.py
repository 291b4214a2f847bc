"""FedSDWC (arXiv 2511.09036): FedAvg aggregation of the whole causal model.

Everything method-specific happens on the clients (``clients/fedsdwc.py``); the server
only builds FedSDWC's model (``models/causal.py``: the ``model`` key names its encoder)
for the initial weights and the global evaluation. The OOD suite (``corruptions``,
``ood-datasets``) runs on it through ``eval_model`` like for every other method.
"""

from __future__ import annotations

import torch
from flwr.app import ArrayRecord, MetricRecord
from pydantic import Field

from clients.base import device_of, evaluate
from clients.fedsdwc import TERMS
from models.causal import build_sdwc
from simulations.keys import Int, Keys

from .base import BaseStrategy


class FedSDWCKeys(Keys):
    fourier_alpha: float = Field(1.0, ge=0, le=1, description="amplitude-mix strength: lam ~ U(0, alpha); "
                                                              "0 = no augmentation")
    intervention_gamma: float = Field(0.5, ge=0, description="std of the noise added to the variant feature h_v "
                                                             "for the intervention")
    lambda_intervention: float = Field(1.0, ge=0, description="weight of the interventional consistency KL")
    lambda_kl_semantic: float = Field(0.01, ge=0, description="weight of KL(q(s|x) || N(m_y, I))")
    lambda_kl_variant: float = Field(0.01, ge=0, description="weight of the variant factor's KL to its mixture prior")
    lambda_kl_link: float = Field(0.01, ge=0, description="weight of the link's KL to N(0, tau^2 I)")
    sdwc_latent_dim: Int = Field(32, ge=1, description="size of s, v and l")
    sdwc_gmm_components: Int = Field(4, ge=1, description="components of the variant factor's mixture prior")
    sdwc_link_prior_std: float = Field(0.1, gt=0, description="tau, the std of the link's prior")
    sdwc_mc_samples: Int = Field(1, ge=1, description="Monte Carlo samples of (s, v, l) per image in the ELBO")
    sdwc_grad_clip: float = Field(5.0, ge=0, description="gradient-norm clipping of the local step (0 = off)")


class FedSDWCStrategy(BaseStrategy):
    keys = FedSDWCKeys
    train_metrics = BaseStrategy.train_metrics | {f"train-{t}" for t in TERMS}  # what its client reports

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
