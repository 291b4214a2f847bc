"""FedHiP's client and the analytic (closed-form) maths shared with its strategy.

Everything is float64 ``torch.linalg``; there is no gradient step anywhere.

- Features: a frozen backbone (``models.backbones``) run once per dataset and process
  (``cached_features``), so train and evaluate messages never re-extract.
- Local training: ``G_k = X_kᵀX_k``, ``Q_k = X_kᵀY_k`` (one-hot), class counts; the local
  ridge model ``W_k = (G_k + γI)⁻¹Q_k`` is kept in the node's state. Only the upper
  triangle of ``G_k`` is sent (``pack_triu``).
- Local personalization (evaluate message): ``personal-fusion=weights`` (default)
  ``W_k^p = α W + (1-α) W_k`` from the global model ``W``; ``statistics`` (the message then
  carries the global sums) ``W_k^p = (αG + (1-α)G_k + γI)⁻¹(αQ + (1-α)Q_k)``;
  ``α = alpha-personal``. See strategies/fedhip.py for why ``weights`` is the default.
"""

from __future__ import annotations

import functools
from collections import OrderedDict
from logging import WARNING

import torch
from flwr.common.logger import log
from torch.nn import functional as F
from torch.utils.data import Dataset

from simulations.progress import LogProgress

from .base import Client, ClientData, Reply, Tensors, batches, device_of

STATS = "fedhip-stats"  # reply record: gram-triu, q, counts
GLOBAL = "fedhip-global"  # evaluate record: the same keys, summed over clients
LOCAL, PERSONAL = "fedhip-local", "fedhip-personal"  # kept in context.state
FEATURE_KEYS = ("backbone", "pretrained", "backbone-size", "buffer-size", "seed")
DTYPE = torch.float64
MAX_COND = 1e12  # a Cholesky solve past this condition falls back to least squares


# ---- features ---------------------------------------------------------------------
@functools.lru_cache(maxsize=2)
def extractor(key: tuple, device: str = "cpu"):
    """The frozen backbone for ``FEATURE_KEYS`` values (built once per process)."""
    from models.backbones import FeatureExtractor

    name, pretrained, size, buffer_size, seed = key
    return FeatureExtractor(name, bool(pretrained), int(size), int(buffer_size), int(seed), device)


def dataset_norm(data: Dataset) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """Mean/std a dataset normalized its images with (to undo before the backbone)."""
    if hasattr(data, "mean") and hasattr(data, "std"):
        return tuple(data.mean.flatten().tolist()), tuple(data.std.flatten().tolist())
    from datasets.image_folder import IMAGENET_MEAN, IMAGENET_STD  # image folders normalize so

    return IMAGENET_MEAN, IMAGENET_STD


# (id(dataset), feature key) -> (dataset, X, y); the dataset is held so its id stays unique.
_FEATURES: OrderedDict[tuple, tuple[Dataset, torch.Tensor, torch.Tensor]] = OrderedDict()
FEATURE_CACHE_SIZE = 64


def cached_features(cfg: dict, data: Dataset, batch_size: int = 256) -> tuple[torch.Tensor, torch.Tensor]:
    """(features [N, d] float32, labels [N]) of ``data``, computed once per process."""
    fkey = tuple(cfg[k] for k in FEATURE_KEYS)
    key = (id(data), fkey)
    if key in _FEATURES:
        _FEATURES.move_to_end(key)
        return _FEATURES[key][1:]
    fe = extractor(fkey, str(device_of(cfg)))
    mean, std = dataset_norm(data)
    xs, ys = [], []
    progress = LogProgress("fedhip backbone features", len(data), "image")
    for x, y in batches(data, batch_size):
        xs.append(fe(x, mean, std))
        ys.append(torch.as_tensor(y))
        progress.tick(len(x))
    X = torch.cat(xs) if xs else torch.zeros(0, fe.dim)
    Y = torch.cat(ys).long() if ys else torch.zeros(0, dtype=torch.long)
    _FEATURES[key] = (data, X, Y)
    while len(_FEATURES) > FEATURE_CACHE_SIZE:
        _FEATURES.popitem(last=False)
    return X, Y


