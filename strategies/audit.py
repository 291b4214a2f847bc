"""Privacy audit of a method's own traffic: the server attacks the replies it received.

Keys: ``audit-attacks`` (comma list; empty = off), ``audit-rounds`` (comma list of rounds),
``audit-clients`` (replies attacked per audited round, the first in partition order),
``audit-budget`` (attack steps per reply), ``audit-max-examples`` (a reply of more
examples is not attacked: the multi-step attack optimizes one candidate per example).

What the attacker sees (breaching's contract, as in ``strategies/gifd.py``): the message
the server sent, the reply's upload record and ``num-examples``, and the hyperparameters
the server announced (``lr``, ``momentum``, ``weight-decay``, ``local-epochs``,
``batch-size``, ``proximal-mu``). Two kinds of upload:

- model weights after local training (FedAvg, FedProx, FedSDWC, FedDG-LSI): the attacker
  replays the announced local training on candidate images (``attacks.local_training``)
  with labels inferred from the update, then runs ``ig``/``dlg``-style pixel attacks;
- sufficient statistics (FedHiP): class-mean features from ``Q_k`` and the counts, then
  feature inversion through the public frozen backbone (``attacks.statistics``).

Ground truth (the client's training images) arrives only from nodes that allow it
(``clients.base.ground_truth_allowed``), is accepted only with
``partition-assignment=server`` (a simulation), validated and taken out of the reply
before anything else reads it (``BaseStrategy.take_ground_truth``), and reaches ``score`` only; without it ``attacks.csv`` says "no ground truth".
"""

from __future__ import annotations

import math
from logging import INFO, WARNING

import numpy as np
import torch
from flwr.app import ArrayRecord, Message, RecordDict
from flwr.common.logger import log
from pydantic import Field

from clients.base import SIM_GROUND_TRUTH as GROUND_TRUTH
from common.keys import ConfigError, Int, Keys, shown
from common.threads import torch_threads

UPDATE_ATTACKS = ("ig", "dlg")
STATISTICS_ATTACKS = ("features",)
AUDIT_ATTACKS = UPDATE_ATTACKS + STATISTICS_ATTACKS
COLUMNS = ["round", "partition", "attack", "upload", "num-examples", "image", "true-label", "inferred-label",
           "label-accuracy", "psnr", "ssim", "feature-cosine", "grad-loss", "steps", "attack-seconds", "note"]


def parse_list(text, cast=str) -> list:
    return [cast(t.strip()) for t in str(text).split(",") if t.strip()]


class AuditKeys(Keys):
    """The privacy audit of a method's own traffic (any method; docs/privacy-audit.md)."""

    audit_attacks: str = Field("", description="comma list of `ig`, `dlg` (weight uploads), `features` (FedHiP's "
                                               "statistics); `\"\"` = off")
    audit_rounds: str = Field("1", description="comma list of the rounds whose replies are attacked")
    audit_clients: Int = Field(1, ge=1, description="replies attacked per audited round (first in partition order)")
    audit_budget: Int = Field(200, ge=1, description="attack steps per reply (gradient- or feature-matching evaluations)")
    audit_max_examples: Int = Field(64, ge=1, description="a reply of more examples is not attacked (one candidate "
                                                          "image per example)")

    @classmethod
    def check(cls, cfg: dict) -> None:
        """Known attacks, each once; audited rounds within ``num-server-rounds``."""
        attacks = parse_list(cfg["audit-attacks"])
        if any(a not in AUDIT_ATTACKS for a in attacks) or len(set(attacks)) != len(attacks):
            raise ConfigError(f"audit-attacks must be a comma list of {','.join(AUDIT_ATTACKS)} (or empty), "
                              f"got {shown(cfg['audit-attacks'])}")
        try:
            rounds = parse_list(cfg["audit-rounds"], int)
        except ValueError:
            rounds = None
        if not rounds or any(not 1 <= r <= int(cfg["num-server-rounds"]) for r in rounds):
            raise ConfigError(f"audit-rounds must be rounds in 1..{cfg['num-server-rounds']}, comma-separated, "
                              f"got {shown(cfg['audit-rounds'])}")


def used_by_cross_entropy(model: torch.nn.Module, params: dict, buffers: dict, data) -> list[str]:
    """The uploaded parameters the replayed loss reaches (a FedSDWC decoder or prior is
    trained by other terms of the method's loss; the attacker matches the rest)."""
    from torch.func import functional_call

    probe = {n: p.detach().requires_grad_(True) for n, p in params.items()}
    x = torch.zeros(2, *data.input_shape)
    loss = torch.nn.functional.cross_entropy(functional_call(model, {**buffers, **probe}, (x,)), torch.tensor([0, 1]))
    grads = torch.autograd.grad(loss, list(probe.values()), allow_unused=True)
    return [n for n, g in zip(probe, grads) if g is not None]


