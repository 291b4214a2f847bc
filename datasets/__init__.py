"""Datasets: a registry of loaders (name -> DataBundle) and seeded partitioners."""

from .registry import DATASETS, DataBundle, DataError, load_dataset, load_for, register
from . import image_folder, offline, torchvision_sets  # noqa: E402,F401  (register loaders)
from . import domains  # noqa: E402,F401  (rotated-mnist)

__all__ = ["DATASETS", "DataBundle", "DataError", "load_dataset", "load_for", "register"]
