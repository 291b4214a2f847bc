"""Keys of the validation split and of local fine-tuning, shared by every gradient method.

The work itself is in ``clients/base.py`` (``with_validation``, ``finetune``): a client
holds out ``val-fraction`` of its train split (the same rows FedHiP holds out to choose α:
``validation_split``), never trains on it, reports ``val-accuracy`` on it, and after the
last round fine-tunes the global model for the number of epochs (up to
``finetune-epochs``) that scores best on it; ``personalized-accuracy`` is then the
fine-tuned model's accuracy on the local test split (FedAvg + FT, FedProx + FT).
"""

from __future__ import annotations

from pydantic import Field

from common.keys import ConfigError, Int, Keys


class FinetuneKeys(Keys):
    val_fraction: float = Field(0.0, ge=0, lt=1, description="share of each client's train split held out as its "
                                "validation split (never trained on; gives `val-accuracy`); 0 = none. Gradient "
                                "methods only (FedHiP: `fedhip-val-fraction`)")
    finetune_epochs: Int = Field(0, ge=0, description="after the last round each client fine-tunes the global model "
                                 "on its train split for up to this many epochs, the number chosen on its validation "
                                 "split; `personalized-accuracy` is then the fine-tuned model's (0 = off)")
    finetune_lr: float = Field(0.0, ge=0, description="SGD learning rate of the fine-tuning (0 = `lr`)")

    @classmethod
    def check(cls, cfg: dict) -> None:
        if int(cfg["finetune-epochs"]) > 0 and float(cfg["val-fraction"]) <= 0:
            raise ConfigError("finetune-epochs > 0 chooses the epochs on a validation split: pass val-fraction > 0 "
                              "(e.g. 0.2)")
        if int(cfg["finetune-epochs"]) > 0 and cfg["method"] in ("fedhip", "ditto"):
            raise ConfigError(f"finetune-epochs fine-tunes a global model; {cfg['method']} personalizes its own way: "
                              "pass finetune-epochs=0")
