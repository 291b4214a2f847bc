"""FedHiP (Tang et al., arXiv 2508.04470): personalized FL by closed-form solutions.

A frozen backbone gives features; the classifier is a ridge regression on one-hot labels,
solved in float64 in three phases, all in ONE round (``check_config`` sets
``num-server-rounds`` to 1: a second round would recompute the same model):

1. Local training (train message): client k sends ``G_k = X_kᵀX_k`` (upper triangle),
   ``Q_k = X_kᵀY_k`` and its class counts; its local ridge model stays on the node.
2. Global aggregation (``aggregate``): ``G = Σ G_k``, ``Q = Σ Q_k``, ``W = (G + γI)⁻¹Q``
   (Cholesky), the centralized ridge solution whatever the split and arrival order
   (``clean-reg=false``: AFL's uncleaned ``(G + KγI)⁻¹Q``).
3. Local personalization (evaluate message with ``W`` and, where needed, ``G, Q``): see
   ``clients/fedhip.py``; α weights the local side and is chosen per client on its
   validation split (``fedhip-alpha=auto``, ``local-val-fraction``).

Choices and the evidence for them: docs/methods/fedhip.md.
"""

from __future__ import annotations

import time
from logging import INFO, WARNING
from typing import Annotated, Iterable, Literal

import numpy as np
import torch
from flwr.app import ArrayRecord, ConfigRecord, Message, MetricRecord, RecordDict
from flwr.common.logger import log
from flwr.serverapp import Grid
from pydantic import Field

from clients.fedhip import (
    DTYPE,
    GLOBAL,
    STATS,
    accuracy,
    cached_features,
    degenerate,
    ridge_solve,
    triu_size,
    unpack_triu,
)
from common.keys import ConfigError, Int, Keys, shown
from common.progress import phase
from models.features import extractor, feature_key

from .base import BaseStrategy
from .records import check_statistics
from .replies import Spec, record_bytes


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
    backbone_weights: str = Field("", description="a local state dict file for the timm architecture `backbone` "
                                                   "(e.g. a ViT-MAE checkpoint); overrides `pretrained`")
    backbone_layer: Int = Field(-1, ge=-1, description="-1: pooled final features; k: stage k of timm's "
                                                       "forward_intermediates, average-pooled")
    fedhip_alpha: Literal["auto"] | Annotated[float, Field(ge=0)] = Field(
        "auto", description="α >= 0, the weight of the client's own data (0 = the global model); `auto`: chosen "
                            "per client on its validation split (`local-val-fraction`)")
    fedhip_alpha_grid: str = Field("0,0.1,0.3,1,3,10,30,100,1000", min_length=1,
                                   description="comma-separated α candidates for `fedhip-alpha=auto`")
    personal_fusion: Literal["weights", "statistics"] = Field(
        "weights", description="`weights`: (W + αW_k) / (1 + α); `statistics`: (G + αG_k + (1+α)γI)⁻¹(Q + αQ_k)")
    clean_reg: bool = Field(True, description="add γ once (the centralized ridge solution); `false`: AFL's "
                                              "(G + KγI)⁻¹Q for K clients")


