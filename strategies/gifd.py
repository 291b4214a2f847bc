"""GIFD (Fang et al., ICCV 2023) as a malicious server: FL training plus gradient inversion.

The strategy runs an ordinary FL loop (FedSGD or FedAvg, ``attack-threat``) and, in
round ``attack-round``, inverts up to ``attack-num-images`` images from the updates it
received, with every attack of ``attack`` side by side:

- label inference from the last layer (iDLG for batch 1, counts for larger batches),
- ``dlg``/``idlg``: L-BFGS on the pixels (labels joint / analytic), ``ig``: Inverting
  Gradients (pixels), ``ggl``: GGL's CMA-ES over the GAN latent, ``ggl-adam``: Adam over it,
- ``gifd``: latent search, then the generator's intermediate features in l1 balls.

``attack-round`` is one round or a list (``"1,5,20"``): leakage as the model trains.

Attacker/evaluator split (breaching's contract). An attack sees an ``AttackInput`` built
by ``attacker_view`` from what the server legitimately has: the model it sent, the one
update record of the reply (``gradient`` or ``arrays``) and the hyperparameters it
announced. Clients of this experiment also return the images they used in a
*simulation-only* ArrayRecord ``sim-ground-truth``; reply validation
(``BaseStrategy.take_ground_truth``) checks it and takes it out of every reply before
anything else reads it (accepted only with ``partition-assignment=server``, a
simulation), and keeps it for ``evaluate_reconstructions`` only. ``tests/test_gifd.py`` proves the attacks never
receive it and that a poisoned ground truth changes the scores but not the
reconstructions.

Outputs in the run folder: ``attacks.csv`` (one row per attacked image and attack:
psnr, ssim, lpips, label-accuracy, attack-seconds, grad-loss, ...; on a node that keeps
its data, see ``clients.base.ground_truth_allowed``, no scores and ``note`` = "no ground
truth"), ``attacks.png``
(ground truth row, one row per attack) and per-attack means in the round's metrics row
(``<attack>-psnr``, ``<attack>-ssim``, ``label-accuracy``).

Prior: ``gan-checkpoint`` (any ``models.generator`` checkpoint), else the GAN trained on
``gan-dataset`` with ``gan-train-steps`` (cached as ``<out-dir>/gan/<name>-steps<N>-seed0.pt``,
trained on first use; ``python -m attacks.train_gan`` does the same ahead of
time). A prior trained on the clients' own training pool is refused.

The FL model is the project's ``cnn`` (SmallCNN), attacked at round 1 while untrained
(gradient inversion is easiest there, and the official code attacks an untrained
ResNet-18). Attacks run with one torch thread (tiny per-image problems; much faster on a
shared 2-core machine), and are compared at an equal budget of ``attack-budget``
gradient-matching steps per image (restarts, stages and label-mapping trials included).
They run on ``attack-device`` (the sent model, the update, the generator, every starting
point; a missing GPU is refused at the config check); scores, CSV and images are computed on
the CPU from the reconstructions, which come back there.
"""

from __future__ import annotations

import math
import time
from logging import INFO, WARNING
from pathlib import Path
from typing import Literal

import numpy as np
import torch
from flwr.app import ArrayRecord, ConfigRecord, Message, RecordDict
from flwr.common.logger import log
from pydantic import Field

from attacks.common import AttackInput, AttackResult, resolve_device
from attacks.dlg import invert_dlg
from attacks.ggl import invert_ggl, invert_ggl_adam
from attacks.gifd import invert_gifd
from attacks.ig import invert_ig
from attacks.label_inference import infer_labels
from attacks.prior import LABEL_MAPS, GanPrior
from clients.gifd import DEFENSES, GROUND_TRUTH, PLAIN_ROUND
from common.keys import Int, Keys, shown
from common.progress import phase
from models import build_model

from .base import BaseStrategy
from .replies import sent_specs

