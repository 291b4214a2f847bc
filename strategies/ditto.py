"""Ditto (Li et al., ICML 2021): FedAvg on the global model; each client also trains a
personal model held near it by ``λ/2 ||v_k - w||²`` (``clients/ditto.py``).

The server is FedAvg's; like FedProx it only announces ``ditto-lambda`` in the train config.
Personalized accuracy is the personal models' (``global-model-local-accuracy``: the
global model's on the same local tests).
"""

from flwr.app import ArrayRecord, ConfigRecord, RecordDict
from pydantic import Field

from common.keys import Keys

from .base import BaseStrategy


class DittoKeys(Keys):
    ditto_lambda: float = Field(0.1, ge=0, description="λ, the weight of the personal model's pull towards the "
                                                       "global model (0 = local training only)")


class DittoStrategy(BaseStrategy):
    keys = DittoKeys

    def train_record(self, server_round: int, arrays: ArrayRecord, config: ConfigRecord) -> RecordDict:
        config["ditto-lambda"] = float(self.cfg["ditto-lambda"])
        return super().train_record(server_round, arrays, config)
