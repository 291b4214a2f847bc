"""FedHiP (Tang et al., arXiv 2508.04470): personalized FL by closed-form solutions, one round.

A frozen pretrained backbone gives features; the classifier is a ridge regression on
one-hot labels, solved in closed form (float64):

1. Local statistics (train message): client k sends ``G_k = X_kᵀX_k`` (upper triangle
   only), ``Q_k = X_kᵀY_k`` and its class counts.
2. Global model (``aggregate``): ``W = (G + γI)⁻¹Q`` with ``G = Σ G_k``, ``Q = Σ Q_k``
   (Cholesky solve): the centralized ridge solution on the pooled data, whatever the
   split and the arrival order.
3. Personalization (evaluate message, which carries ``W``): client k mixes the global
   and its own solution and reports the mix's accuracy on its local test split.

``check_config`` sets ``num-server-rounds`` to 1 (a second round would recompute the
same model), so a sweep can grid ``method: [fedavg, fedhip]``. The choices the paper's
text leaves open, with their evidence, are in docs/methods/fedhip.md.
"""

from __future__ import annotations

import time
from logging import INFO, WARNING
from typing import Iterable, Literal

import numpy as np
import torch
from flwr.app import ArrayRecord, ConfigRecord, Message, MetricRecord, RecordDict
from flwr.common.logger import log
from flwr.serverapp import Grid
from pydantic import Field

from simulations.keys import Int, Keys

from clients.fedhip import (DTYPE, FEATURE_KEYS, GLOBAL, STATS, accuracy, cached_features, degenerate, extractor,
                            ridge_solve, triu_size, unpack_triu)

from .base import BaseStrategy, record_bytes


def sum_statistics(stats: list[dict[str, torch.Tensor]]) -> dict[str, torch.Tensor]:
    """Σ over clients of packed Gram, Q and counts (float64)."""
    return {key: torch.stack([s[key].to(DTYPE) for s in stats]).sum(0) for key in ("gram-triu", "q", "counts")}


def global_model(G: torch.Tensor, Q: torch.Tensor, gamma: float, num_clients: int, clean: bool) -> torch.Tensor:
    """``(G + γI)⁻¹Q`` (cleaned: the centralized ridge solution) or AFL's ``(G + KγI)⁻¹Q``."""
    return ridge_solve(G, Q, gamma if clean else gamma * num_clients, "global model")


def rank_warning(G: torch.Tensor, gamma: float) -> None:
    """Warn when the pooled Gram is rank-deficient (collinear/duplicated features, N < d)."""
    eig = torch.linalg.eigvalsh(G)
    tol = eig.abs().max().clamp_min(1e-300) * G.shape[0] * torch.finfo(DTYPE).eps
    rank = int((eig > tol).sum())
    if rank < G.shape[0]:
        log(WARNING, "fedhip: the pooled Gram has rank %d < %d features (collinear or duplicated "
            "features, or fewer samples than features); %s", rank, G.shape[0],
            f"ridge-gamma={gamma:g} keeps the solve well-posed" if gamma > 0 else
            "with ridge-gamma=0 the minimum-norm least-squares solution is used")


class AnalyticClassifier(torch.nn.Module):
    """``x -> logits``: frozen backbone features times the closed-form classifier ``W``."""

    def __init__(self, features, W: torch.Tensor, mean, std):
        super().__init__()
        self.features, self.mean, self.std = features, mean, std
        self.register_buffer("W", W.to(DTYPE))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return (self.features(x, self.mean, self.std).to(DTYPE) @ self.W.cpu()).float().to(x.device)


class FedHiPKeys(Keys):
    backbone: str = Field("tf_efficientnet_lite0", min_length=1, description="timm name of the frozen backbone")
    pretrained: bool = Field(True, description="load the backbone's shipped weights; `false`: a seeded random "
                                               "backbone")
    backbone_size: Int = Field(64, ge=16, description="input side in pixels fed to the backbone")
    buffer_size: Int = Field(0, ge=0, description="random ReLU feature expansion to this width (0 = off)")
    ridge_gamma: float = Field(100.0, ge=0, description="ridge term γ")
    alpha_personal: float = Field(0.5, ge=0, le=1, description="α, the global model's weight in the personalized "
                                                               "one (1 = global, 0 = local)")
    personal_fusion: Literal["weights", "statistics"] = Field(
        "weights", description="`weights`: αW + (1-α)W_k; `statistics`: mix G and Q, then solve")
    clean_reg: bool = Field(True, description="add γ once (the centralized ridge solution); `false`: AFL's "
                                              "(G + KγI)⁻¹Q for K clients")


