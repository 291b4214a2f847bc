"""What every method's strategy shares, on top of Flower's FedAvg.

- Seeded client sampling from a population of ``num-clients`` virtual clients, spread
  over the nodes (``strategies/sampling.py``).
- Reply validation (``strategies/replies.py``; the server trusts no reply): a bad reply is
  dropped with one log line and counted in ``failures``; with fewer than
  ``min-train-nodes`` good replies the round keeps the previous model. Good replies are
  aggregated in partition order (bitwise repeatable).
- Per-round bookkeeping: ``round-seconds``, ``uplink-bytes``, ``downlink-bytes`` (and the
  run's sums so far, ``uplink-bytes-total``, ``downlink-bytes-total``),
  ``personalized-accuracy`` (+ ``-std``, ``personalized-val-accuracy``), ``val-accuracy``
  and ``val-loss`` (the server's validation split), ``failures`` (errors, bad replies and
  replies missing at the timeout); one progress line per round, and the finished row
  handed to ``on_round`` (the results writer). ``evaluate-every`` N: the evaluation
  metrics are computed at round 0, every N-th and the last round only (``evaluated``).
- Checkpoints and resume: after each round the model, the strategy's state
  (``state_dict``), the RNG states and the rows so far are written atomically to
  ``<out-dir>/<run-name>/checkpoint.pt`` as tensors and plain Python values, and read
  back with ``weights_only=True`` (a file holding any other object is refused, never
  unpickled); ``resume=true`` continues from there.

A method subclasses ``BaseStrategy`` and overrides only what differs: ``keys`` (its own
run-config keys), ``check_config`` (rules across keys), ``initial_arrays``, ``train_record`` (what is sent),
``expected_arrays`` (what must come back), ``aggregate`` and ``evaluate_global``.
"""

from __future__ import annotations

import time
from logging import INFO, WARNING
from pathlib import Path
from typing import Callable, Iterable

import numpy as np
import torch
from flwr.app import (
    Array,
    ArrayRecord,
    ConfigRecord,
    Message,
    MessageType,
    MetricRecord,
    RecordDict,
)
from flwr.common.logger import log
from flwr.serverapp import Grid
from flwr.serverapp.strategy import FedAvg, Result
from flwr.serverapp.strategy.strategy_utils import aggregate_arrayrecords

from common.progress import phase
from clients.base import SIM_GROUND_TRUTH, device_of, evaluate, evaluate_batch_bn
from models import build_model

from .replies import check_reply, finite_arrays, record_bytes, sent_specs
from .sampling import Sampling

Row = dict[str, float]


