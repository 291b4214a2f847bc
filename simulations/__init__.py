"""Flower apps, the method registry, config, sweeps and the results writer."""
