"""FedHiP's client and the analytic (closed-form) maths shared with its strategy.

Everything is float64 ``torch.linalg``; there is no gradient step anywhere.

- Features: a frozen backbone (``models.features``) run once per dataset and process
  (``cached_features``), so train and evaluate messages never re-extract.
- Local training: ``G_k = X_kᵀX_k``, ``Q_k = X_kᵀY_k`` (one-hot), class counts; the local
  ridge model ``W_k = (G_k + γI)⁻¹Q_k`` is kept in the node's state. Only the upper
  triangle of ``G_k`` is sent (``pack_triu``).
- Local personalization (evaluate message, which carries the global model ``W`` and, when
  needed, the global sums ``G, Q``), with the paper's α >= 0 weighting the LOCAL side
  (α = 0: the global model; α -> inf: the local one):
  ``weights`` (default): ``W_k^p = (W + αW_k) / (1 + α)``;
  ``statistics``: ``W_k^p = (G + αG_k + (1+α)γI)⁻¹(Q + αQ_k)``, the global regularized
  Gram ``G + γI`` plus α times the client's ``G_k + γI`` (own samples weigh 1 + α).
- ``fedhip-alpha=auto``: α is chosen per client from ``fedhip-alpha-grid`` on its
  validation split (``ClientData.val``, ``local-val-fraction``: rows in no client's train
  split, so in no sums; the split every method chooses on, reported as
  ``personalized-val-accuracy``). The local test split is read only for the metric.
"""

from __future__ import annotations

import math
from collections import OrderedDict
from logging import WARNING

import torch
from flwr.common.logger import log
from torch.nn import functional as F
from torch.utils.data import Dataset

from common.progress import LogProgress
from models.features import extractor, feature_key

from .base import (
    DEFAULT_MIN_CLASS_SAMPLES,
    MIN_CLASS_SAMPLES,
    Client,
    ClientData,
    Reply,
    Tensors,
    batches,
    device_of,
)

STATS = "fedhip-stats"  # reply record: gram-triu, q, counts
GLOBAL = "fedhip-global"  # evaluate record: the same keys, summed over clients
LOCAL, PERSONAL = "fedhip-local", "fedhip-personal"  # kept in context.state
DTYPE = torch.float64
MAX_COND = 1e12  # a Cholesky solve past this condition falls back to least squares
NO_VAL_ALPHA = 1.0  # α of a client without a validation sample: global and local models alike


# ---- features ---------------------------------------------------------------------
def dataset_norm(data: Dataset) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """Mean/std a dataset normalized its images with (to undo before the backbone)."""
    if hasattr(data, "mean") and hasattr(data, "std"):
        return tuple(data.mean.flatten().tolist()), tuple(data.std.flatten().tolist())
    from datasets.image_folder import (  # image folders normalize so
        IMAGENET_MEAN,
        IMAGENET_STD,
    )

    return IMAGENET_MEAN, IMAGENET_STD


# (id(dataset), feature key) -> (dataset, X, y); the dataset is held so its id stays unique.
_FEATURES: OrderedDict[tuple, tuple[Dataset, torch.Tensor, torch.Tensor]] = OrderedDict()
FEATURE_CACHE_SIZE = 64


def cached_features(cfg: dict, data: Dataset, batch_size: int = 256) -> tuple[torch.Tensor, torch.Tensor]:
    """(features [N, d] float32, labels [N]) of ``data``, computed once per process."""
    fkey = feature_key(cfg)
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
    """Weight-level fusion ``(W + αW_k) / (1 + α)`` of the global and local ridge models.

    Its logits mix the two models' logits; α weights the local side (0: global, inf:
    local). ``W`` depends only on the global sums and ``W_k`` only on client k's data, so
    the result is the same however the other clients' data is split.
    """
    if math.isinf(alpha):
        return W_k.to(DTYPE)
    return (W.to(DTYPE) + alpha * W_k.to(DTYPE)) / (1 + alpha)