ATTACK_NAMES = ("dlg", "idlg", "ig", "ggl", "ggl-adam", "gifd")
GAN_ATTACKS = ("ggl", "ggl-adam", "gifd")
CSV_COLUMNS = ["round", "partition", "update", "image", "attack", "threat", "batch-size", "defense", "defense-param",
               "prior", "true-label", "inferred-label", "label-accuracy", "psnr", "ssim", "lpips", "attack-seconds",
               "grad-loss", "steps", "budget-used", "l1-active", "update-norm", "note"]
NO_TRUTH = "no ground truth"  # the note of a row whose node sent no ground truth (a real node)


def parse_list(text: str, cast=str) -> list:
    return [cast(t.strip()) for t in str(text).split(",") if t.strip()]


def attack_list(cfg: dict) -> list[str]:
    names = parse_list(cfg["attack"])
    return [] if names == ["none"] else names


def attack_rounds(cfg: dict) -> list[int]:
    """``attack-round``: one round (int) or a comma-separated list of rounds."""
    return sorted(set(parse_list(cfg["attack-round"], lambda t: int(float(t)))))


def settings_of(cfg: dict) -> dict:
    """The attack hyperparameters of the run config."""
    return {"budget": int(cfg["attack-budget"]), "restarts": int(cfg["attack-restarts"]), "lr": float(cfg["attack-lr"]),
            "tv": float(cfg["attack-tv"]), "ig-tv": float(cfg["ig-tv"]), "ggl-kl": float(cfg["ggl-kl"]),
            "latent-fraction": float(cfg["gifd-latent-fraction"]), "stages": int(cfg["gifd-stages"]),
            "radii": tuple(parse_list(cfg["gifd-radii"], float)), "label-map": cfg["gan-label-map"],
            "ggl-population": int(cfg["ggl-population"]), "stage-start": cfg["gifd-stage-start"],
            "label-space": label_space_of(cfg["dataset"])}


def label_space_of(dataset: str) -> str:
    from attacks.train_gan import label_space

    return label_space(dataset)


def run_attack(name: str, inp: AttackInput, labels: torch.Tensor, prior: GanPrior | None, s: dict,
               seed: int) -> AttackResult:
    """One attack on one update; ``inp`` holds nothing but the attacker's view."""
    common = dict(budget=s["budget"], restarts=s["restarts"], lr=s["lr"], seed=seed)
    if name in ("dlg", "idlg"):  # breaching's deepleakage.yaml: L-BFGS lr 1.0
        return invert_dlg(inp, None if name == "dlg" else labels, budget=s["budget"], restarts=s["restarts"],
                          seed=seed, batch_size=len(labels))
    if name == "ig":
        return invert_ig(inp, labels, tv=s["ig-tv"], breaching=True, **common)
    if name == "ggl":
        return invert_ggl(inp, labels, prior, budget=s["budget"], kl=s["ggl-kl"], population=s["ggl-population"],
                          label_map=s["label-map"], label_space=s["label-space"], seed=seed)
    if name == "ggl-adam":
        return invert_ggl_adam(inp, labels, prior, kl=s["ggl-kl"], label_map=s["label-map"],
                               label_space=s["label-space"], **common)
    if name == "gifd":
        return invert_gifd(inp, labels, prior, tv=s["tv"], latent_fraction=s["latent-fraction"], radii=s["radii"],
                           stages=s["stages"], label_map=s["label-map"], label_space=s["label-space"],
                           stage_start=s["stage-start"], **common)
    raise ValueError(f"unknown attack '{name}'")


def budget_used(result: AttackResult) -> str:
    """Where the attack's budget went, e.g. ``label-map:20 latent:40 stage-1:10``."""
    return " ".join(f"{k}:{v}" for k, v in result.info.get("budget-used", {}).items())