# ---- closed-form maths ------------------------------------------------------------
def statistics(X: torch.Tensor, y: torch.Tensor, num_classes: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Gram ``XᵀX`` (d x d), cross-correlation ``XᵀY`` (d x C) and class counts (C)."""
    X = X.to(DTYPE)
    Y = F.one_hot(y.long(), num_classes).to(DTYPE)
    return X.T @ X, X.T @ Y, Y.sum(0)


def pack_triu(G: torch.Tensor) -> torch.Tensor:
    """Upper triangle (diagonal included) of a symmetric matrix, row by row."""
    r, c = torch.triu_indices(G.shape[0], G.shape[0])
    return G[r, c]


def unpack_triu(v: torch.Tensor, d: int) -> torch.Tensor:
    """Inverse of ``pack_triu``: an exactly symmetric d x d matrix."""
    r, c = torch.triu_indices(d, d)
    G = torch.zeros(d, d, dtype=v.dtype)
    G[r, c] = v
    G[c, r] = v
    return G


def triu_size(d: int) -> int:
    return d * (d + 1) // 2


def ridge_solve(A: torch.Tensor, B: torch.Tensor, gamma: float, what: str = "model") -> torch.Tensor:
    """``(A + γI)⁻¹B`` by Cholesky; if that fails (singular, e.g. γ = 0 with collinear
    features or fewer samples than features) the minimum-norm least-squares solution,
    with a warning. Never forms an inverse."""
    A = A.to(DTYPE)
    M = A + gamma * torch.eye(A.shape[0], dtype=DTYPE)
    L, info = torch.linalg.cholesky_ex(M)
    diag = L.diagonal()
    # (max/min pivot)² bounds cond(M) from below: past 1e12 float64 keeps < 4 digits.
    if int(info) == 0 and diag.min() > 0 and float((diag.max() / diag.min()) ** 2) < MAX_COND:
        W = torch.cholesky_solve(B.to(DTYPE), L)
        if torch.isfinite(W).all():
            return W
    log(WARNING, "fedhip: %s: Gram + %g*I is singular or ill-conditioned; using the "
        "minimum-norm least-squares solution (raise ridge-gamma)", what, gamma)
    return torch.linalg.lstsq(M, B.to(DTYPE), driver="gelsd").solution


def personalize(W: torch.Tensor, W_k: torch.Tensor, alpha: float) -> torch.Tensor:
    """Weight-level fusion ``αW + (1-α)W_k`` of the global and the local ridge models.

    Its logits are the α-mix of the two models' logits. ``W`` depends only on the global
    sums and ``W_k`` only on client k's data, so the result is the same however the other
    clients' data is split (heterogeneity invariance). α = 1: global; α = 0: local.
    """
    return alpha * W.to(DTYPE) + (1 - alpha) * W_k.to(DTYPE)


def personalize_statistics(G: torch.Tensor, Q: torch.Tensor, G_k: torch.Tensor, Q_k: torch.Tensor,
                           alpha: float, gamma: float) -> torch.Tensor:
    """Statistic-level fusion ``(αG + (1-α)G_k + γI)⁻¹(αQ + (1-α)Q_k)``: the ridge model of
    a re-weighted pool (own samples weigh 1, the others α). Invariant for the same reason."""
    return ridge_solve(alpha * G + (1 - alpha) * G_k, alpha * Q + (1 - alpha) * Q_k, gamma, "personalized model")


def accuracy(W: torch.Tensor, X: torch.Tensor, y: torch.Tensor) -> float:
    if len(y) == 0:
        return 0.0
    return float(((X.to(DTYPE) @ W).argmax(1) == y).double().mean())


def degenerate(counts: torch.Tensor) -> str | None:
    """Why local statistics are degenerate (one sample, one class), or None."""
    n, present = int(counts.sum()), int((counts > 0).sum())
    if n < 2:
        return f"{n} sample(s)"
    if present < 2:
        return f"a single class ({int(counts.argmax())}) among {n} samples"
    return None


# ---- the client ---------------------------------------------------------------------
class FedHiPClient(Client):
    """Analytic local training and personalization on frozen-backbone features."""

    def __init__(self, cfg: dict, data: ClientData):  # no trainable network: skip Client's
        self.cfg, self.data = cfg, data
        self.device = device_of(cfg)
        self.gamma = float(cfg["ridge-gamma"])
        self.alpha = float(cfg["alpha-personal"])
        self.fusion = str(cfg["personal-fusion"])

    def features(self, data: Dataset) -> tuple[torch.Tensor, torch.Tensor]:
        """Features and labels of one of this client's splits (cached)."""
        return cached_features(self.cfg, data)

    def local_statistics(self):
        X, y = self.features(self.data.train)
        G, Q, counts = statistics(X, y, self.data.num_classes)
        reason = degenerate(counts)
        if reason:
            log(WARNING, "fedhip: partition %d has %s: its local model is degenerate "
                "(ridge-gamma keeps it finite)", self.data.partition_id, reason)
        return X, y, G, Q, counts

    def train(self, arrays: dict[str, Tensors], config: dict, stored: dict[str, Tensors]) -> Reply:
        """Phase 1: local statistics and the local ridge model (kept, not sent)."""
        X, y, G, Q, counts = self.local_statistics()
        W = ridge_solve(G, Q, self.gamma, f"partition {self.data.partition_id} local model")
        stats = {"gram-triu": pack_triu(G), "q": Q, "counts": counts}
        metrics = {"num-examples": len(y), "train-accuracy": accuracy(W, X, y)}
        return Reply({STATS: stats}, metrics, keep={LOCAL: {"weight": W}})

    def local_model(self, stored: dict[str, Tensors]) -> torch.Tensor:
        """The local ridge model: kept from the train message, else solved now."""
        if LOCAL in stored:
            return stored[LOCAL]["weight"].to(DTYPE)
        _, _, G, Q, _ = self.local_statistics()
        return ridge_solve(G, Q, self.gamma, f"partition {self.data.partition_id} local model")

    def evaluate(self, arrays: dict[str, Tensors], config: dict, stored: dict[str, Tensors]) -> Reply:
        """Phase 3: the personalized model (kept); its accuracy on the local test split."""
        W = arrays.get("arrays", {}).get("weight")
        if W is None:
            raise RuntimeError("fedhip: the evaluate message carries no global model")
        W = W.to(DTYPE)
        if self.fusion == "statistics":
            glob = arrays.get(GLOBAL)
            if glob is None:
                raise RuntimeError(f"fedhip: personal-fusion=statistics needs the '{GLOBAL}' record")
            _, _, G_k, Q_k, _ = self.local_statistics()
            G = unpack_triu(glob["gram-triu"].to(DTYPE), G_k.shape[0])
            W_p = personalize_statistics(G, glob["q"].to(DTYPE), G_k, Q_k, self.alpha, self.gamma)
        else:
            W_p = personalize(W, self.local_model(stored), self.alpha)
        Xt, yt = self.features(self.data.test)
        metrics = {"num-examples": len(yt), "accuracy": accuracy(W_p, Xt, yt), "global-accuracy": accuracy(W, Xt, yt)}
        return Reply({}, metrics, keep={PERSONAL: {"weight": W_p}})