class FedHiPStrategy(BaseStrategy):
    upload = "statistics"  # G_k, Q_k and counts, not weights (the privacy audit attacks them)
    """One round: sum the clients' statistics, solve, send the sums back to personalize."""

    train_metrics = frozenset({"num-examples", "train-accuracy"})  # what its client reports
    evaluate_metrics = frozenset({"num-examples", "accuracy", "val-accuracy", "global-accuracy", "local-accuracy",
                                  "fedhip-alpha",
                                  *(f"{m}-{form}" for m in ("accuracy", "val-accuracy", "alpha")
                                    for form in ("statistics", "weights"))})

    def __init__(self, cfg: dict, test_data=None, on_round=None):
        super().__init__(cfg, test_data, on_round)
        self.gamma = float(cfg["ridge-gamma"])
        self.global_stats: ArrayRecord | None = None

    keys = FedHiPKeys

    @staticmethod
    def check_config(cfg: dict) -> None:
        BaseStrategy.check_config(cfg)
        try:
            grid = [float(a) for a in str(cfg["fedhip-alpha-grid"]).split(",")]
        except ValueError:
            grid = []
        if not grid or any(a < 0 for a in grid):
            raise ConfigError(f"fedhip-alpha-grid must be comma-separated numbers >= 0, got {shown(cfg['fedhip-alpha-grid'])}")
        if cfg["fedhip-alpha"] == "auto" and float(cfg["fraction-evaluate"]) > 0 and float(cfg["local-val-fraction"]) <= 0:
            raise ConfigError("fedhip-alpha=auto chooses α on each client's validation split: pass local-val-fraction "
                              "> 0 (e.g. 0.1), or a fixed fedhip-alpha")
        cfg["num-server-rounds"] = 1  # one-shot by construction (see the module docstring)

    # ---- what is sent and expected ---------------------------------------------------
    def feature_dim(self) -> int:
        return extractor(feature_key(self.cfg)).dim

    def initial_arrays(self) -> ArrayRecord:
        """A zero classifier (d x C): there is nothing to send before the one round."""
        return ArrayRecord({"weight": torch.zeros(self.feature_dim(), self.test_data.num_classes, dtype=DTYPE)})

    def train_record(self, server_round: int, arrays: ArrayRecord, config: ConfigRecord) -> RecordDict:
        return RecordDict({"config": config})  # clients need no model to compute statistics

    def expected_arrays(self, arrays: ArrayRecord) -> dict[str, dict[str, tuple]]:
        d, c = arrays["weight"].shape
        only64 = ("float64",)  # the client computes in float64 (DTYPE); sums of float32 would lose digits
        return {STATS: {"gram-triu": Spec((triu_size(d),), only64), "q": Spec((d, c), only64),
                        "counts": Spec((c,), only64)}}

    def feature_bound(self) -> float:
        """100 x the largest squared feature norm of the server's test images (0: none
        known): a client's mean squared norm ``trace(G_k) / n_k`` beyond it is not
        features of this backbone (``records.check_statistics``)."""
        if getattr(self, "_feature_bound", None) is None:
            self._feature_bound = 0.0
            if self.test_data is not None:
                X, _ = cached_features(self.cfg, self.test_data.test)
                self._feature_bound = 100.0 * float((X.to(DTYPE) ** 2).sum(1).max()) if len(X) else 0.0
        return self._feature_bound

    def check_records(self, content: RecordDict) -> str | None:
        return check_statistics(content, STATS, self.feature_bound())

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
        with phase(f"round {server_round}: fedhip ridge solve ({d} features)"):
            W = global_model(G, total["q"], self.gamma, len(stats), bool(self.cfg["clean-reg"]))
        self.global_stats = ArrayRecord(total)
        n = int(total["counts"].sum())
        return ArrayRecord({"weight": W}), MetricRecord({"num-examples": n, "feature-dim": d})

    # ---- personalization (evaluate) -----------------------------------------------
    def configure_evaluate(self, server_round: int, arrays: ArrayRecord, config: ConfigRecord,
                           grid: Grid) -> Iterable[Message]:
        """Base's messages (global model), plus the global sums where personalization needs
        them (``statistics`` form, or α chosen on validation)."""
        msgs = list(super().configure_evaluate(server_round, arrays, config, grid))
        needs_sums = self.cfg["personal-fusion"] == "statistics" or self.cfg["fedhip-alpha"] == "auto"
        if self.global_stats is not None and needs_sums:
            for msg in msgs:
                msg.content[GLOBAL] = self.global_stats
        self.row["downlink-bytes"] = self.row.get("downlink-bytes", 0) + sum(record_bytes(m.content) for m in msgs)
        return msgs

    def summarize_evaluate(self, good: list[Message]) -> MetricRecord:
        """Personalized accuracy (base) and, for contrast, the global model's local accuracy
        (validated replies only)."""
        out = super().summarize_evaluate(good)
        names = {"global-accuracy": "global-model-local-accuracy", "local-accuracy": "local-model-accuracy",
                 "fedhip-alpha": "fedhip-alpha-mean"}
        for form in ("statistics", "weights"):
            names.update({f"accuracy-{form}": f"personalized-accuracy-{form}", f"val-accuracy-{form}":
                          f"val-accuracy-{form}", f"alpha-{form}": f"alpha-{form}-mean"})
        for key, name in names.items():
            values = [float(m.content.metric_records["metrics"][key]) for m in good
                      if key in m.content.metric_records["metrics"]]
            if values:
                out[name] = float(np.mean(values))
                self.row[name] = out[name]
        return out

    def evaluate_global(self, server_round: int, arrays: ArrayRecord) -> MetricRecord | None:
        """The global classifier on the server's test features (none before round 1)."""
        if self.test_data is None or server_round == 0:
            return None
        X, y = cached_features(self.cfg, self.test_data.test)
        return MetricRecord({"accuracy": accuracy(torch.from_numpy(arrays["weight"].numpy()).to(DTYPE), X, y)})

    def evaluate_val(self, server_round: int, arrays: ArrayRecord) -> dict[str, float]:
        """The global classifier on the validation split's cached features (none before round 1;
        no loss: the head is a least-squares solution)."""
        if server_round == 0:
            return {}
        X, y = cached_features(self.cfg, self.validation_set())
        return {"val-accuracy": accuracy(torch.from_numpy(arrays["weight"].numpy()).to(DTYPE), X, y)}

    def eval_model(self, arrays: ArrayRecord) -> torch.nn.Module:
        """The global model as ``x -> logits`` (for the shift and domain suites)."""
        W = torch.from_numpy(arrays["weight"].numpy())
        fe = extractor(feature_key(self.cfg))
        return AnalyticClassifier(fe, W, self.test_data.mean, self.test_data.std).eval()

    def start(self, grid: Grid, initial_arrays: ArrayRecord, num_rounds: int = 1, timeout: float = 3600,
              train_config=None, evaluate_config=None, evaluate_fn=None):
        """Always one round (phases 1-3 complete in it)."""
        t0 = time.perf_counter()
        result = super().start(grid, initial_arrays, 1, timeout, train_config, evaluate_config, evaluate_fn)
        log(INFO, "fedhip: one round done in %.1f s", time.perf_counter() - t0)
        return result
