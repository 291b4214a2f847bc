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


def test_pretrained_model_starts_from_the_shipped_weights_and_fine_tunes():
    from models.backbones import load_backbone
    from models.features import FeatureExtractor

    mean, std = (0.1307,), (0.3081,)
    model = build_model("pretrained:tf_efficientnet_lite0", 10, (1, 28, 28), norm=(mean, std))
    frozen = load_backbone("tf_efficientnet_lite0", pretrained=True)
    backbone = model.features[1]
    assert torch.equal(backbone.conv_stem.weight, frozen.conv_stem.weight)  # ImageNet weights, not random
    assert all(p.requires_grad for p in model.parameters())
    # The adapter maps dataset-normalized images exactly as FedHiP's frozen extractor does.
    x = (torch.rand(4, 1, 28, 28) - torch.tensor(mean)) / torch.tensor(std)
    torch.testing.assert_close(model.features[0](x), FeatureExtractor(size=32).preprocess(x, mean, std))
    # The dataset's normalization travels with the weights: a default-built model loading
    # the state dict maps inputs the same way.
    other = build_model("lsi-pretrained:tf_efficientnet_lite0@48", 10, (1, 28, 28))
    assert other.encoder[0][0].size == 48
    plain = build_model("pretrained:tf_efficientnet_lite0", 10, (1, 28, 28))
    assert not torch.equal(plain.features[0](x), model.features[0](x))
    plain.load_state_dict(model.state_dict())
    torch.testing.assert_close(plain.features[0](x), model.features[0](x))
    # One SGD step changes the backbone and lowers the loss on its batch.
    y = torch.arange(4)
    opt = torch.optim.SGD(model.parameters(), lr=0.05)
    before = backbone.conv_stem.weight.clone()
    losses = []
    for _ in range(3):
        loss = torch.nn.functional.cross_entropy(model(x), y)
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert not torch.equal(before, backbone.conv_stem.weight) and losses[-1] < losses[0]
