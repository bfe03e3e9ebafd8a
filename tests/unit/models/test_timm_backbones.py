"""Any timm architecture as ``model.backbone``: one small model per family builds, runs at the configured image size,
splits into its family's three layer groups, and a discriminative-rate strategy builds its optimizer over them."""

from __future__ import annotations

import pytest
import torch

from medtransfer.config import ModelConfig, TrainConfig, TransferConfig
from medtransfer.errors import ConfigError, UnknownNameError
from medtransfer.models.backbones import (
    BACKBONES,
    Classifier,
    UnknownBackboneError,
    backbone_info,
    build_model,
    check_backbone,
    family_cuts,
)
from medtransfer.models.weights import create_model, resolve_weights
from medtransfer.training.device import make_optimizer
from medtransfer.transfer.strategies import build_strategy

SIZE = 32
# family -> (smallest timm variant, group names for a 1-channel model at 32 px). Only densenet121 is registered: the
# others are plain timm names, resolved on the fly.
FAMILIES = {
    "resnet": ("resnet10t", ["conv1..layer2", "layer3+layer4", "head"]),
    "densenet": (
        "densenet121",
        ["features.conv0..features.denseblock2", "features.transition2..features.norm5", "head"],
    ),
    "efficientnet": ("efficientnet_lite0", ["conv_stem..blocks.2", "blocks.3..bn2", "head"]),
    "convnext": ("convnext_atto", ["stem.0..stages.1", "stages.2+stages.3+head.norm", "head"]),
    "vit": ("vit_tiny_patch16_224", ["cls_token..blocks.5", "blocks.6..norm", "head"]),
}


pytestmark = pytest.mark.usefixtures("_one_thread")  # tests/conftest.py


@pytest.fixture(scope="module")
def models(_one_thread) -> dict[str, Classifier]:
    torch.manual_seed(0)
    return {family: build_model(name, 2, in_chans=1, img_size=SIZE).eval() for family, (name, _) in FAMILIES.items()}


@pytest.mark.parametrize("family", FAMILIES)
def test_a_timm_name_builds_and_runs_at_the_configured_size(models, family):
    model = models[family]
    assert model.backbone_name == FAMILIES[family][0]
    with torch.no_grad():
        assert model(torch.rand(2, 1, SIZE, SIZE)).shape == (2, 2)
    first_conv = model.backbone.get_submodule(model.pretrained_cfg["first_conv"])
    assert first_conv.in_channels == 1
    assert model.img_size == (SIZE if family == "vit" else None)  # only the ViT is built for one size


@pytest.mark.parametrize("family", FAMILIES)
def test_three_groups_partition_the_parameters_with_the_head_last(models, family):
    model = models[family]
    groups = model.layer_groups()
    assert model.layer_group_names() == FAMILIES[family][1]
    ids = [id(p) for g in groups for p in g]
    assert len(groups) == 3 and all(groups)
    assert len(ids) == len(set(ids)) and set(ids) == {id(p) for p in model.parameters()}
    assert [id(p) for p in groups[-1]] == [id(p) for p in model.head.parameters()]


def test_each_family_gets_its_rule(models):
    """ResNet and DenseNet keep their published cuts whether registered or not; a ViT's first group is the patch
    embedding, the tokens and the first half of its 12 blocks; the second the other half and the final norm."""
    assert family_cuts(models["resnet"].backbone) == ("layer3",) == backbone_info("resnet18").group_cuts
    assert family_cuts(models["densenet"].backbone) == ("features.transition2",)
    vit = [[n for n, _ in g] for g in models["vit"]._backbone_groups()]
    assert vit[0][:3] == ["cls_token", "pos_embed", "patch_embed.proj.weight"] and vit[0][-1].startswith("blocks.5.")
    assert vit[1][0].startswith("blocks.6.") and vit[1][-2:] == ["norm.weight", "norm.bias"]
    convnext = [[n for n, _ in g] for g in models["convnext"]._backbone_groups()]
    assert convnext[1][0].startswith("stages.2.")  # 5 coarse stages (stem + 4): the first 3 | the rest


@pytest.mark.parametrize("family", ["vit", "convnext"])
def test_discriminative_rates_build_their_optimizer(models, family):
    model = models[family]
    strategy = build_strategy(TransferConfig(strategy="discriminative", lr_mult=0.5), TrainConfig(lr=1e-2))
    strategy.on_train_start(model)
    optimizer = make_optimizer(strategy.param_groups(model), TrainConfig(lr=1e-2), torch.device("cpu"))
    assert [g["lr"] for g in optimizer.param_groups] == pytest.approx([2.5e-3, 5e-3, 1e-2])
    assert [len(g["params"]) for g in optimizer.param_groups] == [len(g) for g in model.layer_groups()]


def test_registered_names_keep_their_behaviour():
    assert backbone_info("resnet18") is BACKBONES.get("resnet18")
    model = build_model("efficientnet_b0", 2, img_size=SIZE)  # a CNN ignores the image size
    assert model.img_size is None and model.layer_group_names()[1].startswith("blocks.3")


def test_unknown_name_is_a_config_error_with_close_matches_from_registry_and_timm():
    with pytest.raises(UnknownBackboneError, match=r"did you mean \['convnext_atto'") as info:
        backbone_info("convnext_ato")
    assert isinstance(info.value, ConfigError) and isinstance(info.value, UnknownNameError)
    assert "timm.list_models()" in str(info.value)
    with pytest.raises(UnknownBackboneError, match=r"did you mean \['tiny'\]"):
        check_backbone("tinyy")
    with pytest.raises(ConfigError, match=r"model.backbone=resnet50 and model.source=imagenet:a1_in1k"):
        backbone_info("resnet50.a1_in1k")
    with pytest.raises(UnknownBackboneError):  # before anything is built or read: the weights resolver checks first
        resolve_weights("scratch", "vit_tiny_patch16")


def test_a_patch_model_needs_an_image_size_it_can_cut_into_whole_patches():
    with pytest.raises(ConfigError, match=r"data.image_size=40 .* patch size 16: set data.image_size to 32 or 48"):
        check_backbone("vit_tiny_patch16_224", 40)  # on the meta device: nothing allocated
    assert check_backbone("vit_tiny_patch16_224", 48).timm_name == "vit_tiny_patch16_224"


def test_create_model_builds_a_vit_for_the_data_image_size():
    model, report = create_model(ModelConfig(backbone="vit_tiny_patch16_224"), 3, image_size=48)
    assert model.backbone.patch_embed.grid_size == (3, 3) and model.img_size == 48
    assert model(torch.rand(1, 1, 48, 48)).shape == (1, 3)
    assert report.summary() == "random initialisation: nothing loaded"
