"""Keys of local fine-tuning, shared by every gradient method.

The work itself is in ``clients/base.py`` (``finetune``): after the last round each client
fine-tunes the global model on its train split for the number of epochs (up to
``finetune-epochs``) that scores best on its validation split (``local-val-fraction``);
``personalized-accuracy`` is then the fine-tuned model's accuracy on the local test split
(FedAvg + FT, FedProx + FT).
"""

from __future__ import annotations

from pydantic import Field

from common.keys import ConfigError, Int, Keys


class FinetuneKeys(Keys):
    finetune_epochs: Int = Field(0, ge=0, description="after the last round each client fine-tunes the global model "
                                 "on its train split for up to this many epochs, the number chosen on its validation "
                                 "split; `personalized-accuracy` is then the fine-tuned model's (0 = off)")
    finetune_lr: float = Field(0.0, ge=0, description="SGD learning rate of the fine-tuning (0 = `lr`)")

    @classmethod
    def check(cls, cfg: dict) -> None:
        if int(cfg["finetune-epochs"]) > 0 and float(cfg["local-val-fraction"]) <= 0:
            raise ConfigError("finetune-epochs > 0 chooses the epochs on each client's validation split: pass "
                              "local-val-fraction > 0 (e.g. 0.1)")
        if int(cfg["finetune-epochs"]) > 0 and cfg["method"] in ("fedhip", "ditto"):
            raise ConfigError(f"finetune-epochs fine-tunes a global model; {cfg['method']} personalizes its own way: "
                              "pass finetune-epochs=0")
