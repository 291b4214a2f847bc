"""FedProx (Li et al., 2020): FedAvg aggregation; clients add a proximal term.

Like Flower's own FedProx, the server only announces ``proximal-mu`` in the train
config; the term itself lives in ``clients/fedprox.py``.
"""

from flwr.app import ArrayRecord, ConfigRecord, RecordDict
from pydantic import Field

from common.keys import Keys

from .base import BaseStrategy


class FedProxKeys(Keys):
    proximal_mu: float = Field(0.01, ge=0, description="weight mu of the proximal term")


class FedProxStrategy(BaseStrategy):
    keys = FedProxKeys

    def train_record(self, server_round: int, arrays: ArrayRecord, config: ConfigRecord) -> RecordDict:
        config["proximal-mu"] = float(self.cfg["proximal-mu"])
        return super().train_record(server_round, arrays, config)
