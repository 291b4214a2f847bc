"""The method registry: name -> (strategy class, client class).

A new method adds one line here and its two files; nothing else branches on it.
"""

from __future__ import annotations

from dataclasses import dataclass

from clients.fedavg import FedAvgClient
from clients.gifd import GifdClient
from clients.fedhip import FedHiPClient
from clients.fedprox import FedProxClient
from clients.fedlsi import FedLSIClient
from clients.fedsdwc import FedSDWCClient
from strategies.fedavg import FedAvgStrategy
from strategies.gifd import GifdStrategy
from strategies.fedhip import FedHiPStrategy
from strategies.fedprox import FedProxStrategy
from strategies.fedlsi import FedLSIStrategy
from strategies.fedsdwc import FedSDWCStrategy


@dataclass(frozen=True)
class Method:
    strategy: type
    client: type


METHODS: dict[str, Method] = {
    "fedavg": Method(FedAvgStrategy, FedAvgClient),
    "fedhip": Method(FedHiPStrategy, FedHiPClient),
    "fedprox": Method(FedProxStrategy, FedProxClient),
    "gifd": Method(GifdStrategy, GifdClient),
    "fedlsi": Method(FedLSIStrategy, FedLSIClient),
    "fedsdwc": Method(FedSDWCStrategy, FedSDWCClient),
}
