"""FedAvg (McMahan et al., 2017): the base strategy as it is."""

from .base import BaseStrategy


class FedAvgStrategy(BaseStrategy):
    """Weighted parameter averaging; everything is inherited."""
