"""The one weights loader: timm, torchvision and our own files, source-model folders, and ImageNet weights
from the local caches only (nothing is downloaded)."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import pytest
import timm
import torch
import torchvision
import yaml
from safetensors.torch import save_file

from medtransfer.config import ModelConfig
from medtransfer.errors import UserError
from medtransfer.models.backbones import build_model
from medtransfer.models.weights import (
    create_model,
    find_imagenet_file,
    load_weights,
    read_state_dict,
    resolve_weights,
)

IMAGENET_GRAY = {"mean": [0.449], "std": [0.226]}  # ImageNet RGB statistics averaged to one channel


class NotATensor:
    """A pickled Python object: torch.load(weights_only=True) must refuse it."""


pytestmark = pytest.mark.usefixtures("_one_thread")  # tests/conftest.py


@pytest.fixture(autouse=True)
def _offline(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")


@pytest.fixture(scope="module")
def timm_resnet18() -> dict[str, torch.Tensor]:
    """A timm-format ImageNet-shaped state dict (3 input channels, 1000 classes), non-trivial BN stats."""
    torch.manual_seed(1)
    state = timm.create_model("resnet18", in_chans=3, num_classes=1000).state_dict()
    state["bn1.running_mean"] = torch.randn(64)
    return state


def _save_pth(state: dict, path: Path) -> Path:
    torch.save(state, path)
    return path


def _resnet18(num_outputs: int = 2) -> torch.nn.Module:
    return build_model("resnet18", num_outputs=num_outputs, in_chans=1)


def _check_loaded_resnet(model, state: dict, report) -> None:
    """conv1 = sum over RGB, body tensors equal, 1000-class head dropped and re-initialised."""
    torch.testing.assert_close(model.backbone.conv1.weight, state["conv1.weight"].sum(1, keepdim=True))
    for key in ("bn1.running_mean", "layer2.0.downsample.0.weight", "layer4.1.bn2.weight"):
        torch.testing.assert_close(model.backbone.state_dict()[key], state[key])
    assert report.adapted_input_conv.startswith("conv1: 3→1")
    assert report.dropped_head and "1000" in report.head_reason
    assert report.loaded == len(model.backbone.state_dict())
    assert model.head[1].weight.shape == (2, 512)
    assert model.normalization == IMAGENET_GRAY


# --------------------------------------------------------------------------- resolving
def test_scratch_keeps_random_weights_and_scratch_normalization():
    model, report = create_model(ModelConfig(backbone="tiny", source="scratch", in_chans=1), num_outputs=2)
    assert model.normalization == {"mean": [0.5], "std": [0.25]}
    assert report.loaded == 0 and "nothing loaded" in report.summary()


@pytest.mark.parametrize(
    ("source", "pattern"),
    [
        ("imagnet", r"did you mean 'imagenet'.*'scratch'"),
        ("weights/missing.pt", r"not found"),
        ("imagenet:no_such_tag", r"tv_in1k"),
    ],
)
def test_bad_sources_say_what_is_accepted(source, pattern):
    with pytest.raises(UserError, match=pattern):
        resolve_weights(source, "resnet18")


def test_tiny_has_no_imagenet_weights():
    with pytest.raises(UserError, match="no ImageNet weights"):
        resolve_weights("imagenet", "tiny")


def test_imagenet_spec_comes_from_timm_pretrained_cfg():
    spec = resolve_weights("imagenet", "resnet18")
    assert (spec.kind, spec.hub_id, spec.in_chans) == ("imagenet", "timm/resnet18.a1_in1k", 3)
    assert spec.url.endswith("resnet18_a1_0-d63eafa0.pth")
    assert (spec.first_conv, spec.classifier) == ("conv1", "fc")
    assert spec.mean == (0.485, 0.456, 0.406)
    assert resolve_weights("imagenet:tv_in1k", "resnet18").url.endswith("resnet18-f37072fd.pth")


# --------------------------------------------------------------------------- files
def test_torchvision_resnet_pth_into_one_channel_model(tmp_path):
    torch.manual_seed(2)
    state = torchvision.models.resnet18(weights=None).state_dict()
    path = _save_pth(state, tmp_path / "resnet18_tv.pth")
    model = _resnet18()
    torch.nn.init.zeros_(model.head[1].weight)
    report = load_weights(model, resolve_weights(str(path), "resnet18"))
    _check_loaded_resnet(model, state, report)
    assert model.head[1].weight.abs().sum() > 0, "the dropped head was not re-initialised"


def test_timm_resnet_safetensors(tmp_path, timm_resnet18):
    path = tmp_path / "resnet18_timm.safetensors"
    save_file(timm_resnet18, str(path))
    model = _resnet18()
    report = load_weights(model, resolve_weights(str(path), "resnet18"))
    _check_loaded_resnet(model, timm_resnet18, report)
    assert report.unexpected == []


def test_torchvision_densenet_new_and_old_key_patterns(tmp_path):
    torch.manual_seed(3)
    state = torchvision.models.densenet121(weights=None).state_dict()
    # the key pattern of torchvision's original DenseNet downloads: 'denselayer1.norm.1.weight'
    old = {k.replace(".norm1.", ".norm.1.").replace(".conv2.", ".conv.2."): v for k, v in state.items()}
    assert "features.denseblock1.denselayer1.norm.1.weight" in old
    model = build_model("densenet121", num_outputs=2, in_chans=1)
    for name, sd in (("new", state), ("old", old)):
        report = load_weights(model, resolve_weights(str(_save_pth(sd, tmp_path / f"{name}.pth")), "densenet121"))
        loaded = model.backbone.state_dict()
        torch.testing.assert_close(loaded["features.conv0.weight"], state["features.conv0.weight"].sum(1, True))
        key = "features.denseblock3.denselayer5.norm1.weight"
        torch.testing.assert_close(loaded[key], state[key])
        assert report.dropped_head and report.unexpected == []


def test_missing_body_key_is_refused(tmp_path, timm_resnet18):
    state = dict(timm_resnet18)
    del state["layer3.1.conv2.weight"]
    path = _save_pth(state, tmp_path / "partial.pth")
    with pytest.raises(UserError, match=r"lacks 1 resnet18 tensors.*layer3\.1\.conv2\.weight"):
        load_weights(_resnet18(), resolve_weights(str(path), "resnet18"))


def test_shape_mismatch_is_refused(tmp_path, timm_resnet18):
    state = dict(timm_resnet18)
    state["layer2.0.conv1.weight"] = torch.zeros(128, 32, 3, 3)
    path = _save_pth(state, tmp_path / "wrong.pth")
    with pytest.raises(UserError, match=r"layer2\.0\.conv1\.weight \(128, 32, 3, 3\) vs \(128, 64, 3, 3\)"):
        load_weights(_resnet18(), resolve_weights(str(path), "resnet18"))


def test_containers_prefixes_unexpected_keys_and_bn_counters(tmp_path, timm_resnet18, caplog):
    state = {k: v for k, v in timm_resnet18.items() if not k.endswith("num_batches_tracked")}  # old files
    state["aux.weight"] = torch.zeros(3)
    wrapped = {"epoch": 7, "state_dict": {f"module.{k}": v for k, v in state.items()}}
    path = _save_pth(wrapped, tmp_path / "checkpoint.pth.tar.pth")
    assert "conv1.weight" in read_state_dict(path)
    model = _resnet18()
    with caplog.at_level(logging.WARNING, logger="medtransfer.models.weights"):
        report = load_weights(model, resolve_weights(str(path), "resnet18"))
    assert report.unexpected == ["aux.weight"] and "aux.weight" in caplog.text
    assert any(k.endswith("num_batches_tracked") for k in report.missing)
    torch.testing.assert_close(model.backbone.layer1[0].conv1.weight, state["layer1.0.conv1.weight"])


def test_pickled_objects_are_refused(tmp_path):
    path = _save_pth({"model": NotATensor(), "w": torch.zeros(1)}, tmp_path / "unsafe.pt")
    with pytest.raises(UserError, match="not a plain state dict"):
        read_state_dict(path)
    with pytest.raises(UserError, match="not a plain state dict"):
        load_weights(build_model("tiny", 2), resolve_weights(str(path), "tiny"))


# --------------------------------------------------------------------------- source models
def _source_folder(tmp_path: Path, labels: list[str]) -> tuple[Path, torch.nn.Module]:
    torch.manual_seed(4)
    source = build_model("tiny", num_outputs=len(labels), in_chans=1)
    with torch.no_grad():
        for p in source.parameters():
            p.add_(torch.randn_like(p))
    folder = tmp_path / "cxr_source"
    folder.mkdir()
    save_file({k: v.contiguous() for k, v in source.state_dict().items()}, str(folder / "model.safetensors"))
    card = {"name": "cxr_source", "backbone": "tiny", "in_chans": 1, "input_size": [1, 64, 64],
            "mean": [0.42], "std": [0.21], "modality": "xray", "site": "chest", "method": "supervised",
            "label_names": labels}  # fmt: skip
    (folder / "source.yaml").write_text(yaml.safe_dump(card))
    return folder, source


def test_source_folder_round_trip(tmp_path):
    labels = ["effusion", "nodule", "pneumonia"]
    folder, source = _source_folder(tmp_path, labels)
    spec = resolve_weights(str(folder), "tiny")
    assert (spec.kind, spec.label_names, spec.modality, spec.site) == (
        "source_dir",
        tuple(labels),
        "xray",
        "chest",
    )

    same = build_model("tiny", num_outputs=3)
    report = load_weights(same, spec, label_names=labels)
    for key, value in source.backbone.state_dict().items():
        torch.testing.assert_close(same.backbone.state_dict()[key], value)
    assert not report.dropped_head
    torch.testing.assert_close(same.head[1].weight, source.head[1].weight)
    assert same.normalization == {"mean": [0.42], "std": [0.21]}

    other = build_model("tiny", num_outputs=3)
    report = load_weights(other, spec, label_names=["a", "b", "c"])
    assert report.dropped_head and "label names" in report.head_reason
    assert not torch.equal(other.head[1].weight, source.head[1].weight)
    assert load_weights(build_model("tiny", num_outputs=2), spec).dropped_head  # shape does not fit

    rgb = build_model("tiny", num_outputs=3, in_chans=3)
    report = load_weights(rgb, spec)
    torch.testing.assert_close(rgb.backbone.stem[0].weight, source.backbone.stem[0].weight.repeat(1, 3, 1, 1) / 3)
    assert rgb.normalization == {"mean": [0.42] * 3, "std": [0.21] * 3}


def test_a_catalogue_name_resolves_to_its_folder(tmp_path, monkeypatch):
    catalogue = tmp_path / "catalogue"
    catalogue.mkdir()
    folder, _ = _source_folder(catalogue, ["pneumonia"])
    monkeypatch.setenv("MEDTRANSFER_SOURCES", str(catalogue))
    spec = resolve_weights("cxr_source", "tiny")  # as `medtransfer sources list` names it
    assert spec.kind == "source_dir" and spec.site == "chest"
    with pytest.raises(UserError, match=r"did you mean 'cxr_source'\?.*\(cxr_source\)"):
        resolve_weights("cxr_sourse", "tiny")


def test_source_folder_for_another_backbone_is_refused(tmp_path):
    folder, _ = _source_folder(tmp_path, ["a"])
    with pytest.raises(UserError, match="trained with backbone 'tiny', not 'resnet18'"):
        resolve_weights(str(folder), "resnet18")
    (folder / "source.yaml").write_text("name: x\n")
    with pytest.raises(UserError, match=r"lacks keys \['backbone'"):
        resolve_weights(str(folder), "tiny")


def test_trained_model_file_carries_its_card_as_metadata(tmp_path):
    model = build_model("tiny", num_outputs=2)
    meta = {"backbone": "tiny", "label_names": json.dumps(["a", "b"]),
            "normalization": json.dumps({"mean": [0.3], "std": [0.2]})}  # fmt: skip
    path = tmp_path / "model.safetensors"
    save_file(model.state_dict(), str(path), metadata=meta)
    spec = resolve_weights(str(path), "tiny")
    assert (spec.mean, spec.label_names) == ((0.3,), ("a", "b"))
    target = build_model("tiny", num_outputs=2)
    assert not load_weights(target, spec, label_names=["a", "b"]).dropped_head
    assert target.normalization == {"mean": [0.3], "std": [0.2]}
    with pytest.raises(UserError, match="backbone 'tiny', not 'resnet18'"):
        resolve_weights(str(path), "resnet18")


# --------------------------------------------------------------------------- ImageNet, offline
def test_imagenet_from_local_caches_only(tmp_path, monkeypatch, timm_resnet18):
    hf, torch_home = tmp_path / "hf", tmp_path / "torch"
    monkeypatch.setenv("HF_HUB_CACHE", str(hf))
    monkeypatch.setenv("TORCH_HOME", str(torch_home))
    spec = resolve_weights("imagenet", "resnet18")
    assert find_imagenet_file(spec) is None
    with pytest.raises(UserError) as info:
        load_weights(_resnet18(), spec)
    message = str(info.value)
    hub_dir = torch_home / "hub" / "checkpoints"
    for part in (
        "model.safetensors",
        "timm/resnet18.a1_in1k",
        str(hf),
        "resnet18_a1_0-d63eafa0.pth",
        str(hub_dir),
    ):
        assert part in message
    assert "\n" not in message

    # a file at the exact torch-hub path (what timm/torchvision downloads leave there) is found and loaded
    hub_dir.mkdir(parents=True)
    cached = _save_pth(timm_resnet18, hub_dir / "resnet18_a1_0-d63eafa0.pth")
    assert find_imagenet_file(spec) == cached
    model, report = create_model(ModelConfig(backbone="resnet18", source="imagenet", in_chans=1), num_outputs=2)
    _check_loaded_resnet(model, timm_resnet18, report)

    # the Hugging Face hub cache layout (refs/main -> snapshots/<commit>/model.safetensors) comes first
    snapshot = hf / "models--timm--resnet18.a1_in1k" / "snapshots" / "0123abc"
    snapshot.mkdir(parents=True)
    (hf / "models--timm--resnet18.a1_in1k" / "refs").mkdir()
    (hf / "models--timm--resnet18.a1_in1k" / "refs" / "main").write_text("0123abc")
    save_file(timm_resnet18, str(snapshot / "model.safetensors"))
    assert find_imagenet_file(spec) == snapshot / "model.safetensors"