def personalize_statistics(G: torch.Tensor, Q: torch.Tensor, G_k: torch.Tensor, Q_k: torch.Tensor,
                           alpha: float, gamma: float) -> torch.Tensor:
    """Statistics-level fusion of the REGULARIZED Grams, ``(G + γI) + α(G_k + γI)``:
    ``(G + αG_k + (1+α)γI)⁻¹(Q + αQ_k)``, from the global sums (which hold client k's data
    once) and client k's own. α = 0: the global ridge model; α -> inf: the local ridge
    model ``(G_k + γI)⁻¹Q_k`` (the ridge term grows with α, so the limit keeps γ, not
    γ/(1+α)). Invariant for the same reason as ``personalize``."""
    if math.isinf(alpha):
        return ridge_solve(G_k, Q_k, gamma, "personalized (local) model")
    return ridge_solve(G.to(DTYPE) + alpha * G_k.to(DTYPE), Q.to(DTYPE) + alpha * Q_k.to(DTYPE),
                       (1 + alpha) * gamma, "personalized model")


FORMS = ("statistics", "weights")


def candidates(form: str, G, Q, G_k, Q_k, alphas: list[float], gamma: float) -> list[torch.Tensor]:
    """The personalized model of ``form`` for each α."""
    if form == "weights":
        W, W_k = ridge_solve(G, Q, gamma, "global model"), ridge_solve(G_k, Q_k, gamma, "local model")
        return [personalize(W, W_k, a) for a in alphas]
    return [personalize_statistics(G, Q, G_k, Q_k, a, gamma) for a in alphas]


