"""FedDG-LSI's networks: the latent classifier model and the latent StarGAN.

- ``LatentNet``: encoder -> latent z -> classifier ``BatchNorm1d(affine=False) -> Linear``,
  as in the official code (``f(encoder, Sequential(fbn, outer_layer))``). Registered as
  ``lsi-<base>`` (``lsi-cnn``, ``lsi-resnet18``, ``lsi-wrn-16-2``): the encoder is the base
  model's ``features`` followed by a linear map to ``latent_dim`` (no activation, as the
  ResNet ``fc`` of the paper). Every method can use it (the DG sweep trains FedAvg on it too).
- ``Translator`` (G) and ``LatentDiscriminator`` (D): the MLPs of the official
  ``model/starganl.py``. G(z, c_org, c_trg) = MLP([z, onehot(c_org), onehot(c_trg)]).
  ``form`` (key ``lsi-translator``): ``tanh``, the official G (a Tanh head on raw z, so
  its output is bounded by 1 and the divergence loss pulls z toward the unit box);
  ``rescaled``, the ablation this project used before (linear head, G works on latents
  standardized to the inverted latents' per-dimension mean and std, ``set_scale``);
  ``residual``, G = z + MLP with a zero last layer (starts at the identity; measured: the
  cycle loss then holds G there, docs/methods/fedlsi.md, "The translator").
"""

from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional as F

LATENT_DIM = 128


class LatentNet(nn.Module):
    """``encoder`` (x -> z), ``classifier`` (z -> logits); ``forward`` gives logits."""

    def __init__(self, base: nn.Module, num_classes: int, latent_dim: int = LATENT_DIM):
        super().__init__()
        if not hasattr(base, "features") or not isinstance(getattr(base, "classifier", None), nn.Linear):
            raise ValueError("lsi-<base>: the base model needs .features and a Linear .classifier")
        self.encoder = nn.Sequential(base.features, nn.Linear(base.classifier.in_features, latent_dim))
        self.classifier = nn.Sequential(nn.BatchNorm1d(latent_dim, affine=False), nn.Linear(latent_dim, num_classes))
        self.latent_dim = latent_dim

    def forward_z(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        z = self.encoder(x)
        return z, self.classifier(z)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.encoder(x))


def head_keys(state: dict) -> list[str]:
    """The classifier head's entries of a LatentNet state dict (BN buffers + linear)."""
    return [k for k in state if k.startswith("classifier.")]


def build_head(state: dict[str, torch.Tensor]) -> nn.Sequential:
    """A standalone classifier head (eval mode) from ``classifier.*`` entries."""
    latent_dim = state["classifier.0.running_mean"].shape[0]
    num_classes = state["classifier.1.weight"].shape[0]
    head = nn.Sequential(nn.BatchNorm1d(latent_dim, affine=False), nn.Linear(latent_dim, num_classes))
    head.load_state_dict({k.removeprefix("classifier."): v for k, v in state.items()})
    for p in head.parameters():
        p.requires_grad_(False)
    return head.eval()


def onehot(codes: torch.Tensor, n: int) -> torch.Tensor:
    return F.one_hot(codes.long(), n).float()


FORMS = ("tanh", "rescaled", "residual")  # key lsi-translator; index = the ``form`` buffer


