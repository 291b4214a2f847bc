"""FedDG-LSI (Palakkadavath et al., "Federated Domain Generalization with Latent Space
Inversion", ICDM 2025; official code ragjapk/Latent-Space-Inversion).

Model: ``lsi-<base>`` (models/translator.py): encoder -> z -> BatchNorm1d(affine=False)
-> Linear. Stages, and where they run here:

1. Local pre-training, heads only (client, round 1 with ``lsi-schedule=once``): every
   client trains the received (initial) model with cross-entropy for
   ``lsi-pretrain-epochs`` and uploads only its classifier head (BN1d running statistics
   + linear layer). The global model is left as it was: as in the official code, the
   federated rounds start from the fresh global model (``FedUpdate(net_locals, global_f)``
   overwrites the pre-trained encoders), the pre-trained heads serve only the inversion.
   This round costs a round of the budget (``num-server-rounds`` counts it).
2. Latent space inversion (server, ``lsi_server.invert_heads``): synthetic latents per
   client-domain, from the head alone (no encoder, no image).
3. Latent StarGAN translator G(z, c, c') (server, ``lsi_server.train_translator``), codes
   c = the clients (in partition-id order) whose heads were inverted. G is sent to the
   clients as the extra ArrayRecord ``translator``; each client's code is in the train
   config as ``lsi-code-<partition-id>``; ``lsi-num-codes`` is G's number of codes.
4. Local training (client, every later round): CE + ``lambda-di`` * MSE(G(z, c, c'), z),
   c' uniform over the codes (may equal c), G frozen, gradients through G into the encoder.
5. Important-weight aggregation (``aggregation=importance``): clients return MAS
   importance (ArrayRecord ``importance``: mean |grad of sum ||f(x)||^2| per parameter);
   the server averages element-wise with normalized importance x sample counts, BN
   buffers by sample counts (``lsi_server.importance_average``). ``aggregation=fedavg``
   is plain sample-weighted averaging (the ablation; clients then skip the importance).

Schedule (``lsi-schedule``): ``once`` (default) follows the paper's released code, where
inversion and translator training happen once, on locally pre-trained heads, before
federated training, and G stays fixed for all rounds: the server does the GAN work once,
clients regularize toward one fixed translator (not a moving target), and the extra
download is the same G every round. ``every-round`` instead inverts the heads of every
round's local models (no pre-training round; round 1 trains without G) and fine-tunes
G on them, so G follows the current latent space, at the cost of server work per round.

Model selection and the DG metrics (``heldout-accuracy``, ``source-accuracy``,
``selected-heldout-accuracy``) come from ``BaseStrategy.add_domain_metrics`` for every method.
Defaults follow the official code (``lambda-di`` 10; inversion of 120 batches of 32 latents
with random labels, 10,000 steps with BN weight 0.01; the ``Tanh`` translator on raw z, 1024
wide, 10,000 iterations; local SGD at lr 1e-3, weight decay 5e-4, kept across rounds); the
deviations and their reasons are in docs/methods/fedlsi.md. The official test loop evaluates with BatchNorm in train mode:
key ``eval-bn`` (both modes are reported, ``BaseStrategy.add_domain_metrics``).
"""

from __future__ import annotations

from typing import Literal

import numpy as np
import torch
from flwr.app import ArrayRecord, ConfigRecord, Message, MetricRecord, RecordDict
from pydantic import Field

from clients.base import batches
from common.keys import Int, Keys, shown
from models import build_model
from models.translator import build_head, head_keys, latent_model

from . import lsi_server
from .base import BaseStrategy
from .records import check_importance
from .replies import sent_specs


def _check(ok: bool, message: str) -> None:
    if not ok:
        from common.keys import ConfigError

        raise ConfigError(message)


