"""The method registry: name -> (strategy class, client class).

A new method adds one line here and its two files; nothing else branches on it.
"""

from __future__ import annotations

from dataclasses import dataclass

from clients.fedavg import FedAvgClient
from clients.fedprox import FedProxClient
from strategies.fedavg import FedAvgStrategy
from strategies.fedprox import FedProxStrategy


@dataclass(frozen=True)
class Method:
    strategy: type
    client: type


METHODS: dict[str, Method] = {
    "fedavg": Method(FedAvgStrategy, FedAvgClient),
    "fedprox": Method(FedProxStrategy, FedProxClient),
}
