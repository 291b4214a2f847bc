"""A small CNN for 28x28-class inputs (McMahan et al.'s MNIST CNN, slimmer)."""

from __future__ import annotations

import torch
from torch import nn


class SmallCNN(nn.Module):
    """conv(32)-pool-conv(64)-pool-fc(128)-fc(C); any input size and channel count."""

    def __init__(self, num_classes: int, in_channels: int = 1, feature_dim: int = 128):
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(in_channels, 32, 5, padding=2),
            nn.ReLU(),
            nn.MaxPool2d(2),
            nn.Conv2d(32, 64, 5, padding=2),
            nn.ReLU(),
            nn.MaxPool2d(2),
            nn.AdaptiveAvgPool2d(4),
            nn.Flatten(),
            nn.Linear(64 * 16, feature_dim),
            nn.ReLU(),
        )
        self.classifier = nn.Linear(feature_dim, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.features(x))
