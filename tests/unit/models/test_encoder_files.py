"""``model.source`` as an encoder saved by timm: a Hugging Face folder (``config.json`` + ``model.safetensors``, as
``save_for_hf`` writes it) or a bare state dict, through the one strict loader. Random weights, saved to tmp_path."""

from __future__ import annotations

import json

import pytest
import timm
import torch
from safetensors.torch import save_file
from timm.models import save_for_hf

from medtransfer.config import ModelConfig
from medtransfer.errors import UserError
from medtransfer.models.weights import create_model, resolve_weights

SIZE = 32


pytestmark = pytest.mark.usefixtures("_one_thread")  # tests/conftest.py


@pytest.fixture(scope="module")
def saved(tmp_path_factory, _one_thread) -> dict:
    """A ViT and a ConvNeXt in the HF folder layout (5-class heads), a ResNet as a bare safetensors state dict."""
    root = tmp_path_factory.mktemp("encoders")
    torch.manual_seed(3)
    nets, paths = {}, {}
    for arch in ("vit_tiny_patch16_224", "convnext_atto"):
        nets[arch], paths[arch] = timm.create_model(arch, num_classes=5), root / arch
        save_for_hf(nets[arch], paths[arch], safe_serialization=True)
    nets["resnet18"], paths["resnet18"] = timm.create_model("resnet18"), root / "resnet18.safetensors"
    save_file(nets["resnet18"].state_dict(), str(paths["resnet18"]))
    return {"paths": paths, "state": {a: n.state_dict() for a, n in nets.items()}}


def _assert_backbone_equals(model, saved_state, except_keys=()) -> None:
    got = model.backbone.state_dict()
    for key, value in got.items():
        if key not in except_keys:
            torch.testing.assert_close(value, saved_state[key], rtol=0, atol=0, msg=key)


@pytest.mark.parametrize("arch", ["vit_tiny_patch16_224", "convnext_atto", "resnet18"])
def test_saved_encoder_loads_exactly_at_its_own_channels(saved, arch):
    model, report = create_model(ModelConfig(backbone=arch, source=str(saved["paths"][arch]), in_chans=3), 2, None, 224)
    _assert_backbone_equals(model, saved["state"][arch])
    assert report.dropped_head and report.adapted_input_conv is None and report.resampled_pos_embed is None
    assert report.loaded == len(model.backbone.state_dict())


def test_vit_folder_into_a_gray_model_at_the_data_size(saved):
    """3→1 channels (RGB filters summed), 14x14 position grid → 2x2, the rest unchanged, normalisation from the
    folder's pretrained_cfg (timm's ViT: 0.5 / 0.5), and a forward at the configured image size."""
    arch = "vit_tiny_patch16_224"
    state = saved["state"][arch]
    model, report = create_model(ModelConfig(backbone=arch, source=str(saved["paths"][arch])), 2, None, SIZE)
    _assert_backbone_equals(model, state, except_keys={"patch_embed.proj.weight", "pos_embed"})
    torch.testing.assert_close(model.backbone.patch_embed.proj.weight, state["patch_embed.proj.weight"].sum(1, True))
    assert model.backbone.pos_embed.shape == (1, 1 + 2 * 2, 192)
    torch.testing.assert_close(model.backbone.pos_embed[:, 0], state["pos_embed"][:, 0])  # the class token's row
    assert "position embedding 14x14→2x2 patches (resampled)" in report.summary()
    assert model.normalization == {"mean": [0.5], "std": [0.5]}
    assert model(torch.rand(2, 1, SIZE, SIZE)).shape == (2, 2)


def test_convnext_folder_into_a_gray_model(saved):
    arch = "convnext_atto"
    model, report = create_model(ModelConfig(backbone=arch, source=str(saved["paths"][arch])), 2, None, SIZE)
    _assert_backbone_equals(model, saved["state"][arch], except_keys={"stem.0.weight"})
    assert report.adapted_input_conv.startswith("stem.0: 3→1") and model.normalization["mean"] == [0.449]
    assert model(torch.rand(2, 1, SIZE, SIZE)).shape == (2, 2)


def test_folder_errors_say_what_to_do(saved, tmp_path):
    vit = str(saved["paths"]["vit_tiny_patch16_224"])
    with pytest.raises(UserError, match="holds 'vit_tiny_patch16_224' weights .* set model.backbone=vit_tiny_patch16"):
        resolve_weights(vit, "resnet18")
    hf = tmp_path / "dinov2"  # a transformers folder (RAD-DINO's layout) is not a timm one
    hf.mkdir()
    (hf / "config.json").write_text(json.dumps({"architectures": ["Dinov2Model"], "model_type": "dinov2"}))
    with pytest.raises(UserError, match=r"transformers config \(\['Dinov2Model'\]\).*timm"):
        resolve_weights(str(hf), "vit_small_patch14_dinov2")
    (hf / "config.json").write_text(json.dumps({"architecture": "convnext_atto"}))
    with pytest.raises(UserError, match="no weights: put model.safetensors or pytorch_model.bin"):
        resolve_weights(str(hf), "convnext_atto")


def test_a_file_of_another_architecture_is_refused(saved):
    """The bare ResNet-18 file into a ResNet-34: the strict loader names the missing tensors (no partial load)."""
    with pytest.raises(UserError, match="lacks .* resnet34 tensors .* partial load refused"):
        create_model(ModelConfig(backbone="resnet34", source=str(saved["paths"]["resnet18"])), 2)
