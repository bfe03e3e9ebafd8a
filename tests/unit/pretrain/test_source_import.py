"""``sources import``: an encoder saved by timm (a Hugging Face folder or a bare state dict) checked through the one
loader, written into the catalogue whole, listed, and loaded by ``model.source: NAME``. Random weights only."""

from __future__ import annotations

import hashlib

import pytest
import timm
import torch
import yaml
from safetensors.torch import save_file
from timm.models import save_for_hf

from medtransfer.config import ModelConfig
from medtransfer.errors import UserError
from medtransfer.models.catalogue import list_sources
from medtransfer.models.weights import create_model
from medtransfer.pretrain.source_import import import_source

VIT, CONVNEXT, RESNET = "vit_tiny_patch16_224", "convnext_atto", "resnet18"


pytestmark = pytest.mark.usefixtures("_one_thread")  # tests/conftest.py


@pytest.fixture(scope="module")
def encoders(tmp_path_factory, _one_thread) -> dict:
    """arch -> (path, state dict): ViT and ConvNeXt folders as timm's save_for_hf writes them, a bare ResNet file."""
    root = tmp_path_factory.mktemp("encoders")
    torch.manual_seed(5)
    out = {}
    for arch in (VIT, CONVNEXT):
        net = timm.create_model(arch, num_classes=4)
        save_for_hf(net, root / arch, safe_serialization=True)
        out[arch] = (root / arch, net.state_dict())
    net = timm.create_model(RESNET, num_classes=10)
    save_file(net.state_dict(), str(root / "rn18.safetensors"))
    out[RESNET] = (root / "rn18.safetensors", net.state_dict())
    torch.save(net, root / "pickled.pth")  # a whole pickled module: only unpickling could read it
    out["pickled"] = (root / "pickled.pth", None)
    return out


@pytest.fixture
def catalogue(tmp_path, monkeypatch):
    folder = tmp_path / "sources"
    monkeypatch.setenv("MEDTRANSFER_SOURCES", str(folder))
    return folder


@pytest.mark.parametrize(("arch", "backbone"), [(VIT, None), (CONVNEXT, None), (RESNET, RESNET)])
def test_import_then_list_then_use_by_name(encoders, catalogue, arch, backbone):
    path, state = encoders[arch]
    done = import_source(path, "mine", backbone, modality="x-ray")
    card = yaml.safe_load((catalogue / "mine" / "source.yaml").read_text())
    assert card == done.card and sorted(p.name for p in catalogue.iterdir()) == ["mine"]  # no leftovers
    assert (card["backbone"], card["architecture"], card["method"], card["in_chans"]) == (arch, arch, "imported", 3)
    assert card["input_size"] == [3, 224, 224] and card["modality"] == "x-ray"
    weights_file = path / "model.safetensors" if path.is_dir() else path
    assert card["origin"]["sha256"] == hashlib.sha256(weights_file.read_bytes()).hexdigest()
    assert card["origin"]["layout"] == ("timm Hugging Face folder" if path.is_dir() else "weights file")
    stored = (catalogue / "mine" / "model.safetensors").read_bytes()
    assert card["sha256"] == hashlib.sha256(stored).hexdigest()
    expected_mean = [0.5] * 3 if arch == VIT else [0.485, 0.456, 0.406]  # the folder's, else timm's default
    assert card["mean"] == expected_mean and card["origin"]["classifier"] == "dropped (not stored)"

    entry = next(e for e in list_sources() if e.name == "mine")
    assert entry.error is None and entry.backbone == arch and entry.method == "imported"

    model, report = create_model(ModelConfig(backbone=arch, source="mine", in_chans=3), 2, None, image_size=32)
    adapted = {"pos_embed"} if arch == VIT else set()  # 224 px → 32 px: the grid is resampled, nothing else changes
    for key, value in model.backbone.state_dict().items():
        if key not in adapted:
            torch.testing.assert_close(value, state[key], rtol=0, atol=0, msg=key)
    assert report.loaded == len(model.backbone.state_dict()) and report.head_reason == "the file has no classifier"
    assert model.eval()(torch.rand(1, 3, 32, 32)).shape == (1, 2)


def test_errors_write_nothing(encoders, catalogue):
    vit, rn18, pickled = encoders[VIT][0], encoders[RESNET][0], encoders["pickled"][0]
    cases = [
        (vit.parent / "absent.safetensors", None, "does not exist"),
        (rn18, None, "does not name its architecture: pass --backbone"),
        (rn18, "resnt18", r"unknown backbone 'resnt18'; did you mean \['resnet18'"),
        (rn18, "resnet34", "lacks .* resnet34 tensors"),
        (vit, "resnet18", "names the architecture 'vit_tiny_patch16_224'"),
        (pickled, "resnet18", r"torch.load\(weights_only=True\) refuses"),
    ]
    for path, backbone, message in cases:
        with pytest.raises(UserError, match=message):
            import_source(path, "x", backbone)
        assert not catalogue.exists(), message


def test_an_existing_name_needs_force(encoders, catalogue):
    rn18 = encoders[RESNET][0]
    first = import_source(rn18, "rn", RESNET, description="first")
    with pytest.raises(UserError, match="already exists.*--force"):
        import_source(rn18, "rn", RESNET, description="second")
    assert yaml.safe_load((catalogue / "rn" / "source.yaml").read_text())["description"] == "first"
    import_source(rn18, "rn", RESNET, description="second", force=True)
    assert yaml.safe_load((catalogue / "rn" / "source.yaml").read_text())["description"] == "second"
    assert sorted(p.name for p in catalogue.iterdir()) == ["rn"] and first.folder == catalogue / "rn"
