"""The method registry: name -> (strategy class, client class).

A new method adds one line here and its two files; nothing else branches on it.

The classes are imported on first use, so a run imports only its own method's modules:
a module of another method that is broken (for instance while someone edits the working
tree that ``flwr run`` packs into the app) cannot fail this run's ServerApp or ClientApp.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass


def load(path: str) -> type:
    """``"module:Name"`` -> the object, imported on first use."""
    module, name = path.split(":")
    return getattr(importlib.import_module(module), name)


@dataclass(frozen=True)
class Method:
    strategy_path: str  # "module:Class"
    client_path: str

    @property
    def strategy(self) -> type:
        return load(self.strategy_path)

    @property
    def client(self) -> type:
        return load(self.client_path)


METHODS: dict[str, Method] = {
    "fedavg": Method("strategies.fedavg:FedAvgStrategy", "clients.fedavg:FedAvgClient"),
    "fedhip": Method("strategies.fedhip:FedHiPStrategy", "clients.fedhip:FedHiPClient"),
    "fedprox": Method("strategies.fedprox:FedProxStrategy", "clients.fedprox:FedProxClient"),
    "ditto": Method("strategies.ditto:DittoStrategy", "clients.ditto:DittoClient"),
    "gifd": Method("strategies.gifd:GifdStrategy", "clients.gifd:GifdClient"),
    "fedlsi": Method("strategies.fedlsi:FedLSIStrategy", "clients.fedlsi:FedLSIClient"),
    "fedsdwc": Method("strategies.fedsdwc:FedSDWCStrategy", "clients.fedsdwc:FedSDWCClient"),
    # FedSDWC's ablations (clients/fedsdwc.py: VARIANTS), so that one grid over `method` runs them all
    **{name: Method("strategies.fedsdwc:FedSDWCStrategy", "clients.fedsdwc:FedSDWCClient")
       for name in ("fedsdwc-no-fourier", "fedsdwc-no-link", "fedsdwc-no-intervention", "fedsdwc-no-generative",
                    "fedsdwc-no-kl")},
    "fedavg-fourier": Method("strategies.fedsdwc:FourierFedAvgStrategy", "clients.fedsdwc:FourierClient"),
}

# Keys every method has besides the run's own (``simulations/config.py``), declared next to
# the code that reads them; ``Keys.check`` holds their rules across keys.
SHARED_KEYS: tuple[str, ...] = ("evaluation.ood:OodKeys", "strategies.audit:AuditKeys", "clients.finetune:FinetuneKeys")