def attacker_view(content: RecordDict, sent: ArrayRecord, model_name: str, num_classes: int,
                  input_shape: tuple, mean, std, announced: dict) -> AttackInput:
    """The attacker's input: the sent model, the reply's update record, the announcements.

    Reads only ``gradient`` (fedsgd) or ``arrays`` (fedavg) of the reply; every other
    record (in particular ``sim-ground-truth``) is ignored.
    """
    model = build_model(model_name, num_classes, input_shape).train()
    state = sent.to_torch_state_dict()
    names = [n for n, _ in model.named_parameters()]
    params = {n: state[n].float() for n in names}
    buffers = {n: state[n] for n, _ in model.named_buffers() if n in state}
    if announced["threat"] == "fedsgd":
        record = content.array_records["gradient"].to_torch_state_dict()
        target = {n: record[n].float() for n in names}
    else:
        record = content.array_records["arrays"].to_torch_state_dict()
        target = {n: params[n] - record[n].float() for n in names}
    model.requires_grad_(False)
    return AttackInput(model=model, params=params, target=target, threat=announced["threat"],
                       batch_size=int(announced["batch-size"]), lr=float(announced["lr"]),
                       local_steps=int(announced["local-steps"]),
                       mean=torch.tensor(mean, dtype=torch.float32).view(-1, 1, 1),
                       std=torch.tensor(std, dtype=torch.float32).view(-1, 1, 1),
                       num_classes=num_classes, input_shape=tuple(input_shape), buffers=buffers)


def evaluate_reconstructions(result: AttackResult, truth: dict[str, torch.Tensor] | None,
                             inp: AttackInput) -> list[dict]:
    """The evaluator: scores a reconstruction against the simulation-only ground truth."""
    from attacks.metrics import score

    if truth is None:  # a real node keeps its data: the rows stay, without scores
        return [{"image": i, "inferred-label": int(result.labels[i]), "_match": i, "note": NO_TRUTH}
                for i in range(len(result.labels))]
    rec = inp.to_pixels(result.images)
    true = inp.to_pixels(truth["images"].float())
    rows = score(rec, result.labels, true, truth["labels"].long())
    for row in rows:
        row["_match"] = row.pop("match")  # which reconstruction shows ground-truth image row["image"]
        row["inferred-label"] = int(result.labels[row["_match"]])
    return rows