class FedLSIKeys(Keys):
    lambda_di: float = Field(10.0, ge=0, description="weight of the divergence loss MSE(G(z,c,c'), z); 0 = ablation")
    aggregation: Literal["importance", "fedavg"] = Field("importance", description="importance-weighted (stage 5) "
                                                                                   "or plain FedAvg (ablation)")
    lsi_schedule: Literal["once", "every-round"] = Field("once", description="run stages 1-3 once before "
                                                                             "training, or every round")
    lsi_pretrain_epochs: Int = Field(2, ge=0, description="local epochs of the stage-1 pre-training")
    lsi_num_latents: Int = Field(3840, ge=2, description="synthetic latents per client, in batches of "
                                                         "lsi-inversion-batch (official 120 x 32)")
    lsi_inversion_iters: Int = Field(10000, ge=0, description="Adam steps of the inversion")
    lsi_inversion_lr: float = Field(0.05, gt=0, description="Adam lr of the inversion")
    lsi_bn_weight: float = Field(0.01, ge=0, description="weight of the BN-statistics term of the inversion")
    lsi_norm_weight: float = Field(0.001, ge=0, description="weight of the latent-norm term of the inversion")
    lsi_translator_iters: Int = Field(10000, ge=0, description="translator G / discriminator D iterations")
    lsi_translator_lr: float = Field(0.001, gt=0, description="Adam lr of G and D (linear decay, second half)")
    lsi_translator_hidden: Int = Field(1024, ge=2, description="width of G and D")
    lsi_translator_batch: Int = Field(128, ge=2, description="batch of latents for G and D")
    lsi_translator: Literal["tanh", "rescaled", "residual"] = Field(
        "tanh", description="G's form: tanh (official: Tanh head on raw z), rescaled (linear head on latents "
                            "standardized to the inverted ones; ablation) or residual (z + MLP; ablation)")
    lsi_lr: float = Field(0.001, gt=0, description="SGD lr of the local training (official 1e-3; replaces lr)")
    lsi_weight_decay: float = Field(0.0005, ge=0, description="SGD weight decay of the local training (official "
                                                              "5e-4; replaces weight-decay)")
    lsi_keep_optimizer: bool = Field(True, description="keep each client's SGD momentum across rounds (official) "
                                                       "or start a fresh optimizer every round")
    lsi_inversion_batch: Int = Field(32, ge=2, description="latents per inversion batch (BN statistics are "
                                                           "matched per batch; official 32)")