def score_alphas(form: str, G, Q, G_k, Q_k, Xv: torch.Tensor, yv: torch.Tensor, alphas: list[float],
                 gamma: float, num_classes: int) -> tuple[float, float]:
    """(α, validation accuracy) of the best candidate fit on (G, Q, G_k, Q_k), none of which
    holds the validation rows (Xv, yv). Ties: the lower squared error."""
    if len(yv) == 0:
        return NO_VAL_ALPHA, float("nan")
    Xv, Yv = Xv.to(DTYPE), F.one_hot(yv.long(), num_classes).to(DTYPE)
    scores = []
    for a, W in zip(alphas, candidates(form, G, Q, G_k, Q_k, alphas, gamma)):
        out = Xv @ W
        scores.append((float((out.argmax(1) == yv).double().mean()), -float(((out - Yv) ** 2).mean()), a))
    best = max(scores, key=lambda t: (t[0], t[1]))
    return best[2], best[0]


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
        self.alpha = cfg["fedhip-alpha"]
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
        Gs, Qs, shared = self.shared_statistics(X, y, G, Q, counts)
        stats = {"gram-triu": pack_triu(Gs), "q": Qs, "counts": shared}
        metrics = {"num-examples": int(shared.sum()), "train-accuracy": accuracy(W, X, y)}
        return Reply({STATS: stats}, metrics, keep={LOCAL: {"weight": W}})

    def shared_statistics(self, X, y, G, Q, counts):
        """The node-side privacy floor: a class with fewer than ``min-class-samples`` samples
        (node config, default 2) is withheld from the uploaded statistics, since its
        column of ``Q_k`` would be that one sample's exact features. The local model
        still uses every sample (it stays on the node)."""
        floor = int(self.cfg.get(MIN_CLASS_SAMPLES, DEFAULT_MIN_CLASS_SAMPLES))
        withheld = ((counts > 0) & (counts < floor)).nonzero().flatten().tolist()
        if not withheld:
            return G, Q, counts
        keep = ~torch.isin(y.long(), torch.tensor(withheld))
        if not keep.any():
            raise ValueError(f"partition {self.data.partition_id} withholds every class: each has fewer than "
                             f"min-class-samples={floor} samples")
        log(WARNING, "fedhip: partition %d withholds class(es) %s from its statistics (fewer than "
            "min-class-samples=%d samples each)", self.data.partition_id, withheld, floor)
        return statistics(X[keep], y[keep], self.data.num_classes)

    def local_model(self, stored: dict[str, Tensors]) -> torch.Tensor:
        """The local ridge model: kept from the train message, else solved now."""
        if LOCAL in stored:
            return stored[LOCAL]["weight"].to(DTYPE)
        _, _, G, Q, _ = self.local_statistics()
        return ridge_solve(G, Q, self.gamma, f"partition {self.data.partition_id} local model")

    def alphas(self) -> list[float]:
        return [float(a) for a in str(self.cfg["fedhip-alpha-grid"]).split(",")]

    def evaluate(self, arrays: dict[str, Tensors], config: dict, stored: dict[str, Tensors]) -> Reply:
        """Phase 3: the personalized model (kept); its accuracy on the local test split.

        With ``fedhip-alpha=auto`` both forms pick their α on the validation split and
        report it (``val-accuracy-<form>``, ``accuracy-<form>``); ``personal-fusion``
        names the one that becomes the personalized model."""
        W = arrays.get("arrays", {}).get("weight")
        if W is None:
            raise RuntimeError("fedhip: the evaluate message carries no global model")
        W = W.to(DTYPE)
        X, y, G_k, Q_k, _ = self.local_statistics()
        W_k = self.local_model(stored)
        glob = arrays.get(GLOBAL)
        G = Q = None
        if glob is not None:
            G, Q = unpack_triu(glob["gram-triu"].to(DTYPE), G_k.shape[0]), glob["q"].to(DTYPE)
        elif self.fusion == "statistics" or self.alpha == "auto":
            raise RuntimeError(f"fedhip: this personalization needs the '{GLOBAL}' record (the global sums)")
        Xt, yt = self.features(self.data.test)  # the local test split: only for the metrics below
        metrics = {"num-examples": len(yt), "global-accuracy": accuracy(W, Xt, yt),
                   "local-accuracy": accuracy(W_k, Xt, yt)}
        forms = FORMS if self.alpha == "auto" else (self.fusion,)
        # the client's validation split (local-val-fraction): in no one's sums, never the test split
        Xv, yv = self.features(self.data.val) if self.data.val is not None else (X[:0], y[:0])
        chosen = {}
        if self.alpha == "auto":
            if len(yv) == 0:
                log(WARNING, "fedhip: partition %d has no validation sample: α = %g (pass local-val-fraction > 0)",
                    self.data.partition_id, NO_VAL_ALPHA)
            for form in forms:
                a, acc = score_alphas(form, G, Q, G_k, Q_k, Xv, yv, self.alphas(), self.gamma, self.data.num_classes)
                chosen[form] = a
                metrics[f"alpha-{form}"] = a
                if math.isfinite(acc):  # no validation sample (a one-sample client): no score
                    metrics[f"val-accuracy-{form}"] = acc
        else:
            chosen[self.fusion] = float(self.alpha)
        for form in forms:
            a = chosen[form]
            W_p = personalize(W, W_k, a) if form == "weights" else personalize_statistics(G, Q, G_k, Q_k, a, self.gamma)
            metrics[f"accuracy-{form}"] = accuracy(W_p, Xt, yt)
            if form == self.fusion:
                keep = W_p
                metrics["accuracy"] = metrics[f"accuracy-{form}"]
                if f"val-accuracy-{form}" in metrics:  # the column every method is selected on
                    metrics["val-accuracy"] = metrics[f"val-accuracy-{form}"]  # (personalized-val-accuracy)
                elif len(yv):  # a fixed α: scored on the same rows
                    metrics["val-accuracy"] = accuracy(W_p, Xv, yv)
                metrics["fedhip-alpha"] = min(a, 1e12)
        return Reply({}, metrics, keep={PERSONAL: {"weight": keep}})
