"""pretrain (supervised and SimCLR) → source.yaml card → model.source=DIR through the one weights loader."""

from __future__ import annotations

import json

import pytest
import torch
import yaml
from safetensors.torch import load_file

from medtransfer.config import ModelConfig, PretrainConfig, from_dict
from medtransfer.errors import ConfigError, TrainingFailed
from medtransfer.models.weights import create_model
from medtransfer.pretrain import ssl
from medtransfer.pretrain.build import pretrain_run


def pretrain_config(cache, method: str, path: str, **extra) -> PretrainConfig:
    return from_dict(
        PretrainConfig,
        {
            "seed": 1,
            "data": {"path": path, "image_size": 32, "cache_dir": str(cache)},
            "model": {"backbone": "tiny"},
            "train": {"epochs": 2, "batch_size": 16, "lr": 0.01},
            "pretrain": {"method": method, "modality": "x-ray", **extra},
        },
    )


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    root = tmp_path_factory.mktemp("pretrain")
    sup_cfg = pretrain_config(root / "cache", "supervised", "synthetic:both,n=64", site="chest+hand", name="both-sup")
    ssl_cfg = pretrain_config(
        root / "cache",
        "simclr",
        "synthetic:chest,n=64,labels=none",
        site="chest",
        probe_data="synthetic:chest,n=64,visibility=0.9",
    )
    return {
        "sup": (sup_cfg, root / "sup", pretrain_run(sup_cfg, root / "sup", progress=False)),
        "ssl": (ssl_cfg, root / "ssl", pretrain_run(ssl_cfg, root / "ssl", progress=False)),
    }


def backbone_tensors(path) -> dict[str, torch.Tensor]:
    return {k.removeprefix("backbone."): v for k, v in load_file(str(path)).items() if k.startswith("backbone.")}


@pytest.mark.parametrize("which", ["sup", "ssl"])
def test_card_then_model_source_dir_loads_the_saved_backbone(built, which):
    _, out, card = built[which]
    on_disk = yaml.safe_load((out / "source.yaml").read_text())
    assert on_disk == json.loads(json.dumps(card))
    for key in (
        "name",
        "backbone",
        "in_chans",
        "input_size",
        "mean",
        "std",
        "modality",
        "site",
        "method",
        "data",
        "training",
        "date",
        "metrics",
    ):
        assert key in on_disk, key
    assert on_disk["backbone"] == "tiny" and on_disk["input_size"] == [1, 32, 32]
    assert on_disk["data"]["n_images"] == 64
    model, report = create_model(ModelConfig(backbone="tiny", source=str(out), in_chans=1), num_outputs=2)
    saved = backbone_tensors(out / "model.safetensors")
    ours = model.backbone.state_dict()
    assert set(saved) == set(ours)
    assert all(torch.equal(saved[k], ours[k]) for k in saved)
    assert model.normalization == {"mean": on_disk["mean"], "std": on_disk["std"]}
    assert report.loaded >= len(saved) - sum(k.endswith("num_batches_tracked") for k in saved)


def test_supervised_card_keeps_labels_and_its_own_metrics(built):
    _, out, card = built["sup"]
    assert card["method"] == "supervised" and card["name"] == "both-sup"
    assert card["label_names"] == ["chest", "hand"]
    assert 0.0 <= card["metrics"]["auc"] <= 1.0
    # the same labels keep the source head; other labels re-initialise it
    _, same = create_model(ModelConfig(backbone="tiny", source=str(out), in_chans=1), 2, ["chest", "hand"])
    _, other = create_model(ModelConfig(backbone="tiny", source=str(out), in_chans=1), 1, ["lesion"])
    assert not same.dropped_head and other.dropped_head
    assert json.loads((out / "status.json").read_text())["status"] == "done"


def test_simclr_saves_only_the_backbone_and_a_probe_auc(built):
    _, out, card = built["ssl"]
    keys = load_file(str(out / "model.safetensors")).keys()
    assert keys and all(k.startswith("backbone.") for k in keys)
    assert card["method"] == "simclr" and card["label_names"] is None
    probe = card["metrics"]["probe"]
    assert 0.0 <= probe["auc"] <= 1.0 and probe["n_train"] > 0 and probe["n_test"] > 0
    assert card["training"]["temperature"] == 0.1
    assert json.loads((out / "status.json").read_text())["status"] == "done"


def test_simclr_resume_equals_uninterrupted_run(built, tmp_path, monkeypatch):
    cfg, full, _ = built["ssl"]
    cfg = from_dict(PretrainConfig, {**_plain(cfg), "pretrain": {"method": "simclr"}})  # no probe: same weights
    real, calls = ssl.nt_xent, {"n": 0}

    def crashing(*args, **kwargs):  # a killed process: stop in the first step of epoch 2 (4 steps per epoch)
        calls["n"] += 1
        if calls["n"] == 5:
            raise KeyboardInterrupt
        return real(*args, **kwargs)

    monkeypatch.setattr(ssl, "nt_xent", crashing)
    with pytest.raises(KeyboardInterrupt):
        pretrain_run(cfg, tmp_path / "part", progress=False)
    monkeypatch.setattr(ssl, "nt_xent", real)
    with pytest.raises(ConfigError, match="--resume"):
        pretrain_run(cfg, tmp_path / "part", progress=False)
    pretrain_run(cfg, tmp_path / "part", resume=True, progress=False)
    a, b = load_file(str(tmp_path / "part" / "model.safetensors")), load_file(str(full / "model.safetensors"))
    assert set(a) == set(b) and all(torch.equal(a[k], b[k]) for k in b)


def test_simclr_nan_loss_marks_the_run_failed(built, tmp_path, monkeypatch):
    cfg, _, _ = built["ssl"]
    monkeypatch.setattr(ssl, "nt_xent", lambda z1, z2, temperature: (z1 * float("nan")).sum())
    with pytest.raises(TrainingFailed, match="nan"):
        pretrain_run(cfg, tmp_path / "nan", progress=False)
    assert json.loads((tmp_path / "nan" / "status.json").read_text())["status"] == "failed"


def test_pretrain_config_rejects_unknown_keys_and_methods(built, tmp_path):
    with pytest.raises(ConfigError, match="did you mean 'temperature'"):
        from_dict(PretrainConfig, {"pretrain": {"temperatur": 0.2}})
    cfg, _, _ = built["ssl"]
    bad = from_dict(PretrainConfig, {**_plain(cfg), "pretrain": {"method": "byol"}})
    with pytest.raises(ConfigError, match="supervised"):
        pretrain_run(bad, tmp_path / "x", progress=False)
    unlabelled = from_dict(PretrainConfig, {**_plain(cfg), "pretrain": {"method": "supervised"}})
    with pytest.raises(ConfigError, match="simclr"):
        pretrain_run(unlabelled, tmp_path / "y", progress=False)


def _plain(cfg) -> dict:
    from medtransfer.config import to_dict

    return to_dict(cfg)