def save_grid(path: Path, truth: list[torch.Tensor], recs: dict[str, list[torch.Tensor]], psnrs: dict) -> None:
    """PNG: ground truth in the first row, one row per attack (pixels in [0, 1])."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = [("ground truth", truth)] + list(recs.items())
    n = len(truth)
    fig, axes = plt.subplots(len(rows), n, figsize=(0.9 * n + 0.9, 0.95 * len(rows)), squeeze=False)
    for r, (name, images) in enumerate(rows):
        for c in range(n):
            ax = axes[r][c]
            img = images[c].permute(1, 2, 0).numpy()
            ax.imshow(img.squeeze(-1) if img.shape[-1] == 1 else img, cmap="gray", vmin=0, vmax=1)
            ax.set_xticks([])
            ax.set_yticks([])
            if name in psnrs and c < len(psnrs[name]):
                ax.set_title(f"{psnrs[name][c]:.1f}", fontsize=6, pad=1)
        axes[r][0].set_ylabel(name.replace(" (", "\n("), fontsize=7)
    fig.tight_layout(pad=0.2)
    fig.savefig(path, dpi=90)
    plt.close(fig)


class GifdKeys(Keys):
    attack: str = Field("dlg,idlg,ig,ggl,ggl-adam,gifd",
                        description="attacks to run, comma-separated (`none` = plain FL)")
    attack_round: Int | str = Field("1", description="round(s) whose updates are attacked: one round or a list, "
                                               "e.g. `1,5,20`")
    attack_num_images: Int = Field(8, ge=0, description="images to attack (the first updates in partition order)")
    attack_batch_size: Int = Field(1, ge=1, description="images per client update")
    attack_threat: Literal["fedsgd", "fedavg"] = Field("fedsgd", description="`fedsgd` (gradient) or `fedavg` "
                                                                             "(weights after local steps)")
    attack_local_steps: Int = Field(5, ge=1, description="local SGD steps for `fedavg` (lr = `lr`)")
    attack_budget: Int = Field(200, ge=1, description="gradient-matching evaluations per image and attack, restarts "
                                                      "included")
    attack_restarts: Int = Field(1, ge=1, description="restarts sharing the budget (all attacks but `ggl`)")
    attack_device: str = Field("auto", description="where the attacks (and a GAN prior trained for them) run: `auto` "
                               "(a CUDA GPU if there is one, else the CPU), `cpu`, `cuda`, `cuda:N`")
    attack_lr: float = Field(0.1, gt=0, description="Adam lr (pixels, latent; features: lr x mean|h0|)")
    attack_tv: float = Field(0.0001, ge=0, description="total-variation weight of the GAN attacks")
    ig_tv: float = Field(0.2, ge=0, description="total-variation weight of IG (breaching's 0.2, its TV formula)")
    ggl_kl: float = Field(0.1, ge=0, description="GGL's KL weight")
    ggl_population: Int = Field(50, ge=0, description="GGL's CMA-ES candidates per generation (0: budget / 50, "
                                                      "at least 2, at most 50: >= 50 generations)")
    gifd_stage_start: Literal["last", "best"] = Field("last", description="a GIFD stage starts from the previous "
                                                                          "stage's `last` iterate (official) or `best`")
    gifd_latent_fraction: float = Field(0.5, ge=0, le=1, description="share of a GIFD restart spent on the latent")
    gifd_stages: Int = Field(4, ge=0, le=4, description="K, the last feature domain searched (0 = latent only)")
    gifd_radii: str = Field("0.11,0.071,0.061,0.032", description="l1 radius of each stage as a fraction of |h0|_1 "
                                                                "(calibrated so the ball binds; `inf`: no ball)")
    gan_dataset: str = Field("mnist-holdout", description="the prior's training data (`<name>`, `<name>-holdout`)")
    gan_checkpoint: str = Field("", description="a generator checkpoint instead (overrides `gan-dataset`)")
    gan_train_steps: Int = Field(2000, ge=1, description="GAN training steps when the prior is trained")
    gan_label_map: Literal[LABEL_MAPS] = Field("auto", description="how GAN classes map to the clients' labels")
    defense: Literal[DEFENSES] = Field("none", description="the clients' defense of their update")
    defense_noise_std: float = Field(0.01, ge=0, description="std of the Gaussian noise of `defense=noise`")
    defense_clip_norm: float = Field(1.0, gt=0, description="norm bound of `defense=clip`")
    defense_prune_percentile: float = Field(50.0, ge=0, lt=100, description="share pruned by `defense=prune` (%)")


class GifdStrategy(BaseStrategy):
    keys = GifdKeys

    @staticmethod
    def check_config(cfg: dict) -> None:
        from common.keys import ConfigError
        from datasets import DATASETS

        BaseStrategy.check_config(cfg)

        def check(ok, message):
            if not ok:
                raise ConfigError(message)

        names = attack_list(cfg)
        check(all(n in ATTACK_NAMES for n in names) and len(set(names)) == len(names),
              f"attack must be a comma-separated subset of {','.join(ATTACK_NAMES)} (or none), got {shown(cfg['attack'])}")
        try:
            rounds = parse_list(cfg["attack-round"], float)
        except ValueError:
            rounds = []
        check(bool(rounds) and all(r == int(r) and r >= 1 for r in rounds),
              f"attack-round must be a round or comma-separated rounds >= 1 (e.g. \"1,5,20\"), "
              f"got {shown(cfg['attack-round'])}")
        check(max(rounds) <= cfg["num-server-rounds"],
              f"attack-round {int(max(rounds))} > num-server-rounds {cfg['num-server-rounds']}: no attack would run")
        try:
            resolve_device(cfg["attack-device"])
        except ValueError as err:
            raise ConfigError(str(err)) from None
        check(cfg["attack-budget"] >= cfg["attack-restarts"],
              f"attack-budget ({cfg['attack-budget']}) must be >= attack-restarts ({cfg['attack-restarts']})")
        try:
            radii = parse_list(cfg["gifd-radii"], float)
        except ValueError:
            radii = None
        check(radii is not None and len(radii) >= cfg["gifd-stages"] and all(r >= 0 for r in radii),
              f"gifd-radii must be {cfg['gifd-stages']} comma-separated numbers >= 0 (inf: no ball), "
              f"got {shown(cfg['gifd-radii'])}")
        if any(n in GAN_ATTACKS for n in names) and not cfg["gan-checkpoint"]:
            gan = cfg["gan-dataset"]
            base = gan[: -len("-holdout")] if gan.endswith("-holdout") else gan
            check(base in DATASETS, f"gan-dataset '{gan}' is not a dataset: pass one of {sorted(DATASETS)} "
                                    "(optionally with -holdout) or gan-checkpoint=<file>")
            check(gan != cfg["dataset"], f"gan-dataset '{gan}' is the clients' training pool: pass "
                                         f"{gan}-holdout, another dataset, or gan-checkpoint=<file>")

    def __init__(self, cfg: dict, test_data=None, on_round=None):
        super().__init__(cfg, test_data, on_round)
        self.attacks = attack_list(cfg)
        self.threat = cfg["attack-threat"]
        self.sent: ArrayRecord | None = None
        self.plain = False  # this round is an ordinary FedAvg round (not attacked)
        self.truth: dict[int, dict] = {}
        self.prior: GanPrior | None = None
        self.attack_rows: list[dict] = []
        with torch.random.fork_rng():  # do not consume the RNG that initial_arrays() draws from
            model = build_model(cfg["model"], test_data.num_classes, test_data.input_shape) if test_data else None
        self.param_names = [n for n, _ in model.named_parameters()] if model is not None else []

    # ---- announcements and replies ------------------------------------------------
    def announced(self) -> dict:
        """The training procedure the server tells the clients (and so knows)."""
        return {"threat": self.threat, "batch-size": int(self.cfg["attack-batch-size"]), "lr": float(self.cfg["lr"]),
                "local-steps": int(self.cfg["attack-local-steps"])}

    def train_record(self, server_round: int, arrays: ArrayRecord, config: ConfigRecord) -> RecordDict:
        """Attacked rounds announce the attacked procedure (``attack-threat``, ``attack-batch-size``);
        the others are ordinary FedAvg rounds (``local-epochs``, ``batch-size``, ``lr``, ``momentum``),
        so that a run over many rounds trains the model it attacks later. With ``attack=none`` every
        round follows the announced procedure (what a defense costs the FL task under it)."""
        a = self.announced()
        attacked = bool(self.attacks) and server_round in attack_rounds(self.cfg)
        self.plain = bool(self.attacks) and not attacked  # attack=none keeps the announced protocol every round
        config["attack-threat"] = a["threat"]
        config["attack-batch-size"] = a["batch-size"]
        config["attack-local-steps"] = a["local-steps"]
        config["lr"] = a["lr"]
        config[PLAIN_ROUND] = self.plain
        config[GROUND_TRUTH] = self.truth_asked = attacked
        self.sent = arrays
        return super().train_record(server_round, arrays, config)

    def expected_arrays(self, arrays: ArrayRecord) -> dict[str, dict[str, tuple]]:
        if self.threat == "fedsgd" and not self.plain:
            sent = sent_specs(arrays)
            return {"gradient": {k: sent[k] for k in self.param_names}}
        return super().expected_arrays(arrays)

    def aggregate(self, server_round: int, replies: list[Message]):
        if server_round in attack_rounds(self.cfg) and self.attacks and int(self.cfg["attack-num-images"]) > 0:
            self.run_attacks(server_round, replies)
        arrays, metrics = super().aggregate(server_round, replies)
        if self.threat == "fedsgd" and not self.plain and arrays is not None:  # the server applies the mean gradient
            lr = float(self.cfg["lr"])
            sent = self.sent.to_torch_state_dict()
            grad = arrays.to_torch_state_dict()
            arrays = ArrayRecord({k: (v - lr * grad[k]) if k in grad else v for k, v in sent.items()})
        return arrays, metrics

    def state_dict(self) -> dict:
        return {"attack-rows": self.attack_rows}

    def load_state_dict(self, state: dict) -> None:
        self.attack_rows = list(state.get("attack-rows", []))

    # ---- the attack -----------------------------------------------------------------
    def load_prior(self) -> GanPrior:
        if self.prior is None:
            from attacks.train_gan import ensure_prior
            from common.outputs import out_root

            path, device = self.cfg["gan-checkpoint"], resolve_device(self.cfg["attack-device"])
            if path:
                file = Path(path).expanduser()
                if not file.is_file():
                    raise FileNotFoundError(f"gan-checkpoint {path} not found: pass an absolute path (the "
                                            "ServerApp runs from an installed copy of the app)")
                self.prior = GanPrior.load(file, name=file.name, device=device)
            else:
                t0 = time.perf_counter()
                ckpt = ensure_prior(self.cfg["gan-dataset"], out_root(self.cfg), int(self.cfg["gan-train-steps"]),
                                    seed=0, data_root=self.cfg["data-root"], log_every=0, device=device)
                log(INFO, "GAN prior %s ready (%.0fs)", ckpt, time.perf_counter() - t0)
                self.prior = GanPrior.load(ckpt, name=self.cfg["gan-dataset"], device=device)
        return self.prior

    def run_dir(self) -> Path:
        from common.outputs import out_root

        return out_root(self.cfg) / (self.cfg["run-name"] or "gifd")

    def defense_param(self) -> float:
        kind = self.cfg["defense"]
        return {"none": 0.0, "noise": float(self.cfg["defense-noise-std"]), "clip": float(self.cfg["defense-clip-norm"]),
                "prune": float(self.cfg["defense-prune-percentile"])}[kind]

    def run_attacks(self, server_round: int, replies: list[Message]) -> None:
        """Attack the first updates (partition order) of the attack round; write the outputs."""
        size = int(self.cfg["attack-batch-size"])
        chosen = replies[: math.ceil(int(self.cfg["attack-num-images"]) / size)]
        items = [(self.partition_of(m, -1), m.content, self.truth.get(m.metadata.reply_to_message_id))
                 for m in chosen]
        for part, _, truth in items:
            if truth is None:
                log(WARNING, "[attack] partition %s sent no ground truth (not a simulation node): attacks.csv "
                    "rows say '%s' instead of scores", part, NO_TRUTH)
        prior = self.load_prior() if any(a in GAN_ATTACKS for a in self.attacks) else None
        grid = self.attack_updates(server_round, items, self.attacks, prior)
        self.write_outputs(*grid, server_round=server_round)

    def attack_updates(self, server_round: int, items: list[tuple[int, RecordDict, dict | None]],
                       attacks: list[str], prior: GanPrior | None):
        """Run ``attacks`` on (partition, reply content, ground truth) items.

        The content must already be stripped of the ground truth (``strip_ground_truth``);
        the attack sees only ``attacker_view(content, ...)``, the evaluator the truth.
        Appends rows to ``self.attack_rows``; returns (truth pixels, reconstructions, psnrs) for the grid.
        """
        cfg, data = self.cfg, self.test_data
        size = int(cfg["attack-batch-size"])
        settings = settings_of(cfg)
        prior_name = prior.name if prior is not None else ""
        device = resolve_device(cfg["attack-device"])
        prior = prior.to(device) if prior is not None else None
        threads = torch.get_num_threads()
        torch.set_num_threads(1)
        truth_px, recs, psnrs = [], {a: [] for a in attacks}, {a: [] for a in attacks}
        try:
            for u, (part, content, truth) in enumerate(items):
                inp = attacker_view(content, self.sent, cfg["model"], data.num_classes, data.input_shape,
                                    data.mean, data.std, self.announced())  # on the CPU: the evaluator's pixels
                on_device = inp.to(device)  # the attacker's copy (``inp`` itself on the CPU)
                seed = int(np.random.SeedSequence([int(cfg["seed"]), server_round, part, 7]).generate_state(1)[0] % 2**31)
                labels = infer_labels(on_device, seed)
                norm = float(torch.sqrt(sum(t.pow(2).sum() for t in inp.target.values())))
                if truth is not None:
                    truth_px += list(inp.to_pixels(truth["images"].float()))
                for name in attacks:
                    torch.manual_seed(seed)
                    with phase(f"round {server_round}: gifd {name} attack on partition {part}"):
                        result = run_attack(name, on_device, labels, prior, settings, seed)
                    rows = evaluate_reconstructions(result, truth, inp)
                    pixels = inp.to_pixels(result.images)
                    recs[name] += [pixels[row.pop("_match")] for row in rows]
                    psnrs[name] += [row.get("psnr", float("nan")) for row in rows]
                    for row in rows:
                        row.update({"round": server_round, "partition": part, "update": u, "attack": name,
                                    "threat": self.threat, "batch-size": size, "defense": cfg["defense"],
                                    "defense-param": self.defense_param(),
                                    "prior": prior_name if name in GAN_ATTACKS else "",
                                    "attack-seconds": result.seconds, "grad-loss": result.grad_loss,
                                    "steps": result.steps, "budget-used": budget_used(result),
                                    "l1-active": result.info.get("l1-active", np.nan),
                                    "update-norm": norm})
                        self.attack_rows.append(row)
                    log(INFO, "[attack] partition %s %s: psnr %s labels %s (%.1fs)", part, name,
                        " ".join(f"{r.get('psnr', float('nan')):.1f}" for r in rows), labels.tolist(), result.seconds)
        finally:
            torch.set_num_threads(threads)
        return truth_px, recs, psnrs

    def write_outputs(self, truth_px, recs, psnrs, server_round: int | None = None) -> None:
        import pandas as pd

        from attacks.metrics import lpips_available, lpips_note

        out = self.run_dir()
        out.mkdir(parents=True, exist_ok=True)
        frame = pd.DataFrame(self.attack_rows)
        for col in CSV_COLUMNS:
            if col not in frame:
                frame[col] = np.nan
        frame = frame[CSV_COLUMNS + [c for c in frame.columns if c not in CSV_COLUMNS]]
        frame.to_csv(out / "attacks.csv", index=False)
        if not lpips_available():
            (out / "attacks-lpips-note.txt").write_text(lpips_note() + "\n")
            log(INFO, "%s", lpips_note())
        if truth_px:
            save_grid(out / ("attacks.png" if server_round in (None, min(attack_rounds(self.cfg)))
                             else f"attacks-round{server_round}.png"), truth_px, recs, psnrs)
        if server_round is not None:  # this round's means in the round's metrics row
            frame = frame[frame["round"] == server_round]
        means = frame.groupby("attack")[["psnr", "ssim"]].mean()
        for name, row in means.iterrows():
            self.row[f"{name}-psnr"] = float(row["psnr"])
            self.row[f"{name}-ssim"] = float(row["ssim"])
        if "label-accuracy" in frame:
            self.row["label-accuracy"] = float(frame["label-accuracy"].mean())
        log(INFO, "[attack] mean psnr: %s; attacks.csv in %s",
            ", ".join(f"{k}={v:.2f}" for k, v in means["psnr"].items()), out)
