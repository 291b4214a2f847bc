"""The generative prior seen by GGL and GIFD, and GIFD's label mapping.

``GanPrior`` wraps a stage-split generator (``models/generator.py``) and turns its
output (tanh, [-1, 1]) into model inputs exactly as the clients preprocess images:
pixels ``(g + 1) / 2``, resized (area) to the FL input size, channels repeated or
averaged, then normalized with the FL dataset's public mean/std (pitfall: a
normalization mismatch ruins inversions, breaching#20/#34).

Label mapping (out-of-distribution priors). The official code uses the inferred FL label
directly as the GAN class (BigGAN: ``one_hot(label, 1000)``) and has no mapping for a
label-inconsistent GAN, although the paper describes one; its exact rule could not be
read here [paper]. Rules offered (``gan-label-map``):

- ``identity``: FL class c -> GAN class c. Used by ``auto`` when the prior's label space
  is the FL dataset's (``digits`` prior for MNIST: same digits).
- ``model``: the issue's rule: generate samples of every GAN class, feed them to the FL
  model and map each FL class to the GAN class whose samples the model assigns to it
  most (mean softmax), one-to-one where the class counts allow (Hungarian assignment).
  Meaningful for a trained FL model; at round 1 the model is untrained, so the mapping
  is close to arbitrary.
- ``gradient`` (``auto``'s choice for label-inconsistent priors): for each inferred FL
  label, try every GAN class with a few random latents and keep the class whose samples'
  gradient-matching loss is lowest. It uses only what the attacker has (the update) and
  works with an untrained model; its trial evaluations are charged to the attack's
  equal optimization budget, at most a quarter of it (fewer samples per class, or the
  ``model`` rule when even one per class does not fit: a small budget never ends here).
"""

from __future__ import annotations

import torch
from torch.func import functional_call
from torch.nn import functional as F

from models.generator import Generator, load_checkpoint

from .common import AttackInput, Matcher

LABEL_MAPS = ("auto", "identity", "model", "gradient")
MAP_SHARE = 0.25  # the most of an attack's budget the gradient label mapping may spend


