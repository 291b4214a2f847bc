"""Model registry: ``build_model(name, num_classes, input_shape)``.

Names: ``cnn`` (small CNN), ``resnet18`` (CIFAR-style), ``wrn-<depth>-<width>``
(CIFAR-style WideResNet, e.g. ``wrn-40-2``), ``timm:<model>`` (any timm architecture,
randomly initialized), ``pretrained:<timm model>[@<size>]`` (ImageNet weights, fine-tuned,
inputs resized to ``size``; see ``models.backbones``), ``linear:<timm model>[@<size>]`` (a
Linear head trained on that backbone's frozen, cached features, default size 64: FedHiP's
features, for FedAvg/FedProx baselines), ``lsi-<base>`` (FedDG-LSI's latent
model on any of these that exposes ``features`` and a Linear ``classifier``).
``norm=(mean, std)``, the dataset's normalization, is stored in a pretrained model's input
adapter (buffers, so it travels with the weights); other models ignore it.
"""

from __future__ import annotations

import re
from typing import Callable

from torch import nn

from .backbones import PretrainedNet, set_data_norm
from .cnn import SmallCNN
from .features import FrozenLinear
from .resnet import ResNet18, WideResNet
from .translator import LatentNet


class ModelError(ValueError):
    """Unknown or malformed model name."""


def _timm(name: str, num_classes: int, channels: int) -> nn.Module:
    import timm

    try:
        net = timm.create_model(name, pretrained=False, num_classes=num_classes, in_chans=channels)
    except RuntimeError as err:  # timm: "Unknown model (...)"
        raise ModelError(f"timm has no model '{name}': see timm.list_models()") from err
    return net


# Exact names, then patterns; each entry: (num_classes, channels, match) -> nn.Module.
MODELS: dict[str, Callable[..., nn.Module]] = {
    r"cnn": lambda c, ch, m: SmallCNN(c, ch),
    r"resnet18": lambda c, ch, m: ResNet18(c, ch),
    r"wrn-(\d+)-(\d+)": lambda c, ch, m: WideResNet(c, int(m[1]), int(m[2]), ch),
    r"timm:(.+)": lambda c, ch, m: _timm(m[1], c, ch),
    r"pretrained:([\w.]+)(?:@(\d+))?": lambda c, ch, m: PretrainedNet(m[1], c, ch, int(m[2] or 32)),
    r"linear:([\w.]+)(?:@(\d+))?": lambda c, ch, m: FrozenLinear(m[1], c, ch, int(m[2] or 64)),
    # FedDG-LSI: encoder -> z -> BatchNorm1d(affine=False) -> Linear, on one of our models.
    r"lsi-(.+)": lambda c, ch, m: LatentNet(build_model(m[1], c, (ch,)), c),
}


MODEL_NAMES = ("cnn, resnet18, wrn-<depth>-<width>, timm:<name>, pretrained:<name>[@<size>], linear:<name>[@<size>] "
               "or lsi-<one of these>")


def build_model(name: str, num_classes: int, input_shape: tuple[int, ...],
                norm: tuple | None = None) -> nn.Module:
    """Instantiate the model ``name`` for ``num_classes`` and inputs ``input_shape``."""
    for pattern, make in MODELS.items():
        match = re.fullmatch(pattern, name)
        if match:
            model = make(num_classes, input_shape[0], match)
            if norm is not None:
                set_data_norm(model, *norm)
            return model
    raise ModelError(f"unknown model '{name}': pass {MODEL_NAMES}")