class FedLSIStrategy(BaseStrategy):
    keys = FedLSIKeys
    replaced_keys = {"lr": "lsi-lr", "weight-decay": "lsi-weight-decay"}  # the official optimizer's own
    train_metrics = BaseStrategy.train_metrics | {"divergence"}  # what its client reports

    def __init__(self, cfg: dict, test_data=None, on_round=None):
        super().__init__({**cfg, "model": latent_model(cfg["model"])}, test_data, on_round)
        self.translator = None  # G after stage 3
        self.discriminator = None  # kept for warm starts (every-round schedule)
        self.codes: dict[int, int] = {}  # partition id -> domain code of G
        self.current: ArrayRecord | None = None  # global model sent this round
        self.stage = "train"
        self.param_names: set[str] | None = None

    @staticmethod
    def check_config(cfg: dict) -> None:
        BaseStrategy.check_config(cfg)
        _check(not str(cfg["model"]).removeprefix("lsi-").startswith("timm:"),
               f"fedlsi puts its latent head on a model with .features and a Linear .classifier: pass model=cnn, "
               f"resnet18, wrn-<depth>-<width> or pretrained:<name>, got {shown(cfg['model'])}")

    # ---- checkpoints (resume) ---------------------------------------------------------------
    def state_dict(self) -> dict:
        return {
            "translator": None if self.translator is None else self.translator.state_dict(),
            "discriminator": None if self.discriminator is None else self.discriminator.state_dict(),
            "codes": dict(self.codes),
        }

    def load_state_dict(self, state: dict) -> None:
        from models.translator import LatentDiscriminator, translator_from_state

        self.codes = dict(state.get("codes", {}))
        if state.get("translator") is not None:
            self.translator = translator_from_state(state["translator"]).eval()
            disc = state.get("discriminator")
            if disc is not None:
                dim, hidden = self.translator.model[-1].out_features, disc["model.0.weight"].shape[0]
                self.discriminator = LatentDiscriminator(dim, self.translator.num_domains, hidden)
                self.discriminator.load_state_dict(disc)

    # ---- what is sent and expected -------------------------------------------------------
    def _params(self) -> set[str]:
        if self.param_names is None:
            data = self.test_data
            shape = data.input_shape if data is not None else (1, 28, 28)
            model = build_model(self.cfg["model"], data.num_classes if data is not None else 10, shape)
            self.param_names = {name for name, _ in model.named_parameters()}
        return self.param_names

    def train_record(self, server_round: int, arrays: ArrayRecord, config: ConfigRecord) -> RecordDict:
        self.current = arrays
        pretrain = self.cfg["lsi-schedule"] == "once" and self.translator is None
        self.stage = "pretrain" if pretrain else "train"
        config["lsi-stage"] = self.stage
        config["lambda-di"] = float(self.cfg["lambda-di"])
        config["aggregation"] = str(self.cfg["aggregation"])
        record = RecordDict({"arrays": arrays, "config": config})
        if self.translator is not None and not pretrain:
            record["translator"] = ArrayRecord({k: v.detach().clone() for k, v in self.translator.state_dict().items()})
            config["lsi-num-codes"] = self.translator.num_domains
            for pid, code in self.codes.items():
                config[f"lsi-code-{pid}"] = code
        return record

    def expected_arrays(self, arrays: ArrayRecord) -> dict[str, dict[str, tuple]]:
        sent = sent_specs(arrays)  # the model's own dtypes
        shapes = {k: tuple(v.shape) for k, v in arrays.items()}
        if self.stage == "pretrain":
            return {"head": {k: sent[k] for k in head_keys(shapes)}}
        expected = {"arrays": sent}
        if self.cfg["aggregation"] == "importance":
            expected["importance"] = {k: shapes[k] for k in shapes if k in self._params()}
        return expected

    def check_records(self, content: RecordDict) -> str | None:
        """Importance weights bounded (``records.check_importance``)."""
        return check_importance(content) if "importance" in content.array_records else None

    # ---- stages 2, 3 and 5 ----------------------------------------------------------------
    def fit_translator(self, server_round: int, heads: dict[int, dict[str, torch.Tensor]]) -> dict[str, float]:
        """Stages 2-3 on the heads (partition id -> ``classifier.*`` tensors)."""
        seed = int(np.random.SeedSequence([int(self.cfg["seed"]), server_round, 17]).generate_state(1)[0])
        pids = sorted(heads)
        if not self.codes or self.cfg["lsi-schedule"] == "once":
            known = sorted(self.known_partitions() | set(pids))
            self.codes = {pid: i for i, pid in enumerate(known)}
        heads = {p: h for p, h in heads.items() if p in self.codes}  # late joiners: no code in a warm G
        modules = [build_head(heads[p]) for p in sorted(heads)]
        z, y, index, stats = lsi_server.invert_heads(modules, self.cfg, seed)
        codes = torch.tensor([self.codes[p] for p in sorted(heads)])[index]
        self.translator, self.discriminator, losses = lsi_server.train_translator(
            z, y, codes, modules, len(self.codes), self.cfg, seed, self.translator, self.discriminator)
        stats.update(losses)
        stats["lsi-fixed-point-gap"] = lsi_server.translator_fixed_point_gap(self.translator, z, codes, len(self.codes))
        if len(modules) > 1:  # does G translate (docs/methods/fedlsi.md, "The translator")
            by_code = sorted(heads, key=self.codes.get)
            if [self.codes[p] for p in by_code] == list(range(len(self.codes))):
                scores = lsi_server.translation_scores(self.translator, z, y, codes, [build_head(heads[p]) for p in by_code],
                                                       len(self.codes), seed)
                stats.update({f"lsi-translation-{k}": v for k, v in scores.items()})
        return stats

    def add_domain_metrics(self, server_round: int, arrays: ArrayRecord, res: MetricRecord | None):
        """The DG metrics, plus G measured on the global encoder's real latents
        (``lsi-real-*``, ``lsi_server.real_translation_scores``) of source-validation images."""
        res = super().add_domain_metrics(server_round, arrays, res)
        data = self.real_latent_sets()
        if res is None or self.translator is None or data is None:
            return res
        model = self.eval_model(arrays)
        seed = int(np.random.SeedSequence([int(self.cfg["seed"]), server_round, 31]).generate_state(1)[0])
        with torch.no_grad():
            scores = lsi_server.real_translation_scores(self.translator, model, data, self.translator.num_domains, seed)
        return MetricRecord({**dict(res), **{f"lsi-real-{k}": v for k, v in scores.items()}})

    def real_latent_sets(self, per_code: int = 256) -> dict[int, tuple[torch.Tensor, torch.Tensor]] | None:
        """Code -> (images, labels): up to ``per_code`` source-validation images of the domain
        whose client holds that code (``partitioner=domain``: partition p holds source domain
        p mod K); None without domains or with a code shared by two domains."""
        if getattr(self, "real_sets", None) is not None or self.test_data is None:
            return getattr(self, "real_sets", None)
        from datasets.domains import test_domain_ids

        ids = test_domain_ids(self.test_data) if self.cfg["partitioner"] == "domain" else None
        if ids is None or not self.codes:
            return None
        sources = [int(d) for d in np.unique(ids) if d != int(self.cfg["heldout-domain"])]
        domain_of = {code: sources[pid % len(sources)] for pid, code in self.codes.items()}
        if len(set(domain_of.values())) != len(domain_of):
            return None
        rng, out = np.random.default_rng(int(self.cfg["seed"])), {}
        for code, dom in domain_of.items():
            idx = np.flatnonzero(ids == dom)
            idx = np.sort(rng.choice(idx, min(per_code, len(idx)), replace=False))
            x, y = next(batches(self.test_data.test.subset(idx), len(idx)))
            out[code] = (torch.as_tensor(x).float(), torch.as_tensor(y).long())
        self.real_sets = out
        return out

    def aggregate(self, server_round: int, replies: list[Message]):
        pids = [self.partition_of(m) for m in replies]
        metrics = [m.content.metric_records["metrics"] for m in replies]
        n = [float(m["num-examples"]) for m in metrics]
        out = {"num-examples": float(sum(n)),
               "train-loss": float(np.average([m.get("train-loss", 0.0) for m in metrics], weights=n))}
        if self.stage == "pretrain":
            heads = {p: m.content.array_records["head"].to_torch_state_dict() for p, m in zip(pids, replies)}
            out.update(self.fit_translator(server_round, heads))
            out["lsi-stage"] = 1.0
            return self.current, MetricRecord(out)
        states = [m.content.array_records["arrays"].to_torch_state_dict() for m in replies]
        if self.cfg["aggregation"] == "importance":
            importances = [m.content.array_records["importance"].to_torch_state_dict() for m in replies]
            merged = lsi_server.importance_average(states, importances, n)
        else:
            merged = lsi_server.data_average(states, n)
        if "divergence" in metrics[0]:
            out["divergence"] = float(np.average([m["divergence"] for m in metrics], weights=n))
        if self.cfg["lsi-schedule"] == "every-round":
            heads = {p: {k: s[k] for k in head_keys(s)} for p, s in zip(pids, states)}
            out.update(self.fit_translator(server_round, heads))
        out["lsi-stage"] = 4.0
        return ArrayRecord(merged), MetricRecord(out)
