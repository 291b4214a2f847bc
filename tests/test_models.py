"""Model registry: every name builds and gives logits of the right shape."""

import pytest
import torch

from models import ModelError, build_model


@pytest.mark.parametrize(
    "name, shape",
    [("cnn", (1, 28, 28)), ("cnn", (3, 32, 32)), ("resnet18", (3, 32, 32)), ("wrn-16-2", (3, 32, 32)),
     ("timm:resnet18", (3, 32, 32))],
)
def test_models_give_logits(name, shape):
    model = build_model(name, 7, shape).eval()
    assert model(torch.randn(2, *shape)).shape == (2, 7)


def test_wideresnet_depth_and_width_are_parsed():
    small, wide = build_model("wrn-16-1", 10, (3, 32, 32)), build_model("wrn-16-4", 10, (3, 32, 32))
    n = lambda m: sum(p.numel() for p in m.parameters())  # noqa: E731
    assert n(wide) > 8 * n(small)
    with pytest.raises(ValueError, match="6n\\+4"):
        build_model("wrn-15-2", 10, (3, 32, 32))


@pytest.mark.parametrize("name", ["resnet1000", "timm:no-such-net"])
def test_unknown_models_fail_clearly(name):
    with pytest.raises(ModelError):
        build_model(name, 10, (3, 32, 32))
