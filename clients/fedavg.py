"""FedAvg's client is the base client: local SGD on cross-entropy."""

from .base import Client as FedAvgClient

__all__ = ["FedAvgClient"]