class GanPrior:
    def __init__(self, gen: Generator, label_space: str = "", classes: list[str] | None = None, name: str = ""):
        self.gen = gen.eval().requires_grad_(False)
        self.label_space = label_space
        self.classes = list(classes or [str(i) for i in range(gen.num_classes)])
        self.name = name

    @classmethod
    def load(cls, path, name: str = "", device: torch.device | str = "cpu") -> "GanPrior":
        """A checkpoint (weights only, never unpickled) loaded straight onto ``device``."""
        gen, info = load_checkpoint(path, device)
        return cls(gen, info.get("label-space", ""), info.get("classes"), name or str(path))

    @property
    def device(self) -> torch.device:
        return next(self.gen.parameters()).device

    def to(self, device: torch.device | str) -> "GanPrior":
        """The generator moved to ``device`` (in place; a no-op where it is)."""
        if torch.device(device) != self.device:
            self.gen.to(device)
        return self

    @property
    def z_dim(self) -> int:
        return self.gen.z_dim

    @property
    def num_classes(self) -> int:
        return self.gen.num_classes

    def consistent_with(self, label_space: str, num_classes: int) -> bool:
        return self.label_space == label_space and self.num_classes == num_classes

    def to_input(self, g: torch.Tensor, inp: AttackInput) -> torch.Tensor:
        """Generator output in [-1, 1] -> a normalized model input of the FL shape."""
        pix = (g + 1) / 2
        c, h, w = inp.input_shape
        if pix.shape[-2:] != (h, w):
            pix = F.interpolate(pix, size=(h, w), mode="area" if pix.shape[-1] > w else "bilinear",
                                align_corners=None if pix.shape[-1] > w else False)
        if pix.shape[1] != c:
            pix = pix.repeat(1, c, 1, 1) if pix.shape[1] == 1 else pix.mean(1, keepdim=True).repeat(1, c, 1, 1)
        return (pix - inp.mean) / inp.std

    def image(self, h: torch.Tensor, y: torch.Tensor, inp: AttackInput, start: int = 0) -> torch.Tensor:
        """Model input rendered from ``h`` = the input of generator stage ``start``."""
        return self.to_input(self.gen.run(h, y, start), inp)

    def feature(self, h: torch.Tensor, y: torch.Tensor, start: int, end: int) -> torch.Tensor:
        return self.gen.run(h, y, start, end)

    # ---- label mapping ---------------------------------------------------------------
    def resolve_rule(self, rule: str, label_space: str, num_classes: int) -> str:
        if rule not in LABEL_MAPS:
            raise ValueError(f"unknown gan-label-map '{rule}': pass one of {LABEL_MAPS}")
        if rule == "auto":
            return "identity" if self.consistent_with(label_space, num_classes) else "gradient"
        return rule

    @torch.no_grad()
    def model_mapping(self, inp: AttackInput, samples: int = 16, seed: int = 0) -> torch.Tensor:
        """FL class -> GAN class by the FL model's mean softmax on GAN samples (Hungarian)."""
        from scipy.optimize import linear_sum_assignment

        gen = torch.Generator().manual_seed(seed)  # latents drawn on the CPU, then moved
        probs = []
        for c in range(self.num_classes):
            z = torch.randn(samples, self.z_dim, generator=gen).to(inp.device)
            x = self.image(z, torch.full((samples,), c, device=inp.device), inp)
            logits = functional_call(inp.model, {**inp.buffers, **inp.params}, (x,))
            probs.append(logits.softmax(1).mean(0))
        score = torch.stack(probs)  # [gan class, fl class]
        if self.num_classes >= inp.num_classes:
            rows, cols = linear_sum_assignment(-score.cpu().numpy())
            mapping = torch.zeros(inp.num_classes, dtype=torch.long)
            mapping[torch.as_tensor(cols)] = torch.as_tensor(rows)
            return mapping.to(inp.device)
        return score.argmax(0)

    def gradient_mapping(self, matcher: Matcher, fl_labels: torch.Tensor, inp: AttackInput, start: torch.Tensor,
                         samples: int = 3, seed: int = 0, share: float = MAP_SHARE) -> torch.Tensor:
        """Per distinct FL label (coordinate-wise), the GAN class with the lowest matching loss.

        Spends at most ``share`` of the budget left: fewer samples per class when it is
        small, and ``start`` (the model's mapping, no evaluation) when it cannot try every
        class once."""
        distinct = fl_labels.unique()
        samples = min(int(samples), int(matcher.left * share) // (len(distinct) * self.num_classes))
        if samples < 1:
            return start.clone()
        gen = torch.Generator().manual_seed(seed)
        y_gan = start.clone()
        matcher.stage, before = "label-map", matcher.stage
        for label in distinct:
            where = fl_labels == label
            losses = []
            for c in range(self.num_classes):
                trial = y_gan.clone()
                trial[where] = c
                total = 0.0
                for _ in range(samples):
                    z = torch.randn(len(fl_labels), self.z_dim, generator=gen).to(inp.device)
                    with torch.enable_grad():
                        total += float(matcher(self.image(z, trial, inp), track=False).detach())
                losses.append(total / samples)
            y_gan[where] = int(torch.tensor(losses).argmin())
        matcher.stage = before
        return y_gan

    def map_labels(self, fl_labels: torch.Tensor, inp: AttackInput, rule: str, label_space: str,
                   matcher: Matcher | None = None, seed: int = 0, samples: int = 3) -> torch.Tensor:
        """GAN classes to render the inferred FL labels with (see module doc)."""
        rule = self.resolve_rule(rule, label_space, inp.num_classes)
        if rule == "identity":
            if int(fl_labels.max()) >= self.num_classes:
                raise ValueError(f"identity label map: FL label {int(fl_labels.max())} but the GAN has "
                                 f"{self.num_classes} classes; pass gan-label-map=gradient or model")
            return fl_labels.clone()
        start = self.model_mapping(inp, seed=seed)[fl_labels]
        if rule == "model":
            return start
        if matcher is None:
            raise ValueError("gradient label mapping needs the attack's matcher")
        return self.gradient_mapping(matcher, fl_labels, inp, start, samples=samples, seed=seed)
