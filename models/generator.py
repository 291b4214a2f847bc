"""A small class-conditional generator split into named stages (the GIFD prior).

GIFD (Fang et al., ICCV 2023) optimizes a GAN's latent code and then, one stage at a
time, the generator's *intermediate features*. That needs a generator that can be run
from any stage to any later one; the official code does this by hand-splitting BigGAN
and StyleGAN2. No pretrained GAN can be downloaded here, so this is a DCGAN/BigGAN-style
generator small enough to train in minutes on 2 CPU cores
(``python -m attacks.train_gan``), for 28x28 (or 32x32, any size divisible
by 4) images:

    stage     input                        output (28x28, default widths)
    fc        z (z_dim) ++ class embedding  h1: 64 x 7 x 7
    block1    h1  (CBN-ReLU-conv3x3)        h2: 32 x 7 x 7
    block2    h2  (CBN-ReLU-up2-conv3x3)    h3: 16 x 14 x 14
    block3    h3  (CBN-ReLU-up2-conv3x3)    h4: 8 x 28 x 28
    out       h4  (BN-ReLU-conv3x3-tanh)    image in [-1, 1]

``run(h, y, start, end)`` runs stages ``start .. end-1`` on ``h`` (the input of stage
``start``: ``z`` for 0), so GIFD's feature domains are the outputs of stages 0..3.
The class enters through the input embedding and through class-conditional batch norm
(CBN: per-class gain and bias, as in BigGAN) in every block, so a feature optimized at
stage k is still rendered for the inferred class by the stages after it. Batch-norm
layers are used in eval mode (running statistics) at attack time.

A user's own generator plugs in through the same checkpoint format
(``save_checkpoint``/``load_checkpoint``: constructor kwargs + state dict + the label
space it was trained on), e.g. a wider one trained on more data.
"""

from __future__ import annotations

from pathlib import Path

import torch
from torch import nn
from torch.nn import functional as F


class CondBatchNorm(nn.Module):
    """BatchNorm without affine parameters, then a per-class gain (1 + g[y]) and bias b[y]."""

    def __init__(self, channels: int, num_classes: int):
        super().__init__()
        self.bn = nn.BatchNorm2d(channels, affine=False)
        self.gain = nn.Embedding(num_classes, channels)
        self.bias = nn.Embedding(num_classes, channels)
        nn.init.zeros_(self.gain.weight)
        nn.init.zeros_(self.bias.weight)

    def forward(self, h: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        g = 1 + self.gain(y)[:, :, None, None]
        b = self.bias(y)[:, :, None, None]
        return self.bn(h) * g + b


class Block(nn.Module):
    """CBN -> ReLU -> (nearest x2 upsample) -> conv3x3."""

    def __init__(self, cin: int, cout: int, num_classes: int, up: bool):
        super().__init__()
        self.norm = CondBatchNorm(cin, num_classes)
        self.conv = nn.Conv2d(cin, cout, 3, padding=1)
        self.up = up

    def forward(self, h: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        h = F.relu(self.norm(h, y))
        if self.up:
            h = F.interpolate(h, scale_factor=2, mode="nearest")
        return self.conv(h)


class Generator(nn.Module):
    """Class-conditional generator whose stages can be run separately (see module doc)."""

    stage_names = ("fc", "block1", "block2", "block3", "out")

    def __init__(self, num_classes: int = 10, z_dim: int = 32, widths: tuple[int, ...] = (64, 32, 16, 8),
                 image_size: int = 28, channels: int = 1, embed_dim: int = 16):
        super().__init__()
        if image_size % 4:
            raise ValueError(f"image_size must be divisible by 4, got {image_size}")
        self.kwargs = dict(num_classes=num_classes, z_dim=z_dim, widths=tuple(widths), image_size=image_size,
                           channels=channels, embed_dim=embed_dim)
        self.num_classes, self.z_dim, self.image_size, self.channels = num_classes, z_dim, image_size, channels
        w0, w1, w2, w3 = widths
        self.s0 = image_size // 4
        self.embed = nn.Embedding(num_classes, embed_dim)
        self.fc = nn.Linear(z_dim + embed_dim, w0 * self.s0 * self.s0)
        self.block1 = Block(w0, w1, num_classes, up=False)
        self.block2 = Block(w1, w2, num_classes, up=True)
        self.block3 = Block(w2, w3, num_classes, up=True)
        self.out_norm = nn.BatchNorm2d(w3)
        self.out_conv = nn.Conv2d(w3, channels, 3, padding=1)
        self.widths = (w0, w1, w2, w3)

    @property
    def num_stages(self) -> int:
        return len(self.stage_names)

    def stage(self, i: int, h: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """Apply stage ``i`` to its input ``h`` for classes ``y``."""
        if i == 0:
            h = self.fc(torch.cat([h, self.embed(y)], 1))
            return h.view(len(h), self.widths[0], self.s0, self.s0)
        if i in (1, 2, 3):
            return (self.block1, self.block2, self.block3)[i - 1](h, y)
        if i == 4:
            return torch.tanh(self.out_conv(F.relu(self.out_norm(h))))
        raise IndexError(f"stage {i} out of range 0..{self.num_stages - 1}")

    def run(self, h: torch.Tensor, y: torch.Tensor, start: int = 0, end: int | None = None) -> torch.Tensor:
        """Run stages ``start .. end-1``; ``h`` is the input of stage ``start`` (``z`` for 0)."""
        end = self.num_stages if end is None else end
        for i in range(start, end):
            h = self.stage(i, h, y)
        return h

    def forward(self, z: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        return self.run(z, y)


def save_checkpoint(path: Path, gen: Generator, label_space: str, classes: list[str], meta: dict | None = None) -> None:
    """Write ``{kwargs, state_dict, label-space, classes, meta}`` atomically."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(path.suffix + ".part")
    torch.save({"kwargs": gen.kwargs, "state_dict": gen.state_dict(), "label-space": label_space,
                "classes": list(classes), "meta": dict(meta or {})}, tmp)
    tmp.replace(path)


def load_checkpoint(path: Path, device: torch.device | str = "cpu") -> tuple[Generator, dict]:
    """The generator (eval mode, frozen, on ``device``) and the checkpoint's other fields (weights only)."""
    ckpt = torch.load(Path(path), map_location=device, weights_only=True)
    gen = Generator(**ckpt["kwargs"]).to(device)
    gen.load_state_dict(ckpt["state_dict"])
    gen.eval().requires_grad_(False)
    info = {k: v for k, v in ckpt.items() if k not in ("state_dict",)}
    return gen, info
