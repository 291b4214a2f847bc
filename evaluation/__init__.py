"""Evaluation that every method shares and that is not a strategy: the OOD suite (``ood``)."""
