"""Frozen backbone features: FedHiP's extractor, and the ``linear:`` model on the same features.

- ``FeatureExtractor``: dataset tensors -> features (``InputAdapter`` -> frozen backbone
  -> optional ``RandomBuffer``), float32 on the CPU.
- ``extractor(feature_key(cfg))``: one extractor per process and key (``FEATURE_KEYS``).
- Features are cached per sample (content hash) in the extractor, so within a process a
  backbone runs once per image whichever run, client or model asks (``FrozenLinear``:
  FedAvg/FedProx on the same features as FedHiP).
- ``use_disk_cache(folder)`` also shares them between processes (a sweep's ``--jobs``
  runs) through ``folder`` (``feature_store.FeatureStore``); ``flush()`` writes what this
  process computed since its last flush.
"""

from __future__ import annotations

import functools
import hashlib
import re
from collections import OrderedDict
from pathlib import Path
from typing import Sequence

import torch
from torch import nn

from .backbones import InputAdapter, RandomBuffer, backbone_norm, load_backbone
from .feature_store import FeatureStore

STORE_FORMAT = 1  # bump when preprocessing changes the features of the same weights
FEATURE_KEYS = ("backbone", "pretrained", "backbone-size", "buffer-size", "seed", "backbone-weights", "backbone-layer")

_DISK: dict[str, Path | None] = {"folder": None}  # use_disk_cache's folder for this process
_UNSAVED: set = set()  # extractors holding features not yet written: kept alive until ``flush``


def use_disk_cache(folder: str | Path | None) -> None:
    """From now on, every extractor of this process reads and writes features in
    ``folder`` (None: memory only). A run sets it at its start (``feature-cache``)."""
    _DISK["folder"] = Path(folder) if folder else None


def flush() -> None:
    """Write the features every extractor computed since its last flush to its disk store."""
    for fe in list(_UNSAVED):
        fe.flush()


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
        self.identity = (name, int(size), int(buffer_size), self.layer, self.device.type)
        self.store: FeatureStore | None = None  # the disk cache in use (``use_disk_cache``)
        self.unsaved: dict[bytes, torch.Tensor] = {}  # computed, not yet in the store
        self._fingerprint: str | None = None

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
        """Features of a batch; samples seen before (same pixels, same norm) come from the
        cache, then from the disk store, and only the rest from the backbone."""
        if len(x) == 0:
            return torch.zeros(0, self.dim)
        salt = repr((tuple(mean), tuple(std))).encode()
        flat = x.detach().to("cpu", torch.float32).contiguous()
        keys = [hashlib.blake2b(salt + row.numpy().tobytes(), digest_size=16).digest() for row in flat]
        found = {k: self.cache[k] for k in keys if k in self.cache}
        store = self._store() if len(found) < len(keys) else None
        if store is not None:  # what this or another process wrote
            for k, f in store.get([k for k in keys if k not in found]).items():
                found[k] = self.cache[k] = f
        todo = [i for i, k in enumerate(keys) if k not in found]
        if todo:
            fresh = self.compute(x[todo], mean, std)
            self.computed += len(todo)
            for i, f in zip(todo, fresh):
                found[keys[i]] = self.cache[keys[i]] = f.clone()
                if store is not None:
                    self.unsaved[keys[i]] = found[keys[i]]
                    _UNSAVED.add(self)
        while len(self.cache) > self.CACHE_SIZE:
            self.cache.popitem(last=False)
        return torch.stack([found[k] for k in keys])

    def _store(self) -> FeatureStore | None:
        """The store of ``use_disk_cache``'s folder (re-chosen when a run changes it)."""
        folder = _DISK["folder"]
        if self.store is not None and self.store.folder.parent != folder:
            self.flush()
            self.store = None
        if self.store is None and folder is not None:
            name = re.sub(r"[^A-Za-z0-9_.-]+", "-", self.identity[0])
            self.store = FeatureStore(folder / f"{name}-{self.identity[1]}-{self.fingerprint()}", self.dim)
        return self.store

    def fingerprint(self) -> str:
        """Digest of all the features depend on besides the image and its norm: the
        weights, the buffer, input size, layer, device type and the torch/timm versions
        (a store is shared only by extractors that compute the same numbers)."""
        if self._fingerprint is None:
            import timm

            h = hashlib.blake2b(repr((STORE_FORMAT, self.identity, self.dim, torch.__version__,
                                      timm.__version__)).encode(), digest_size=10)
            named = [*self.net.state_dict().items(), ("net_mean", self.adapter.net_mean),
                     ("net_std", self.adapter.net_std),
                     *((("buffer", self.buffer.weight),) if self.buffer is not None else ())]
            for name, t in named:
                h.update(name.encode())
                h.update(t.detach().cpu().contiguous().view(-1).view(torch.uint8).numpy().tobytes())
            self._fingerprint = h.hexdigest()
        return self._fingerprint

    def flush(self) -> None:
        """Write the features computed since the last flush to the disk store."""
        if self.store is not None and self.unsaved:
            self.store.write(self.unsaved)
        self.unsaved = {}
        _UNSAVED.discard(self)


def feature_key(cfg: dict) -> tuple:
    """``FEATURE_KEYS`` values; the seed only where it changes the features (a random
    backbone or buffer), so runs with other seeds share the cached features."""
    name, pretrained, size, buffer_size, seed, weights, layer = (cfg[k] for k in FEATURE_KEYS)
    seeded = (not pretrained and not weights) or int(buffer_size) > 0
    return (str(name), bool(pretrained), int(size), int(buffer_size), int(seed) if seeded else 0, str(weights),
            int(layer))


@functools.lru_cache(maxsize=2)
def extractor(key: tuple, device: str = "cpu"):
    """The frozen backbone for a ``feature_key`` (built once per process)."""
    name, pretrained, size, buffer_size, seed, weights, layer = key
    return FeatureExtractor(name, bool(pretrained), int(size), int(buffer_size), int(seed), device, weights, layer)



class FrozenLinear(nn.Module):
    """``linear:<timm name>[@<size>]``: a Linear head on frozen, cached backbone features.

    Only the head (and the dataset norm buffers) is in the state dict, so FedAvg/FedProx
    send and train just the head, on the same features as FedHiP's defaults
    (pretrained weights, no buffer).
    """

    def __init__(self, name: str, num_classes: int, channels: int = 1, size: int = 64):
        super().__init__()
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