def strip_ground_truth(content: RecordDict) -> dict[str, torch.Tensor] | None:
    """Remove the evaluation-only record from a reply (before validation and attacks)."""
    if GROUND_TRUTH not in content.array_records:
        return None
    record = content.array_records[GROUND_TRUTH]
    del content[GROUND_TRUTH]
    return record.to_torch_state_dict()


class Audit:
    """The audit of one run; the strategy calls ``due`` and ``run``, and sets ``truth``: the
    validated ground truth by the message each reply answers."""

    def __init__(self, cfg: dict, test_data, upload: str):
        self.cfg, self.data, self.upload = cfg, test_data, upload
        names = parse_list(cfg["audit-attacks"])
        fits = UPDATE_ATTACKS if upload == "weights" else STATISTICS_ATTACKS
        skipped = [a for a in names if a not in fits]
        if skipped:
            log(WARNING, "audit: %s do not apply to %s uploads; running %s", skipped, upload,
                [a for a in names if a in fits])
        self.attacks = [a for a in names if a in fits]
        self.rounds = set(parse_list(cfg["audit-rounds"], int))
        self.rows: list[dict] = []
        self.truth: dict[str, dict] = {}

    def due(self, server_round: int) -> bool:
        return bool(self.attacks) and server_round in self.rounds

    # ---- the attacker -------------------------------------------------------------
    def announced(self, content: RecordDict):
        from attacks.local_training import LocalTraining

        cfg = self.cfg
        lsi = cfg["method"] == "fedlsi"  # FedDG-LSI announces its own SGD (lsi-lr, lsi-weight-decay)
        return LocalTraining(lr=float(cfg["lsi-lr" if lsi else "lr"]), epochs=int(cfg["local-epochs"]),
                             batch_size=int(cfg["batch-size"]), num_examples=int(content["metrics"]["num-examples"]),
                             momentum=float(cfg["momentum"]), weight_decay=float(cfg["lsi-weight-decay" if lsi else "weight-decay"]),
                             proximal_mu=float(cfg["proximal-mu"]) if cfg["method"] == "fedprox" else 0.0)

    def attacker_view(self, model: torch.nn.Module, sent: ArrayRecord, content: RecordDict):
        """The multi-step attacker's input: sent model, the reply's weights, announcements."""
        from attacks.common import AttackInput

        data, proc = self.data, self.announced(content)
        state = sent.to_torch_state_dict()
        upload = "arrays" if "arrays" in content.array_records else next(iter(content.array_records))
        received = content.array_records[upload].to_torch_state_dict()
        model.train().requires_grad_(False)
        params = {n: state[n].float() for n, _ in model.named_parameters() if n in received and n in state}
        buffers = {n: state[n] for n, _ in model.named_buffers() if n in state}
        names = used_by_cross_entropy(model, params, buffers, data)
        params = {n: params[n] for n in names}
        return AttackInput(model=model, params=params, target={n: params[n] - received[n].float() for n in names},
                           threat="fedavg", batch_size=proc.num_examples, lr=proc.lr, local_steps=proc.steps,
                           mean=torch.as_tensor(data.mean, dtype=torch.float32).view(-1, 1, 1),
                           std=torch.as_tensor(data.std, dtype=torch.float32).view(-1, 1, 1),
                           num_classes=data.num_classes, input_shape=tuple(data.input_shape), buffers=buffers,
                           procedure=proc)

    def attack_update(self, name: str, inp, seed: int):
        from attacks.ig import invert_ig
        from attacks.label_inference import infer_labels

        labels = infer_labels(inp, seed)
        budget = int(self.cfg["audit-budget"])
        if name == "ig":  # Inverting Gradients' multi-step setting: Adam on pixels, TV prior, one restart
            return invert_ig(inp, labels, budget=budget, restarts=1, tv=1e-2, signed=False, seed=seed)
        from attacks.dlg import invert_dlg

        return invert_dlg(inp, labels, budget=budget, seed=seed)

    # ---- the evaluator ------------------------------------------------------------
    @staticmethod
    def score(rec_px: torch.Tensor, rec_labels: torch.Tensor, truth: dict | None, to_pixels) -> list[dict]:
        from attacks.metrics import score

        if truth is None:
            return [{"image": i, "inferred-label": int(rec_labels[i]), "note": "no ground truth"}
                    for i in range(len(rec_px))]
        rows = score(rec_px, rec_labels, to_pixels(truth["images"].float()), truth["labels"].long())
        for row in rows:
            row["inferred-label"] = int(rec_labels[row.pop("match")])
            row.pop("lpips", None)
        return rows

    def run(self, strategy, server_round: int, replies: list[Message], sent: ArrayRecord | None) -> None:
        """Attack the first ``audit-clients`` validated replies; rows go to ``self.rows``."""
        cap = int(self.cfg["audit-max-examples"])
        with torch_threads(1):
            for msg in replies[: int(self.cfg["audit-clients"])]:
                part = strategy.partition_of(msg, -1)
                n = int(msg.content["metrics"]["num-examples"])
                base = {"round": server_round, "partition": part, "upload": self.upload, "num-examples": n}
                if self.upload == "weights" and n > cap:
                    log(INFO, "audit: partition %s not attacked: %d examples > audit-max-examples %d", part, n, cap)
                    self.rows.append({**base, "note": f"not attacked: num-examples > {cap}"})
                    continue
                truth = self.truth.get(msg.metadata.reply_to_message_id)
                seed = int(np.random.SeedSequence([int(self.cfg["seed"]), server_round, part, 18]).generate_state(1)[0]
                           % 2**31)
                for name in self.attacks:
                    torch.manual_seed(seed)
                    if self.upload == "weights":
                        rows = self.audit_update(strategy, name, sent, msg.content, truth, seed)
                    else:
                        rows = self.audit_statistics(strategy, msg.content, truth, seed)
                    for row in rows:
                        self.rows.append({**base, "attack": name, **row})
                    psnrs = [r.get("psnr", math.nan) for r in rows]
                    log(INFO, "[audit] round %d partition %s %s: mean psnr %.2f over %d image(s)", server_round, part,
                        name, float(np.nanmean(psnrs)) if not all(map(math.isnan, psnrs)) else math.nan, len(rows))

    def audit_update(self, strategy, name: str, sent: ArrayRecord, content: RecordDict, truth, seed: int) -> list[dict]:
        inp = self.attacker_view(strategy.attack_model(), sent, content)
        result = self.attack_update(name, inp, seed)
        rows = self.score(inp.to_pixels(result.images), result.labels, truth, inp.to_pixels)
        for row in rows:
            row.update({"grad-loss": result.grad_loss, "steps": result.steps, "attack-seconds": result.seconds})
        return rows

    def audit_statistics(self, strategy, content: RecordDict, truth, seed: int) -> list[dict]:
        """Class means from Q_k/counts, one image per present class by feature inversion."""
        from attacks.metrics import psnr, ssim
        from attacks.statistics import class_means, invert_features

        stats = content.array_records["fedhip-stats"].to_torch_state_dict()
        means, present = class_means(stats["q"], stats["counts"])
        classes = torch.nonzero(present).flatten()
        data = self.data
        mean = torch.as_tensor(data.mean, dtype=torch.float32).view(-1, 1, 1)
        std = torch.as_tensor(data.std, dtype=torch.float32).view(-1, 1, 1)
        features = self.feature_function()
        result = invert_features(features, means[classes].float(), tuple(data.input_shape), (0 - mean) / std,
                                 (1 - mean) / std, budget=int(self.cfg["audit-budget"]), seed=seed)
        rec = (result.images * std + mean).clamp(0, 1)
        with torch.no_grad():
            got = features(result.images)
        rows = []
        for i, c in enumerate(classes.tolist()):
            row = {"image": i, "inferred-label": c, "grad-loss": result.grad_loss, "steps": result.steps,
                   "attack-seconds": result.seconds,
                   "feature-cosine": float(torch.nn.functional.cosine_similarity(got[i], means[c].float(), dim=0))}
            if truth is None:
                row["note"] = "no ground truth"
            else:  # against the closest image of that class (the class mean stands for all of them)
                px = (truth["images"].float() * std + mean).clamp(0, 1)
                own = px[truth["labels"].long() == c]
                scores = [(psnr(rec[i], t), ssim(rec[i], t)) for t in own]
                best = max(scores) if scores else (math.nan, math.nan)
                row.update({"true-label": c if scores else -1, "psnr": best[0], "ssim": best[1],
                            "label-accuracy": float(bool(scores))})
            rows.append(row)
        return rows

    def feature_function(self):
        """The public frozen backbone as a differentiable map: normalized images -> features."""
        from models.features import FEATURE_KEYS, extractor

        fe = extractor(tuple(self.cfg[k] for k in FEATURE_KEYS))
        fe.net.eval().requires_grad_(False)
        mean, std = (tuple(torch.as_tensor(v).flatten().tolist()) for v in (self.data.mean, self.data.std))

        def features(x: torch.Tensor) -> torch.Tensor:
            f = fe.backbone(fe.preprocess(x, mean, std))
            return fe.buffer(f) if fe.buffer is not None else f

        return features

    def write(self, path) -> None:
        import pandas as pd

        frame = pd.DataFrame(self.rows)
        for col in COLUMNS:
            if col not in frame:
                frame[col] = np.nan
        frame[COLUMNS + [c for c in frame.columns if c not in COLUMNS]].to_csv(path, index=False)

    def summary(self, server_round: int) -> dict[str, float]:
        """Per-attack means of this round's rows, for the metrics row."""
        out = {}
        for name in self.attacks:
            rows = [r for r in self.rows if r.get("round") == server_round and r.get("attack") == name]
            for key in ("psnr", "ssim", "label-accuracy"):
                vals = [r[key] for r in rows if key in r and not math.isnan(r[key])]
                if vals:
                    out[f"audit-{name}-{key}"] = float(np.mean(vals))
        return out
