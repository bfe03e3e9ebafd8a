"""Every registered backbone builds for 1-channel input, gives logits, and splits into layer groups."""

from __future__ import annotations

import pytest
import torch

from medtransfer.errors import ConfigError, UnknownNameError, UserError
from medtransfer.models.backbones import BACKBONES, Classifier, TinyNet, build_model

pytestmark = pytest.mark.usefixtures("_one_thread")  # tests/conftest.py


@pytest.fixture(scope="module")
def models(_one_thread) -> dict[str, Classifier]:
    """One 3-output, 1-channel model per registered backbone, built once (densenet/convnext take a second)."""
    torch.manual_seed(0)
    return {name: build_model(name, num_outputs=3, in_chans=1).eval() for name in BACKBONES}


def test_registry_has_the_documented_backbones():
    expected = {"densenet121", "resnet50", "resnet18", "efficientnet_b0", "convnext_tiny", "tiny"}
    assert expected <= set(BACKBONES.names())


@pytest.mark.parametrize("name", BACKBONES.names())
def test_forward_features_and_attributes(models, name):
    model = models[name]
    x = torch.rand(2, 1, 64, 64)
    with torch.no_grad():
        logits, feats = model(x), model.features(x)
    assert logits.shape == (2, 3)
    assert feats.shape == (2, model.backbone.num_features)
    assert (model.backbone_name, model.in_chans, model.num_outputs) == (name, 1, 3)
    assert model.normalization == {"mean": [0.5], "std": [0.25]}  # scratch until weights are loaded
    assert {"first_conv", "classifier", "mean", "std"} <= set(model.pretrained_cfg)
    assert model.backbone.get_submodule(model.pretrained_cfg["first_conv"]).in_channels == 1


@pytest.mark.parametrize("name", BACKBONES.names())
def test_layer_groups_cover_every_parameter_once(models, name):
    model = models[name]
    groups = model.layer_groups()
    names = model.layer_group_names()
    assert len(groups) >= 3 and len(names) == len(groups)
    ids = [id(p) for group in groups for p in group]
    assert len(ids) == len(set(ids)), "a parameter is in two groups"
    assert set(ids) == {id(p) for p in model.parameters()}, "a parameter is in no group"
    assert [id(p) for p in groups[-1]] == [id(p) for p in model.head.parameters()]
    assert names[-1] == "head" and names.count("head") == 1
    assert all(groups), "an empty group"


def test_layer_groups_are_the_published_three():
    """fastai's and Romero et al.'s splits: ResNet conv1..layer2 | layer3-4 | head; DenseNet through denseblock2 |
    transition2..norm5 | head (``features[:7] | features[7:]`` of torchvision's DenseNet)."""
    resnet = build_model("resnet18", num_outputs=2)
    assert resnet.layer_group_names() == ["conv1..layer2", "layer3+layer4", "head"]
    names = [[n for n, _ in g] for g in resnet._backbone_groups()]
    assert names[0][0] == "conv1.weight" and names[0][-1].startswith("layer2.") and names[1][0].startswith("layer3.")
    dense = build_model("densenet121", num_outputs=2)
    names = [[n for n, _ in g] for g in dense._backbone_groups()]
    assert names[0][-1].startswith("features.denseblock2.") and names[1][0].startswith("features.transition2.")
    assert names[1][-1].startswith("features.norm5.")
    assert len(dense.layer_groups()) == 3


def test_other_backbones_get_half_of_their_stages_then_the_rest():
    for name, first_late in (("efficientnet_b0", "blocks.3."), ("convnext_tiny", "stages.2."), ("tiny", "stages.1.")):
        model = build_model(name, num_outputs=2)
        groups = [[n for n, _ in g] for g in model._backbone_groups()]
        assert len(groups) == 2 and groups[1][0].startswith(first_late), name


def test_model_groups_overrides_the_rule_and_bad_cuts_fail_at_build():
    model = build_model("resnet18", num_outputs=2, groups=["layer1", "layer2", "layer3", "layer4"])
    assert model.layer_group_names() == ["conv1+bn1", "layer1", "layer2", "layer3", "layer4", "head"]
    with pytest.raises(ConfigError, match="did you mean 'layer3'"):
        build_model("resnet18", num_outputs=2, groups=["layr3"])
    with pytest.raises(ConfigError, match="from input to output"):
        build_model("resnet18", num_outputs=2, groups=["layer3", "layer2"])


def test_frozen_parameters_still_belong_to_a_group():
    model = build_model("tiny", num_outputs=2)
    for p in model.backbone.parameters():
        p.requires_grad_(False)
    assert sum(len(g) for g in model.layer_groups()) == len(list(model.parameters()))


def test_tiny_follows_timm_conventions():
    net = TinyNet(num_classes=5, in_chans=1)
    assert 30_000 < sum(p.numel() for p in net.parameters()) < 80_000
    x = torch.rand(2, 1, 32, 32)
    assert net(x).shape == (2, 5)
    assert net.forward_head(net.forward_features(x), pre_logits=True).shape == (2, net.num_features)
    assert net.get_classifier() is net.fc
    net.reset_classifier(0)
    assert net(x).shape == (2, net.num_features)
    assert set(net.group_matcher(coarse=True)) == {"stem", "blocks"}


def test_unknown_backbone_suggests_close_names():
    with pytest.raises(UnknownNameError, match=r"did you mean \['resnet18'") as info:
        build_model("resnet81", num_outputs=2)
    assert isinstance(info.value, UserError)
    assert "available" in str(info.value)
