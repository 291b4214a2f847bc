"""FedProx (Li et al., 2020): FedAvg aggregation; clients add a proximal term.

Like Flower's own FedProx, the server only announces ``proximal-mu`` in the train
config; the term itself lives in ``clients/fedprox.py``.
"""

from flwr.app import ArrayRecord, ConfigRecord, RecordDict

from .base import BaseStrategy


class FedProxStrategy(BaseStrategy):
    def train_record(self, server_round: int, arrays: ArrayRecord, config: ConfigRecord) -> RecordDict:
        config["proximal-mu"] = float(self.cfg["proximal-mu"])
        return super().train_record(server_round, arrays, config)
