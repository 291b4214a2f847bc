"""Local work shared by all methods: data batches, the train loop, evaluation.

Pure torch: a client is built from its data and the run config, gets tensors and a
config dict, and returns a ``Reply``. ``simulations/client_app.py`` turns Flower
messages into these calls, so every client can be tested without Flower.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Iterator

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F
from torch.utils.data import DataLoader, Dataset

from datasets.registry import ArrayDataset
from models import build_model

Tensors = dict[str, torch.Tensor]


@dataclass
class ClientData:
    """One client's partition: local train, test and validation splits. ``val`` is what a
    method may choose on per client (fine-tuning epochs, a mixing weight); ``test`` is only
    scored. None: no validation split."""

    partition_id: int
    train: Dataset
    test: Dataset
    num_classes: int
    input_shape: tuple[int, ...]
    val: Dataset | None = None


@dataclass
class Reply:
    """What a client sends back (``arrays`` by record name, ``metrics``) and keeps."""

    arrays: dict[str, Tensors]
    metrics: dict[str, float]
    keep: dict[str, Tensors] = field(default_factory=dict)


def batches(
    data: Dataset, batch_size: int, shuffle: bool = False, seed: int = 0
) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    """Mini-batches; tensor datasets are sliced directly (no per-item collation)."""
    gen = torch.Generator().manual_seed(seed)
    if isinstance(data, ArrayDataset):
        order = torch.randperm(len(data), generator=gen) if shuffle else torch.arange(len(data))
        for idx in order.split(batch_size):
            yield data[idx]
        return
    yield from DataLoader(data, batch_size=batch_size, shuffle=shuffle, generator=gen)


def device_of(cfg: dict) -> torch.device:
    """``device`` key: ``auto`` takes the GPU Ray gave this actor, if any."""
    name = str(cfg.get("device", "auto"))
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    return torch.device(name)


@torch.no_grad()
def evaluate(model: nn.Module, data: Dataset, batch_size: int, device: torch.device) -> dict[str, float]:
    """Mean cross-entropy and accuracy of ``model`` on ``data``."""
    return _scores(model.eval().to(device), batches(data, batch_size), device)


def _scores(model: nn.Module, pairs, device: torch.device) -> dict[str, float]:
    """Summed cross-entropy and hits over (x, y) batches, as means."""
    loss, correct, n = 0.0, 0, 0
    for x, y in pairs:
        x, y = x.to(device), y.to(device)
        logits = model(x)
        loss += F.cross_entropy(logits, y, reduction="sum").item()
        correct += (logits.argmax(1) == y).sum().item()
        n += len(y)
    return {"loss": loss / max(n, 1), "accuracy": correct / max(n, 1), "num-examples": n}


@torch.no_grad()
def evaluate_batch_bn(model: nn.Module, data: Dataset, device: torch.device, seed: int,
                      batch_size: int = 32) -> dict[str, float]:
    """``evaluate`` with every BatchNorm in train mode (normalizing by each batch's own
    statistics) on shuffled batches of ``batch_size``: the official FedDG-LSI test loop,
    which never calls ``model.eval()`` (an AdaBN-like evaluation). Dropout stays off and
    the model's running statistics are left untouched (a copy is evaluated). A last batch
    of one sample joins the previous batch (BatchNorm needs two)."""
    import copy

    model = copy.deepcopy(model).eval().to(device)
    for m in model.modules():
        if isinstance(m, nn.modules.batchnorm._BatchNorm):
            m.train()
    n_all = len(data)
    order = torch.randperm(n_all, generator=torch.Generator().manual_seed(seed))
    chunks = list(order.split(batch_size))
    if len(chunks) > 1 and len(chunks[-1]) == 1:
        chunks[-2:] = [torch.cat(chunks[-2:])]
    pairs = (data[idx] if isinstance(data, ArrayDataset)
             else next(iter(DataLoader(torch.utils.data.Subset(data, idx.tolist()), batch_size=len(idx))))
             for idx in chunks)
    return _scores(model, pairs, device)


SIM_GROUND_TRUTH = "sim-ground-truth"  # node-config flag; "sim-" train-config keys are evaluation-only requests
MIN_CLASS_SAMPLES = "min-class-samples"  # node config: FedHiP's privacy floor (clients/fedhip.py)
DEFAULT_MIN_CLASS_SAMPLES = 2


def in_simulation_engine() -> bool:
    """True inside Flower's simulation engine: its Ray backend runs the ClientApp in a Ray
    actor, which a ``flower-supernode`` never does (the engine's node config holds only
    ``partition-id``/``num-partitions`` and cannot carry a flag)."""
    import sys

    ray = sys.modules.get("ray")
    try:
        return bool(ray is not None and ray.is_initialized() and ray.get_runtime_context().get_actor_id())
    except Exception:  # an old or partial Ray: not the engine we know
        return False


def ground_truth_allowed(context) -> bool:
    """May this node return evaluation-only data (its raw training images and labels,
    per-example gradients...) that a simulation's evaluator needs?

    Only where the node opted in: the simulation engine, ``LocalGrid`` (node config
    ``sim-ground-truth=true``), or a SuperNode whose operator started it with
    ``--node-config "sim-ground-truth=true"``. A plain ``flower-supernode`` never does,
    whatever the server asks. Takes a Flower ``Context`` (its ``node_config``)."""
    return context.node_config.get(SIM_GROUND_TRUTH) is True or in_simulation_engine()


def refuse_evaluation_only(config: dict, context) -> dict:
    """The train/evaluate config with every evaluation-only request (a true ``sim-*``
    key) turned off where ``ground_truth_allowed`` is false, one warning line each."""
    asked = [k for k, v in config.items() if k.startswith("sim-") and v]
    if not asked or ground_truth_allowed(context):
        return config
    from logging import WARNING

    from flwr.common.logger import log

    for key in asked:
        log(WARNING, "refused the server's request '%s' (evaluation-only data): this node is not a simulation "
            "and its node config does not set %s=true", key, SIM_GROUND_TRUTH)
    return {**config, **{k: False for k in asked}}


def finetune(client: Client, start: Tensors) -> tuple[int, float]:
    """Local fine-tuning after the last round (FedAvg + FT): up to ``finetune-epochs``
    epochs of SGD (``finetune-lr``, 0 = ``lr``) from ``start`` on the client's train split;
    the number of epochs (0 = ``start`` itself) is the one with the best accuracy on its
    validation split (ties: fewer). Leaves that model in ``client.model``; returns
    (epochs, its validation accuracy). The local test split is not read."""
    cfg = client.cfg
    client.set_weights(start)
    best = (client.score(client.data.val)["accuracy"], 0, {k: v.detach().clone() for k, v in start.items()})
    seed = int(np.random.SeedSequence([int(cfg["seed"]), client.data.partition_id, 71]).generate_state(1)[0])
    torch.manual_seed(seed)
    model = client.model.train()
    lr = float(cfg["finetune-lr"]) or float(cfg["lr"])
    opt = client.optimizer(model, lr)
    for epoch in range(1, int(cfg["finetune-epochs"]) + 1):
        model.train()
        for x, y in batches(client.data.train, int(cfg["batch-size"]), True, seed + epoch):
            x, y = x.to(client.device), y.to(client.device)
            loss = F.cross_entropy(model(x), y)
            opt.zero_grad()
            loss.backward()
            opt.step()
        acc = client.score(client.data.val)["accuracy"]
        if acc > best[0]:
            best = (acc, epoch, {k: v.detach().cpu().clone() for k, v in model.state_dict().items()})
    client.set_weights(best[2])
    return best[1], best[0]


class Client:
    """FedAvg's client: SGD on cross-entropy for ``local-epochs``; methods subclass it.

    A subclass usually overrides only ``extra_loss`` (a term added to the
    cross-entropy, e.g. FedProx's proximal term) or ``train``/``evaluate`` as a whole.
    After the last round ``finetune-epochs`` > 0 fine-tunes the global model on the local
    train split, the epochs chosen on the validation split (``finetune``).
    """

    def __init__(self, cfg: dict, data: ClientData):
        self.cfg, self.data = cfg, data
        self.device = device_of(cfg)
        self.model = build_model(cfg["model"], data.num_classes, data.input_shape).to(self.device)

    def set_weights(self, weights: Tensors) -> None:
        self.model.load_state_dict(weights)

    def extra_loss(self, model: nn.Module, global_weights: Tensors) -> torch.Tensor | float:
        return 0.0

    def seed(self, server_round: int) -> int:
        """Per (run seed, round, client) seed: same run, same batches."""
        return int(np.random.SeedSequence([int(self.cfg["seed"]), server_round, self.data.partition_id]).generate_state(1)[0])

    def optimizer(self, model: nn.Module, lr: float | None = None) -> torch.optim.Optimizer:
        return torch.optim.SGD(model.parameters(), lr=float(self.cfg["lr"]) if lr is None else lr,
                               momentum=float(self.cfg["momentum"]), weight_decay=float(self.cfg["weight-decay"]))

    def local_sgd(self, start: Tensors, anchor: Tensors, epochs: int, seed: int) -> tuple[Tensors, float]:
        """``epochs`` of SGD on the train split from ``start``, with ``extra_loss`` measured
        against ``anchor``; (the new state, the mean loss)."""
        self.set_weights(start)
        global_weights = {k: v.detach().to(self.device) for k, v in anchor.items()}
        torch.manual_seed(seed)
        model = self.model.train()
        opt = self.optimizer(model)
        total, steps = 0.0, 0
        for epoch in range(epochs):
            for x, y in batches(self.data.train, int(self.cfg["batch-size"]), True, seed + epoch):
                x, y = x.to(self.device), y.to(self.device)
                loss = F.cross_entropy(model(x), y) + self.extra_loss(model, global_weights)
                opt.zero_grad()
                loss.backward()
                opt.step()
                total, steps = total + loss.item(), steps + 1
        # copies: on the CPU .cpu() would alias the parameters, which the next local_sgd trains in place
        return {k: v.detach().cpu().clone() for k, v in model.state_dict().items()}, total / max(steps, 1)

    def train(self, arrays: dict[str, Tensors], config: dict, stored: dict[str, Tensors]) -> Reply:
        weights = arrays["arrays"]
        state, loss = self.local_sgd(weights, weights, int(self.cfg["local-epochs"]),
                                     self.seed(int(config.get("server-round", 0))))
        return Reply({"arrays": state}, {"train-loss": loss, "num-examples": len(self.data.train)})

    def score(self, data: Dataset) -> dict[str, float]:
        return evaluate(self.model, data, int(self.cfg["batch-size"]) * 4, self.device)

    def evaluate(self, arrays: dict[str, Tensors], config: dict, stored: dict[str, Tensors]) -> dict[str, float]:
        """Accuracy of the received model on this client's local test split (and
        ``val-accuracy``/``val-loss`` on its validation split, where it has one); after the
        last round with ``finetune-epochs`` > 0, of the model fine-tuned on the local train
        split (``global-accuracy``: the received model's, before)."""
        self.set_weights(arrays["arrays"])
        out = self.score(self.data.test)
        has_val = self.data.val is not None and len(self.data.val) > 0
        if has_val:
            val = self.score(self.data.val)
            out.update({"val-accuracy": val["accuracy"], "val-loss": val["loss"]})
        last = int(config.get("server-round", 0)) >= int(self.cfg["num-server-rounds"])
        if last and int(self.cfg.get("finetune-epochs", 0)) > 0 and has_val:
            epochs, _ = finetune(self, arrays["arrays"])  # leaves the chosen model in self.model
            val = self.score(self.data.val)
            out = {**self.score(self.data.test), "global-accuracy": out["accuracy"], "val-accuracy": val["accuracy"],
                   "val-loss": val["loss"], "finetune-epochs": epochs}
        return out