class Translator(nn.Module):
    """G: [z, c_org, c_trg] -> hidden -> LReLU -> LN -> Dropout -> hidden -> LReLU -> LN -> z' (-> Tanh)."""

    def __init__(self, latent_dim: int, num_domains: int, hidden: int = 256, form: str = "tanh"):
        super().__init__()
        if form not in FORMS:
            raise ValueError(f"translator form must be one of {FORMS}, got {form!r}")
        self.num_domains, self.form = num_domains, form
        layers = [
            nn.Linear(latent_dim + 2 * num_domains, hidden), nn.LeakyReLU(0.2), nn.LayerNorm(hidden), nn.Dropout(0.5),
            nn.Linear(hidden, hidden), nn.LeakyReLU(0.2), nn.LayerNorm(hidden),
            nn.Linear(hidden, latent_dim),
        ]
        if form == "tanh":
            layers.append(nn.Tanh())
        self.model = nn.Sequential(*layers)
        # The form travels with the weights (clients rebuild G from its state dict).
        self.register_buffer("form_id", torch.tensor(float(FORMS.index(form))))
        # rescaled/residual: G works on standardized latents (set_scale); identity until set.
        self.register_buffer("z_mean", torch.zeros(latent_dim))
        self.register_buffer("z_std", torch.ones(latent_dim))
        if form == "residual":  # start at the identity map: G(z, c, c') = z
            nn.init.zeros_(layers[7].weight)
            nn.init.zeros_(layers[7].bias)

    def forward(self, z: torch.Tensor, c_org: torch.Tensor, c_trg: torch.Tensor) -> torch.Tensor:
        """``c_org``/``c_trg``: domain codes (long, [B]) or one-hot rows ([B, D])."""
        if c_org.ndim == 1:
            c_org = onehot(c_org, self.num_domains)
        if c_trg.ndim == 1:
            c_trg = onehot(c_trg, self.num_domains)
        if self.form == "tanh":  # the official G: raw z in, bounded z' out
            return self.model(torch.cat([z, c_org, c_trg], dim=1))
        zn = (z - self.z_mean) / self.z_std
        out = self.model(torch.cat([zn, c_org, c_trg], dim=1))
        return (zn + out if self.form == "residual" else out) * self.z_std + self.z_mean

    @torch.no_grad()
    def set_scale(self, z: torch.Tensor) -> None:
        """rescaled/residual: standardize with the per-dimension mean and std of ``z``."""
        if self.form != "tanh":
            self.z_mean.copy_(z.mean(0))
            self.z_std.copy_(z.std(0).clamp_min(1e-6))


def translator_from_state(state: dict[str, torch.Tensor]) -> Translator:
    """Rebuild G from its state dict alone (shapes give latent dim, domains, hidden; the
    ``form_id`` buffer the form; a state without it is a pre-Tanh G: rescaled or residual)."""
    w0 = state["model.0.weight"]
    hidden, latent_dim = w0.shape[0], state["model.7.weight"].shape[0]
    if "form_id" in state:
        form = FORMS[int(state["form_id"])]
    else:
        form = "residual" if bool(state.get("is_residual", 0)) else "rescaled"
        state = {**{k: v for k, v in state.items() if k != "is_residual"}, "form_id": torch.tensor(float(FORMS.index(form)))}
    g = Translator(latent_dim, (w0.shape[1] - latent_dim) // 2, hidden, form=form)
    g.load_state_dict({**{k: v for k, v in g.state_dict().items() if k in ("z_mean", "z_std")}, **state})
    return g


class LatentDiscriminator(nn.Module):
    """D: z -> hidden -> LReLU -> LN -> Dropout -> hidden/2 -> LReLU -> LN; heads real/fake and domain."""

    def __init__(self, latent_dim: int, num_domains: int, hidden: int = 256):
        super().__init__()
        self.model = nn.Sequential(
            nn.Linear(latent_dim, hidden), nn.LeakyReLU(0.2), nn.LayerNorm(hidden), nn.Dropout(0.5),
            nn.Linear(hidden, hidden // 2), nn.LeakyReLU(0.2), nn.LayerNorm(hidden // 2),
        )
        self.domain_head = nn.Linear(hidden // 2, num_domains)
        self.real_fake_head = nn.Linear(hidden // 2, 1)

    def forward(self, z: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        h = self.model(z)
        return self.real_fake_head(h), self.domain_head(h)


def latent_model(name: str) -> str:
    """The model FedDG-LSI trains for ``model``: ``lsi-<model>`` (a latent BatchNorm1d head
    on the chosen model), so one sweep grid can hold every method with the same ``model``."""
    return name if name.startswith("lsi-") else f"lsi-{name}"
