"""``sources build``'s recipe and its folder rules: the defaults in one place, checks before writing, the catalogue
folder appearing only when complete, and --resume (pretrain_run itself is faked: tests/unit/cli covers a real build)."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from medtransfer.config import PretrainConfig, load_config, to_dict
from medtransfer.errors import ConfigError
from medtransfer.models.catalogue import list_sources
from medtransfer.pretrain import build as build_module
from medtransfer.pretrain import source_build
from medtransfer.pretrain.source_build import build_config, build_source, check_name, partial_builds, partial_folder

EXAMPLES = Path(__file__).resolve().parents[3] / "examples" / "sources"


def test_simclr_recipe_is_the_measured_cxr_ssl_config():
    mednist = "mednist.npz"
    example = to_dict(load_config(EXAMPLES / "cxr_ssl.yaml", [f"data.path={mednist}"], cls=PretrainConfig))
    ours = to_dict(
        build_config(
            mednist,
            "cxr-ssl",
            format="mednist",
            modality="x-ray",
            site="chest",
            description=example["pretrain"]["description"],
            overrides=["data.classes=[CXR]"],
        )
    )
    assert ours == example
    cfg = build_config("images/", "x")
    assert cfg.pretrain.method == "simclr" and cfg.pretrain.temperature == 0.2 and cfg.pretrain.projection_dim == 128
    assert (cfg.train.lr, cfg.train.weight_decay, cfg.train.batch_size, cfg.train.epochs) == (1e-3, 1e-4, 128, 8)
    assert cfg.train.n_train == 8000 and cfg.model.backbone == "resnet18" and cfg.data.image_size == 64


def test_options_win_over_set_and_supervised_takes_labels():
    cfg = build_config(
        "data/",
        "sup",
        supervised=True,
        labels=("finding",),
        backbone="tiny",
        image_size=32,
        overrides=["model.backbone=resnet18", "train.epochs=2"],
    )
    assert cfg.pretrain.method == "supervised" and cfg.data.labels == ["finding"]
    assert cfg.model.backbone == "tiny" and cfg.data.image_size == 32 and cfg.train.epochs == 2
    assert cfg.transfer.strategy == "scratch" and cfg.pretrain.name == "sup"


@pytest.mark.parametrize("name", ["", "../x", ".hidden", "a/b", "scratch", "imagenet"])
def test_bad_names_are_refused(name):
    with pytest.raises(ConfigError):
        check_name(name)


def fake_pretrain(calls: list, fail_after_checkpoint: bool = False):
    """A stand-in for pretrain_run: writes what a build leaves (checkpoint, then weights and card)."""

    def run(cfg, out, resume=False, progress=True):
        calls.append((Path(out), resume))
        out = Path(out)
        out.mkdir(parents=True, exist_ok=True)
        (out / "checkpoint.pt").write_bytes(b"ckpt")
        if fail_after_checkpoint:
            raise KeyboardInterrupt
        (out / "model.safetensors").write_bytes(b"weights")
        card = {"name": cfg.pretrain.name, "backbone": cfg.model.backbone, "method": cfg.pretrain.method}
        (out / "source.yaml").write_text(yaml.safe_dump(card))
        return card

    return run


def test_the_folder_appears_complete_and_an_interrupted_build_resumes(tmp_path, monkeypatch):
    root = tmp_path / "catalogue"
    target = root / "my-ssl"
    cfg = build_config("synthetic:chest,n=16,labels=none", "my-ssl", backbone="tiny")
    calls: list = []
    monkeypatch.setattr(build_module, "pretrain_run", fake_pretrain(calls, fail_after_checkpoint=True))
    with pytest.raises(KeyboardInterrupt):
        build_source(cfg, target, progress=False)
    assert not target.exists() and (partial_folder(target) / "checkpoint.pt").is_file()
    assert [e.name for e in list_sources(root)] == ["scratch", "imagenet"]  # the partial build is not listed
    assert partial_builds(root) == ["my-ssl"]

    with pytest.raises(ConfigError, match="--resume"):  # not silently restarted over the checkpoint
        build_source(cfg, target, progress=False)

    monkeypatch.setattr(build_module, "pretrain_run", fake_pretrain(calls))
    built = build_source(cfg, target, resume=True, progress=False)
    assert built.status == "resumed" and calls[-1] == (partial_folder(target), True)
    assert (target / "source.yaml").is_file() and not partial_folder(target).exists()

    with pytest.raises(ConfigError, match="already exists"):
        build_source(cfg, target, progress=False)
    again = build_source(cfg, target, resume=True, progress=False)  # finished: nothing to do
    assert again.status == "exists" and again.card["name"] == "my-ssl" and len(calls) == 2


def test_a_failed_start_leaves_no_catalogue_folder(tmp_path, monkeypatch):
    def fail(cfg, out, resume=False, progress=True):
        Path(out).mkdir(parents=True)
        Path(out).rmdir()  # what run_in_folder does when the run fails before its first checkpoint
        raise RuntimeError("boom")

    monkeypatch.setattr(build_module, "pretrain_run", fail)
    root = tmp_path / "new" / "catalogue"
    with pytest.raises(RuntimeError):
        build_source(build_config("synthetic:chest,n=16", "x", backbone="tiny"), root / "x", progress=False)
    assert list(tmp_path.iterdir()) == []


def test_supervised_without_labels_fails_before_anything_is_written(tmp_path, monkeypatch):
    monkeypatch.setattr(build_module, "pretrain_run", lambda *a, **k: pytest.fail("must not start"))
    cfg = build_config("synthetic:chest,n=16,labels=none", "sup", supervised=True, backbone="tiny")
    with pytest.raises(ConfigError, match="--labels COL"):
        source_build.build_source(cfg, tmp_path / "cat" / "sup", progress=False)
    assert list(tmp_path.iterdir()) == []
