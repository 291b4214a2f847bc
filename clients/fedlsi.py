"""FedDG-LSI client: stage 1 (local pre-training, upload the head only), stage 4 (local
training with the domain-invariance / divergence loss through the server's translator G)
and the MAS importance of stage 5. See strategies/fedlsi.py for the whole method.

Stage 4 loss, as the official ``train_local_with_domain_density_translator``:
``CE(f(x), y) + lambda-di * MSE(G(z, c, c'), z)`` with c this client's code, c' drawn
uniformly from G's codes (it may equal c), G frozen in eval mode; the gradient reaches
the encoder through both z and G(z, ...). The official per-epoch "best model" selection
aliases the live model (``best_model = model``) and so returns the last epoch; the last
epoch is returned here too, without the alias.

Optimizer (official ``feddg_latent.py``): SGD with ``lsi-lr`` (1e-3), ``momentum`` (0.9) and
``lsi-weight-decay`` (5e-4), created once per client and kept across rounds: the momentum
buffers go into the node's state (``Reply.keep`` record ``lsi-optimizer``, by parameter name)
and are loaded into the next round's optimizer (``lsi-keep-optimizer``; off: a fresh SGD
every round). The stage-1 pre-training uses the same SGD, fresh, and keeps nothing.

Importance (official ``calc_imp_weights``): model in eval mode; for every training batch
backpropagate ``sum_b ||f(x_b)||^2`` and accumulate ``|grad|``; divide by the number of
samples. Returned as the ArrayRecord ``importance`` (one array per model parameter).
"""

from __future__ import annotations

import torch
from torch.nn import functional as F

from models.translator import head_keys, latent_model, translator_from_state

from .base import Client, Reply, Tensors, batches

OPT_STATE = "lsi-optimizer"  # the node-state record of the SGD momentum buffers


class FedLSIClient(Client):
    def __init__(self, cfg: dict, data):
        super().__init__({**cfg, "model": latent_model(cfg["model"])}, data)

    def importance(self, model: torch.nn.Module) -> Tensors:
        """MAS importance Omega[theta] = (1/N) sum_batches |d/dtheta sum_b ||f(x_b)||^2|."""
        model.eval()
        params = dict(model.named_parameters())
        omega = {k: torch.zeros_like(p) for k, p in params.items()}
        n = 0
        for x, _ in batches(self.data.train, int(self.cfg["batch-size"])):
            x = x.to(self.device)
            model.zero_grad(set_to_none=True)
            model(x).pow(2).sum().backward()
            for k, p in params.items():
                if p.grad is not None:
                    omega[k] += p.grad.detach().abs()
            n += len(x)
        model.zero_grad(set_to_none=True)
        return {k: (v / max(n, 1)).cpu() for k, v in omega.items()}

    def train(self, arrays: dict[str, Tensors], config: dict, stored: dict[str, Tensors]) -> Reply:
        stage = str(config.get("lsi-stage", "train"))
        lam = float(config.get("lambda-di", self.cfg["lambda-di"]))
        self.set_weights(arrays["arrays"])
        seed = self.seed(int(config.get("server-round", 0)))
        torch.manual_seed(seed)
        gen = torch.Generator().manual_seed(seed)

        g, code, num_codes = None, 0, 0
        if stage == "train" and "translator" in arrays and lam > 0:
            g = translator_from_state(arrays["translator"]).to(self.device).eval()
            for p in g.parameters():
                p.requires_grad_(False)
            num_codes = int(config.get("lsi-num-codes", g.num_domains))
            key = f"lsi-code-{self.data.partition_id}"
            # A client without a code (it joined after stage 1) uses a random source code.
            code = int(config[key]) if key in config else int(torch.randint(num_codes, (1,), generator=gen))

        model = self.model.train()
        keep = stage == "train" and bool(self.cfg["lsi-keep-optimizer"])
        opt = self.optimizer(model, stored.get(OPT_STATE, {}) if keep else {})
        epochs = int(self.cfg["lsi-pretrain-epochs"]) if stage == "pretrain" else int(self.cfg["local-epochs"])
        total, div_total, steps = 0.0, 0.0, 0
        for epoch in range(epochs):
            for x, y in batches(self.data.train, int(self.cfg["batch-size"]), True, seed + epoch):
                if len(x) < 2:  # a lone last sample: the latent head's BatchNorm1d cannot train on one
                    continue
                x, y = x.to(self.device), y.to(self.device)
                z, logits = model.forward_z(x)
                loss = F.cross_entropy(logits, y)
                if g is not None:
                    c = torch.full((len(x),), code, dtype=torch.long, device=self.device)
                    c_new = torch.randint(num_codes, (len(x),), generator=gen).to(self.device)
                    div = F.mse_loss(g(z, c, c_new), z)
                    loss = loss + lam * div
                    div_total += div.item()
                opt.zero_grad()
                loss.backward()
                opt.step()
                total, steps = total + loss.item(), steps + 1
        state = {k: v.detach().cpu().clone() for k, v in model.state_dict().items()}  # not the live model
        metrics = {"train-loss": total / max(steps, 1), "num-examples": len(self.data.train)}
        if stage == "pretrain":  # stage 1: only the classifier head leaves the client
            return Reply({"head": {k: state[k] for k in head_keys(state)}}, metrics)
        if g is not None:
            metrics["divergence"] = div_total / max(steps, 1)
        out = {"arrays": state}
        if str(config.get("aggregation", self.cfg["aggregation"])) == "importance":
            out["importance"] = self.importance(model)
        return Reply(out, metrics, {OPT_STATE: self.momentum(model, opt)} if keep else {})

    def optimizer(self, model: torch.nn.Module, momentum: Tensors) -> torch.optim.SGD:
        """The official SGD, with the momentum buffers of the last round where given."""
        opt = torch.optim.SGD(model.parameters(), lr=float(self.cfg["lsi-lr"]), momentum=float(self.cfg["momentum"]),
                              weight_decay=float(self.cfg["lsi-weight-decay"]))
        for name, p in model.named_parameters():
            buf = momentum.get(name)
            if buf is not None and buf.shape == p.shape and torch.isfinite(buf).all():
                opt.state[p]["momentum_buffer"] = buf.to(p.device, p.dtype).clone()
        return opt

    @staticmethod
    def momentum(model: torch.nn.Module, opt: torch.optim.SGD) -> Tensors:
        """The optimizer's momentum buffers by parameter name (what the next round resumes)."""
        return {name: opt.state[p]["momentum_buffer"].detach().cpu().clone() for name, p in model.named_parameters()
                if opt.state.get(p, {}).get("momentum_buffer") is not None}