class BaseStrategy(Sampling, FedAvg):
    """FedAvg plus the shared plumbing above; ``cfg`` is the resolved run config."""

    # The keys a reply's MetricRecord 'metrics' may hold (a method whose client reports
    # more declares them here); anything else is dropped as hostile or broken.
    train_metrics = frozenset({"num-examples", "train-loss"})
    evaluate_metrics = frozenset({"num-examples", "loss", "accuracy", "val-accuracy", "val-loss", "global-accuracy",
                                  "finetune-epochs"})
    # a client's optional evaluate metric -> the row's column (mean over the clients that report it);
    # the clients' val-accuracy is a selection metric (the row's val-accuracy is the server's split)
    evaluate_means = {"val-accuracy": "personalized-val-accuracy", "global-accuracy": "global-model-local-accuracy",
                      "finetune-epochs": "finetune-epochs-mean"}

    def __init__(self, cfg: dict, test_data=None, on_round: Callable[[Row], None] | None = None):
        super().__init__(
            fraction_train=float(cfg["fraction-train"]),
            fraction_evaluate=float(cfg["fraction-evaluate"]),
            min_train_nodes=int(cfg["min-train-nodes"]),
            min_evaluate_nodes=1,
            min_available_nodes=int(cfg["min-train-nodes"]),
        )
        self.cfg = cfg
        self.test_data = test_data
        self.on_round = on_round
        self.init_sampling()
        self.client_rows: dict[int, dict] = {}  # partition id -> this round's metrics of its good replies
        self.row: Row = {}
        self.t_round = time.perf_counter()
        self.expected: dict[str, dict[str, tuple]] | None = None
        self.int_arrays: set[str] = set()
        self.rows: list[Row] = []
        self.replaying = False  # True while a resumed run hands its checkpoint's rows to on_round
        pool = len(getattr(test_data, "train_labels", None) if test_data is not None else ()) or 0
        self.max_examples = int(cfg.get("max-num-examples", 0)) or pool  # 0: no cap (no data known)
        self.auditor = None
        if cfg.get("audit-attacks") and test_data is not None:
            from strategies.audit import Audit

            self.auditor = Audit(cfg, test_data, self.upload)

    keys: type | None = None  # the method's own run-config keys: a ``simulations.keys.Keys`` subclass
    # shared keys whose job one of the method's own keys does (key -> its replacement): a
    # tuning space that searches the shared key would search nothing
    replaced_keys: dict[str, str] = {}

    upload = "weights"  # what a train reply uploads (the privacy audit attacks it): "weights" or "statistics"

    @staticmethod
    def check_config(cfg: dict) -> None:
        """Raise ``simulations.config.ConfigError`` for a rule across keys (one key's type and
        range come from ``keys``; ``cfg`` is already typed). An override calls this first."""

    def initial_arrays(self) -> ArrayRecord:
        """The model the server starts from (``model`` key, fresh weights)."""
        data = self.test_data
        model = build_model(self.cfg["model"], data.num_classes, data.input_shape, norm=(data.mean, data.std))
        return ArrayRecord(model.state_dict())

    # ---- sampling (strategies/sampling.py) -----------------------------------------
    def check_federation(self, grid: Grid) -> None:
        """Fail at start, in one line, if the nodes' partitions cannot be made."""
        from datasets.partition import partition_for

        self.discover(grid)
        self.check_population()
        if self.assigns:
            self.check_simulated(grid)
        if self.test_data is not None and self.num_partitions:
            partition_for(self.cfg, self.test_data, self.num_partitions)

    # ---- train --------------------------------------------------------------------
    def train_record(self, server_round: int, arrays: ArrayRecord, config: ConfigRecord) -> RecordDict:
        """What each sampled client receives; methods add records or config here."""
        return RecordDict({"arrays": arrays, "config": config})

    def expected_arrays(self, arrays: ArrayRecord) -> dict[str, dict[str, tuple]]:
        """Names and shapes a train reply must carry: by default the model sent."""
        return {"arrays": sent_specs(arrays)}

    def configure_train(self, server_round: int, arrays: ArrayRecord, config: ConfigRecord, grid: Grid) -> Iterable[Message]:
        self.t_round = time.perf_counter()
        self.row = {"round": server_round, "failures": 0, "uplink-bytes": 0, "downlink-bytes": 0}
        if self.fraction_train == 0.0:
            return []
        picks = self.sample(grid, self.fraction_train, self.min_train_nodes, server_round, 0)
        self.sampled = len(picks)
        config["server-round"] = server_round
        self.truth_asked = False
        if self.auditor is not None and self.auditor.due(server_round):
            config[SIM_GROUND_TRUTH] = self.truth_asked = True  # evaluation-only: a node that does not allow it refuses
            self.audit_sent = arrays
        record = self.train_record(server_round, arrays, config)
        self.expected = self.expected_arrays(arrays)
        self.int_arrays = {k for k, v in arrays.items() if np.dtype(v.dtype).kind in "iub"}
        self.row["downlink-bytes"] += record_bytes(record) * len(picks)
        return self.messages(record, picks, MessageType.TRAIN)

    def validate(self, replies: Iterable[Message], expected, kind: str = "train") -> list[Message]:
        """Drop unusable replies with one log line each; count them in ``failures``.
        ``kind``: ``train`` (``expected`` arrays, ``train_metrics``) or ``evaluate``
        (no arrays, ``evaluate_metrics`` with ``accuracy``)."""
        train = kind == "train"
        keys, required = (self.train_metrics, ("num-examples",)) if train else \
            (self.evaluate_metrics, ("num-examples", "accuracy"))
        good = []
        if train:
            self.truth = {}  # message answered -> validated ground truth (simulation only), out of the reply
        for msg in replies:
            node = msg.metadata.src_node_id
            who = f"partition {self.partition_of(msg, '?')} (node {node})"
            if msg.has_error():
                reason = msg.error.reason.strip().splitlines()[-1][:200] if msg.error.reason else "error"
            else:
                if train:
                    self.row["uplink-bytes"] = self.row.get("uplink-bytes", 0) + record_bytes(msg.content)
                truth, reason = self.take_ground_truth(msg.content) if train else (None, None)
                reason = reason or check_reply(msg.content, expected if train else {}, keys, required,
                                               self.max_examples, self.int_arrays)
                reason = reason or (self.check_records(msg.content) if train else None)
                if truth is not None and not reason:
                    self.truth[msg.metadata.reply_to_message_id] = truth
            if reason:
                log(WARNING, "dropped %s reply from %s: %s", kind, who, reason)
                self.row["failures"] = self.row.get("failures", 0) + 1
            else:
                good.append(msg)
                self.note_client(msg, train)
        return self.by_partition(good)

    def check_records(self, content: RecordDict) -> str | None:
        """Why a method's own records in a train reply are implausible (``strategies/records.py``),
        or None; called after ``check_reply``, before anything reads them."""
        return None

    def take_ground_truth(self, content: RecordDict):
        """Validate and remove the simulation-only ground truth (``records.take_ground_truth``):
        accepted only when asked this round with ``partition-assignment=server``."""
        from .records import take_ground_truth

        data = self.test_data
        asked = bool(getattr(self, "truth_asked", False)) and self.assigns and data is not None
        return take_ground_truth(content, asked, tuple(data.input_shape) if data is not None else (),
                                 data.num_classes if data is not None else 0, self.max_examples)

    def note_client(self, msg: Message, train: bool) -> None:
        """A good reply's metrics for clients.csv (train: examples, train loss; evaluate:
        local accuracy and loss)."""
        metrics = msg.content.metric_records.get("metrics", {})
        names = {"num-examples": "train-examples", "train-loss": "train-loss"} if train else \
            {"num-examples": "eval-examples", "accuracy": "local-accuracy", "loss": "local-loss"}
        row = self.client_rows.setdefault(self.partition_of(msg, -1), {})
        row.update({col: float(metrics[k]) for k, col in names.items() if k in metrics})

    def take_clients(self) -> list[dict]:
        """This round's per-client rows, in partition order (then cleared)."""
        rows = [{"partition-id": p, **m} for p, m in sorted(self.client_rows.items())]
        self.client_rows = {}
        return rows

    def aggregate_train(self, server_round: int, replies: Iterable[Message]):
        replies = list(replies)
        missing = getattr(self, "sampled", len(replies)) - len(replies)
        if missing > 0:
            log(WARNING, "%d sampled client(s) did not reply within round-timeout", missing)
            self.row["failures"] = self.row.get("failures", 0) + missing
        auditing = self.auditor is not None and self.auditor.due(server_round)
        good = self.validate(replies, self.expected)  # ground truth: validated, then kept apart
        if auditing:
            self.auditor.truth = self.truth
        if auditing and good:
            self.run_audit(server_round, good)
        if len(good) < self.min_train_nodes:
            log(WARNING, "round %d skipped: %d usable replies, min-train-nodes is %d; the model is unchanged",
                server_round, len(good), self.min_train_nodes)
            return None, MetricRecord({"failures": self.row["failures"]})
        arrays, metrics = self.aggregate(server_round, good)
        reason = finite_arrays(arrays)
        if reason:  # e.g. sums of finite but huge values overflowed
            log(WARNING, "round %d skipped: the aggregate %s; the model is unchanged", server_round, reason)
            self.row["failures"] = self.row.get("failures", 0) + 1
            return None, MetricRecord({"failures": self.row["failures"]})
        if metrics is not None:
            self.row.update({k: float(v) for k, v in metrics.items() if k != "num-examples"})
        return arrays, metrics

    def run_audit(self, server_round: int, good: list[Message]) -> None:
        """Attack this round's validated replies (``strategies/audit.py``); ``attacks.csv``
        in the run folder, per-attack means in the round's row."""
        from common.outputs import out_root

        self.auditor.run(self, server_round, good, getattr(self, "audit_sent", None))
        run_dir = out_root(self.cfg) / (self.cfg["run-name"] or self.cfg["method"])
        run_dir.mkdir(parents=True, exist_ok=True)
        self.auditor.write(run_dir / "attacks.csv")
        self.row.update(self.auditor.summary(server_round))

    def attack_model(self) -> torch.nn.Module:
        """The network a weight upload belongs to, in train mode (the audit replays local
        training on it): the global model's architecture (``eval_model``)."""
        return self.eval_model(self.audit_sent).train()

    def aggregate(self, server_round: int, replies: list[Message]):
        """Aggregate validated replies; default: FedAvg's weighted mean (Flower's own
        array aggregation; metrics: weighted mean of every key but ``num-examples``)."""
        contents = [m.content for m in replies]
        arrays = aggregate_arrayrecords(contents, "num-examples")
        # Flower's mean turns integer buffers (BatchNorm's num_batches_tracked) into floats,
        # which the next round's replies (the model's own int64) would then not match.
        sent = contents[0].array_records.get("arrays", {})  # a method may aggregate other records (GIFD: gradients)
        arrays = ArrayRecord({k: Array(np.asarray(np.rint(v.numpy()), dtype=sent[k].numpy().dtype))
                              if k in sent and sent[k].numpy().dtype.kind in "iu" else v for k, v in arrays.items()})
        weights = np.array([float(c["metrics"]["num-examples"]) for c in contents])
        keys = sorted(set.intersection(*(set(c["metrics"]) for c in contents)) - {"num-examples"})
        metrics = {k: float(np.dot(weights, [float(c["metrics"][k]) for c in contents]) / weights.sum()) for k in keys}
        return arrays, MetricRecord(metrics)

    # ---- evaluate -----------------------------------------------------------------
    def configure_evaluate(self, server_round: int, arrays: ArrayRecord, config: ConfigRecord, grid: Grid) -> Iterable[Message]:
        if self.fraction_evaluate == 0.0:
            return []
        picks = self.sample(grid, self.fraction_evaluate, self.min_evaluate_nodes, server_round, 1)
        config["server-round"] = server_round
        record = RecordDict({"arrays": arrays, "config": config})
        return self.messages(record, picks, MessageType.EVALUATE)

    def aggregate_evaluate(self, server_round: int, replies: Iterable[Message]) -> MetricRecord | None:
        """Personalized accuracy: unweighted mean (and std) over clients' local tests; the
        same mean of each ``evaluate_means`` metric the clients report."""
        good = self.validate(replies, {}, kind="evaluate")
        return self.summarize_evaluate(good) if good else None

    def summarize_evaluate(self, good: list[Message]) -> MetricRecord:
        """The round's federated-evaluation metrics from the validated replies ``good``."""
        accs = np.array([m.content.metric_records["metrics"]["accuracy"] for m in good], dtype=float)
        out = {"personalized-accuracy": float(accs.mean()), "personalized-accuracy-std": float(accs.std())}
        for key, name in self.evaluate_means.items():
            values = [float(m.content.metric_records["metrics"][key]) for m in good
                      if key in m.content.metric_records["metrics"]]
            if values:
                out[name] = float(np.mean(values))
        self.row.update(out)
        return MetricRecord(out)

    def evaluate_global(self, server_round: int, arrays: ArrayRecord) -> MetricRecord | None:
        """Accuracy and loss of the global model on the server's test set."""
        if self.test_data is None:
            return None
        model = build_model(self.cfg["model"], self.test_data.num_classes, self.test_data.input_shape)
        model.load_state_dict(arrays.to_torch_state_dict())
        res = evaluate(model, self.test_data.test, 512, device_of(self.cfg))
        return MetricRecord({"accuracy": res["accuracy"], "loss": res["loss"]})

    def validation_set(self):
        """The server's validation split (``val-fraction`` of the training pool, never in a
        client's partition: ``datasets.partition.server_validation``), built once; None if empty."""
        if getattr(self, "_val_set", False) is False:
            from datasets.partition import server_validation

            _, idx = server_validation(self.cfg, self.test_data)
            self._val_set = self.test_data.train.subset(idx) if len(idx) else None
        return self._val_set

    def evaluate_val(self, server_round: int, arrays: ArrayRecord) -> dict[str, float]:
        """``val-accuracy`` and ``val-loss`` of the global model on ``validation_set``: what
        tuning selects on (the test set never is)."""
        res = evaluate(self.eval_model(arrays), self.validation_set(), 512, device_of(self.cfg))
        return {"val-accuracy": res["accuracy"], "val-loss": res["loss"]}

    def add_val_metrics(self, server_round: int, arrays: ArrayRecord, res: MetricRecord | None):
        if self.test_data is None or self.validation_set() is None:
            return res
        out = self.evaluate_val(server_round, arrays)
        return MetricRecord({**(dict(res) if res is not None else {}), **out}) if out else res

    def eval_model(self, arrays: ArrayRecord) -> torch.nn.Module:
        """The global model as a logits function (``x -> logits``) for the OOD suite;
        override where the global model is not ``build_model(cfg["model"])``."""
        model = build_model(self.cfg["model"], self.test_data.num_classes, self.test_data.input_shape)
        model.load_state_dict(arrays.to_torch_state_dict())
        return model.eval()

    def add_shift_metrics(self, server_round: int, arrays: ArrayRecord, res: MetricRecord | None):
        """The OOD suite (keys ``corruptions``, ``ood-datasets``; ``evaluation/ood.py``):
        its metrics join the row after the last round and every ``ood-eval-every`` rounds."""
        from evaluation import ood as ood_eval

        if self.test_data is None or not ood_eval.due(self.cfg, server_round):
            return res
        if getattr(self, "shift_suite", None) is None:
            self.shift_suite = ood_eval.ShiftSuite(self.cfg, self.test_data)
        extra = self.shift_suite(self.eval_model(arrays))
        return MetricRecord({**(dict(res) if res is not None else {}), **extra})

    def add_domain_metrics(self, server_round: int, arrays: ArrayRecord, res: MetricRecord | None):
        """``partitioner=domain`` (domain generalization, any method): ``heldout-accuracy``
        on the held-out domain, ``source-accuracy`` on source-domain validation images
        (``datasets/domains.py: domain_eval_sets``), and model selection as the paper:
        ``selected-heldout-accuracy`` is the held-out accuracy of the round (>= 1) with the
        best source accuracy so far (ties: the earlier round; among the ``evaluated`` rounds),
        ``selected-round`` that round.
        Each is computed in both BatchNorm modes, suffixed ``-eval`` (running statistics)
        and ``-batch`` (``evaluate_batch_bn``: the official FedDG-LSI test loop); the plain
        names repeat the mode chosen by ``eval-bn``."""
        if self.test_data is None or self.cfg["partitioner"] != "domain":
            return res
        from datasets.domains import domain_eval_sets

        if getattr(self, "dg_sets", None) is None:
            self.dg_sets = domain_eval_sets(self.test_data, int(self.cfg["heldout-domain"]))
        model, device = self.eval_model(arrays), device_of(self.cfg)
        out = {}
        for mode in ("eval", "batch"):  # both BatchNorm evaluation modes (key eval-bn), every round
            if mode == "eval":
                held, src = (evaluate(model, d, 512, device) for d in self.dg_sets)
            else:
                seed = int(np.random.SeedSequence([int(self.cfg["seed"]), server_round, 29]).generate_state(1)[0])
                held, src = (evaluate_batch_bn(model, d, device, seed) for d in self.dg_sets)
            out.update({f"heldout-accuracy-{mode}": held["accuracy"], f"heldout-loss-{mode}": held["loss"],
                        f"source-accuracy-{mode}": src["accuracy"]})
            if server_round:
                seen = [(r[f"source-accuracy-{mode}"], -r["round"], r[f"heldout-accuracy-{mode}"]) for r in self.rows
                        if r.get("round", 0) >= 1 and f"source-accuracy-{mode}" in r]
                best = max(seen + [(src["accuracy"], -server_round, held["accuracy"])])
                out.update({f"selected-heldout-accuracy-{mode}": best[2], f"selected-round-{mode}": float(-best[1])})
        chosen = str(self.cfg["eval-bn"])  # the unsuffixed names follow the chosen mode
        for name in ("heldout-accuracy", "heldout-loss", "source-accuracy", "selected-heldout-accuracy", "selected-round"):
            if f"{name}-{chosen}" in out:
                out[name] = out[f"{name}-{chosen}"]
        return MetricRecord({**(dict(res) if res is not None else {}), **out})

    # ---- the loop -----------------------------------------------------------------
    def evaluated(self, server_round: int) -> bool:
        """Whether the global model is evaluated after ``server_round`` (``evaluate-every``):
        round 0, every N-th and the last round (what final-round tables and tuning read), and
        the OOD suite's rounds (``ood-eval-every``). A function of the round: resume keeps it."""
        from evaluation import ood

        last = getattr(self, "last_round", int(self.cfg["num-server-rounds"]))
        return server_round in (0, last) or server_round % int(self.cfg.get("evaluate-every", 1)) == 0 \
            or ood.due(self.cfg, server_round)

    def end_round(self, server_round: int, arrays: ArrayRecord) -> MetricRecord | None:
        """Centralized evaluation (on ``evaluated`` rounds), then the round's row: progress line + writer."""
        res = None
        if self.evaluated(server_round):  # forked: a fresh model's init draws from torch's RNG, which
            with torch.random.fork_rng(devices=[]):  # training must not see (evaluate-every changes no model)
                res = self.evaluate_global(server_round, arrays)
                res = self.add_val_metrics(server_round, arrays, res)
                res = self.add_shift_metrics(server_round, arrays, res)
                res = self.add_domain_metrics(server_round, arrays, res)
        row = {"round": server_round, **self.row} if server_round else {"round": 0}
        if res is not None:
            row.update({k: float(v) for k, v in res.items()})
        if server_round:
            row["round-seconds"] = time.perf_counter() - self.t_round
            done = next((r for r in reversed(self.rows) if r.get("round", 0) >= 1), {})
            for way in ("uplink", "downlink"):  # the run's bytes so far: what an equal-bytes comparison reads
                row[f"{way}-bytes-total"] = done.get(f"{way}-bytes-total", 0) + row.get(f"{way}-bytes", 0)
        shown = ("accuracy", "loss", "personalized-accuracy", "failures", "round-seconds")
        log(INFO, "[round %d/%s] %s", server_round, self.cfg["num-server-rounds"],
            " ".join(f"{k}={row[k]:.4g}" for k in shown if k in row))
        self.rows.append(row)
        if self.on_round:
            self.on_round(row)
        return res

    # ---- checkpoints ----------------------------------------------------------------
    def state_dict(self) -> dict:
        """Strategy state a resumed run needs (methods with server state override)."""
        return {}

    def load_state_dict(self, state: dict) -> None:
        """Restore what ``state_dict`` returned."""

    @property
    def checkpoint_path(self) -> Path:
        return Path(self.cfg["out-dir"]).expanduser().resolve() / self.cfg["run-name"] / "checkpoint.pt"

    def save_checkpoint(self, server_round: int, arrays: ArrayRecord) -> None:
        from .checkpoints import save

        save(self, server_round, arrays)

    def load_checkpoint(self) -> tuple[int, ArrayRecord]:
        """Restore a checkpoint (``strategies/checkpoints.py``); returns (last finished round, its model)."""
        from .checkpoints import load

        return load(self)

    # ---- the loop -------------------------------------------------------------------
    def start(self, grid: Grid, initial_arrays: ArrayRecord, num_rounds: int = 3, timeout: float = 3600,
              train_config: ConfigRecord | None = None, evaluate_config: ConfigRecord | None = None,
              evaluate_fn=None) -> Result:
        """Flower's round loop (train, federated evaluation, centralized evaluation),
        rewritten because ``Strategy.start`` has no place for what a run here needs: it
        always starts at round 1 from ``initial_arrays`` (no resume from a checkpoint),
        its only per-round hook is ``evaluate_fn`` (here ``end_round`` writes the results
        row, then a checkpoint is saved), and nothing runs before round 1 (here
        ``check_federation`` finds each node's partition and fails at once if the
        partitions cannot be made). Each round gets fresh copies of the configs, which
        ``configure_train`` writes into. An ``evaluate_fn`` replaces ``evaluate_global``.
        Rounds that ``evaluated`` skips run no federated or centralized evaluation."""
        if evaluate_fn is not None:
            self.evaluate_global = evaluate_fn
        self.last_round = num_rounds  # always evaluated (``evaluated``)
        self.summary()
        with phase("finding the federation"):
            self.check_federation(grid)
        result, arrays, done = Result(), initial_arrays, 0
        if self.cfg.get("resume"):
            done, arrays = self.load_checkpoint()
        else:
            with phase("round 0: server evaluation"):
                self.end_round(0, arrays)
        every = int(self.cfg.get("checkpoint-every", 1))
        for rnd in range(done + 1, num_rounds + 1):  # phase(): what the progress heartbeat names
            log(INFO, "[ROUND %d/%d]", rnd, num_rounds)
            msgs = list(self.configure_train(rnd, arrays, ConfigRecord(dict(train_config or {})), grid))
            with phase(f"round {rnd}: waiting for {len(msgs)} training replies"):
                replies = grid.send_and_receive(msgs, timeout=timeout)
            with phase(f"round {rnd}: aggregation"):
                new, train_metrics = self.aggregate_train(rnd, replies)
            if new is not None:
                arrays = result.arrays = new
            if train_metrics is not None:
                result.train_metrics_clientapp[rnd] = train_metrics
            if self.evaluated(rnd):  # federated evaluation follows evaluate-every too
                msgs = list(self.configure_evaluate(rnd, arrays, ConfigRecord(dict(evaluate_config or {})), grid))
                with phase(f"round {rnd}: waiting for {len(msgs)} evaluation replies"):
                    replies = grid.send_and_receive(msgs, timeout=timeout)
                eval_metrics = self.aggregate_evaluate(rnd, replies)
                if eval_metrics is not None:
                    result.evaluate_metrics_clientapp[rnd] = eval_metrics
            with phase(f"round {rnd}: server evaluation" if self.evaluated(rnd) else f"round {rnd}: results row"):
                res = self.end_round(rnd, arrays)
            if res is not None:
                result.evaluate_metrics_serverapp[rnd] = res
            if every and (rnd % every == 0 or rnd == num_rounds):
                self.save_checkpoint(rnd, arrays)
        result.arrays = arrays
        return result
