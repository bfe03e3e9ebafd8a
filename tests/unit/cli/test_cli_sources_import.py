"""`medtransfer sources import` through the command line, then a one-epoch run on the imported ViT by name with
discriminative rates over its three groups; errors are one `error:` line, exit 2, and nothing written."""

from __future__ import annotations

import json

import pytest
import timm
import torch
import yaml
from timm.models import save_for_hf

VIT = "test_vit"  # timm's smallest ViT (6 blocks of width 64, 16-px patches), for its own tests


pytestmark = pytest.mark.usefixtures("_one_thread")  # tests/conftest.py


def test_import_a_vit_folder_then_train_on_it_by_name(tmp_path, cli, capsys, monkeypatch):
    catalogue = tmp_path / "sources"
    monkeypatch.setenv("MEDTRANSFER_SOURCES", str(catalogue))
    torch.manual_seed(0)
    save_for_hf(timm.create_model(VIT, num_classes=3), tmp_path / "vit", safe_serialization=True)

    assert cli(["sources", "import", str(tmp_path / "vit"), "--name", "my-vit", "--site", "chest"]) == 0
    out = capsys.readouterr().out
    assert f"source 'my-vit' (imported, {VIT}, 3 channels, input [3, 160, 160])" in out
    assert f"checked: all 78 backbone tensors load into {VIT}" in out
    assert f"--set model.source=my-vit --set model.backbone={VIT}" in out
    assert cli(["sources", "list"]) == 0
    assert "my-vit" in capsys.readouterr().out

    config = tmp_path / "train.yaml"
    config.write_text(
        yaml.safe_dump(
            {
                "data": {"path": "synthetic:chest,n=40,seed=1", "image_size": 32},
                "model": {"backbone": VIT, "source": "my-vit"},
                "transfer": {"strategy": "discriminative"},
                "train": {"epochs": 1, "batch_size": 16},
            }
        )
    )
    assert cli(["train", str(config), "--out", str(tmp_path / "run")]) == 0
    metrics = json.loads((tmp_path / "run" / "metrics.json").read_text())
    assert metrics["strategy"]["strategy"] == "discriminative" and metrics["normalization"]["mean"] == [0.5]

    # a run refused for its image size writes nothing: 40 px is not a whole number of 16-px patches
    capsys.readouterr()
    assert cli(["train", str(config), "--out", str(tmp_path / "run2"), "--set", "data.image_size=40"]) == 2
    err = capsys.readouterr().err.strip()
    assert "patch size 16: set data.image_size to 32 or 48" in err and len(err.splitlines()) == 1
    assert not (tmp_path / "run2").exists()


def test_import_errors_are_one_line_and_write_nothing(tmp_path, cli, capsys, monkeypatch):
    catalogue = tmp_path / "sources"
    monkeypatch.setenv("MEDTRANSFER_SOURCES", str(catalogue))
    torch.manual_seed(0)
    net = timm.create_model("resnet18")
    torch.save(net.state_dict(), tmp_path / "rn18.pth")
    torch.save(net, tmp_path / "pickled.pth")
    cases = [
        (["missing.pth", "--backbone", "resnet18"], "does not exist"),
        (["rn18.pth", "--backbone", "resnet81"], "unknown backbone 'resnet81'; did you mean ['resnet18'"),
        (["rn18.pth", "--backbone", "test_resnet"], "tensors do not fit test_resnet"),
        (["pickled.pth", "--backbone", "resnet18"], "is not a plain state dict"),
        (["rn18.pth"], "pass --backbone TIMM_NAME"),
    ]
    for args, message in cases:
        assert cli(["sources", "import", str(tmp_path / args[0]), *args[1:], "--name", "rn"]) == 2, message
        err = capsys.readouterr().err.strip()
        assert err.startswith("error: ") and message in err and len(err.splitlines()) == 1, err
        assert not catalogue.exists()
    assert cli(["sources", "import", str(tmp_path / "rn18.pth"), "--backbone", "resnet18", "--name", "rn"]) == 0
    assert cli(["sources", "import", str(tmp_path / "rn18.pth"), "--backbone", "resnet18", "--name", "rn"]) == 2
    assert "already exists" in capsys.readouterr().err