class FedHiPStrategy(BaseStrategy):
    """One round: sum the clients' statistics, solve, send the sums back to personalize."""

    train_metrics = frozenset({"num-examples", "train-accuracy"})  # what its client reports
    evaluate_metrics = frozenset({"num-examples", "accuracy", "global-accuracy"})

    def __init__(self, cfg: dict, test_data=None, on_round=None):
        super().__init__(cfg, test_data, on_round)
        self.gamma = float(cfg["ridge-gamma"])
        self.global_stats: ArrayRecord | None = None

    keys = FedHiPKeys

    @staticmethod
    def check_config(cfg: dict) -> None:
        BaseStrategy.check_config(cfg)
        cfg["num-server-rounds"] = 1  # one-shot by construction (see the module docstring)

    # ---- what is sent and expected ---------------------------------------------------
    def feature_dim(self) -> int:
        return extractor(tuple(self.cfg[k] for k in FEATURE_KEYS)).dim

    def initial_arrays(self) -> ArrayRecord:
        """A zero classifier (d x C): there is nothing to send before the one round."""
        return ArrayRecord({"weight": torch.zeros(self.feature_dim(), self.test_data.num_classes, dtype=DTYPE)})

    def train_record(self, server_round: int, arrays: ArrayRecord, config: ConfigRecord) -> RecordDict:
        return RecordDict({"config": config})  # clients need no model to compute statistics

    def expected_arrays(self, arrays: ArrayRecord) -> dict[str, dict[str, tuple]]:
        d, c = arrays["weight"].shape
        return {STATS: {"gram-triu": (triu_size(d),), "q": (d, c), "counts": (c,)}}

    # ---- aggregation ---------------------------------------------------------------
    def aggregate(self, server_round: int, replies: list[Message]):
        stats = [m.content.array_records[STATS].to_torch_state_dict() for m in replies]
        for msg, s in zip(replies, stats):
            reason = degenerate(s["counts"])
            if reason:
                log(WARNING, "fedhip: partition %s holds %s", self.partition_of(msg, "?"), reason)
        total = sum_statistics(stats)
        d = total["q"].shape[0]
        G = unpack_triu(total["gram-triu"], d)
        rank_warning(G, self.gamma)
        W = global_model(G, total["q"], self.gamma, len(stats), bool(self.cfg["clean-reg"]))
        self.global_stats = ArrayRecord(total)
        n = int(total["counts"].sum())
        return ArrayRecord({"weight": W}), MetricRecord({"num-examples": n, "feature-dim": d})

    # ---- personalization (evaluate) -----------------------------------------------
    def configure_evaluate(self, server_round: int, arrays: ArrayRecord, config: ConfigRecord,
                           grid: Grid) -> Iterable[Message]:
        """Base's messages (global model), plus the global sums for statistics-fusion."""
        msgs = list(super().configure_evaluate(server_round, arrays, config, grid))
        if self.global_stats is not None and self.cfg["personal-fusion"] == "statistics":
            for msg in msgs:
                msg.content[GLOBAL] = self.global_stats
        self.row["downlink-bytes"] = self.row.get("downlink-bytes", 0) + sum(record_bytes(m.content) for m in msgs)
        return msgs

    def aggregate_evaluate(self, server_round: int, replies: Iterable[Message]) -> MetricRecord | None:
        """Personalized accuracy (base) and, for contrast, the global model's local accuracy."""
        replies = list(replies)
        out = super().aggregate_evaluate(server_round, replies)
        local = [m.content.metric_records["metrics"].get("global-accuracy") for m in replies if not m.has_error()]
        local = [v for v in local if v is not None]
        if out is not None and local:
            out["global-model-local-accuracy"] = float(np.mean(local))
            self.row["global-model-local-accuracy"] = out["global-model-local-accuracy"]
        return out

    def evaluate_global(self, server_round: int, arrays: ArrayRecord) -> MetricRecord | None:
        """The global classifier on the server's test features (none before round 1)."""
        if self.test_data is None or server_round == 0:
            return None
        X, y = cached_features(self.cfg, self.test_data.test)
        return MetricRecord({"accuracy": accuracy(torch.from_numpy(arrays["weight"].numpy()).to(DTYPE), X, y)})

    def eval_model(self, arrays: ArrayRecord) -> torch.nn.Module:
        """The global model as ``x -> logits`` (for the shift and domain suites)."""
        W = torch.from_numpy(arrays["weight"].numpy())
        fe = extractor(tuple(self.cfg[k] for k in FEATURE_KEYS))
        return AnalyticClassifier(fe, W, self.test_data.mean, self.test_data.std).eval()

    def start(self, grid: Grid, initial_arrays: ArrayRecord, num_rounds: int = 1, timeout: float = 3600,
              train_config=None, evaluate_config=None, evaluate_fn=None):
        """Always one round (phases 1-3 complete in it)."""
        t0 = time.perf_counter()
        result = super().start(grid, initial_arrays, 1, timeout, train_config, evaluate_config, evaluate_fn)
        log(INFO, "fedhip: one round done in %.1f s", time.perf_counter() - t0)
        return result
