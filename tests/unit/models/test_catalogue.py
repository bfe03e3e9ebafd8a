"""The source catalogue: built-ins, good folders, and one clear line for a missing or corrupt card."""

from __future__ import annotations

import pytest
import yaml

from medtransfer.errors import UserError
from medtransfer.models.backbones import build_model
from medtransfer.models.catalogue import list_sources, lookup, sources_dir
from medtransfer.training.checkpoint import save_weights


def make_source(folder, **card):
    folder.mkdir(parents=True)
    save_weights(folder / "model.safetensors", build_model("tiny", num_outputs=2))
    base = {
        "name": folder.name,
        "backbone": "tiny",
        "in_chans": 1,
        "mean": [0.5],
        "std": [0.25],
        "input_size": [1, 32, 32],
        "modality": "x-ray",
        "site": "chest",
        "method": "simclr",
        "data": {"n_images": 64},
    }
    (folder / "source.yaml").write_text(yaml.safe_dump({**base, **card}))


@pytest.fixture
def catalogue(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HOME", str(tmp_path / "no-hf"))  # no ImageNet file anywhere
    monkeypatch.delenv("HF_HUB_CACHE", raising=False)
    monkeypatch.delenv("HUGGINGFACE_HUB_CACHE", raising=False)
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "no-torch"))
    root = tmp_path / "sources"
    make_source(root / "chest-ssl")
    make_source(root / "hand-sup", site="hand", method="supervised")
    (root / "no-card").mkdir()
    (root / "no-card" / "model.safetensors").write_bytes(b"")
    make_source(root / "corrupt")
    (root / "corrupt" / "source.yaml").write_text("name: [unclosed\n")
    make_source(root / "keyless")
    (root / "keyless" / "source.yaml").write_text(yaml.safe_dump({"name": "keyless", "backbone": "tiny"}))
    return root


def test_lists_builtins_good_folders_and_one_line_per_broken_folder(catalogue):
    entries = {e.name: e for e in list_sources(catalogue)}
    assert list(entries)[:2] == ["scratch", "imagenet"]
    assert not entries["imagenet"].available and "not available offline" in entries["imagenet"].note
    good = entries["chest-ssl"]
    assert good.error is None and (good.site, good.modality, good.method, good.backbone) == (
        "chest",
        "x-ray",
        "simclr",
        "tiny",
    )
    assert good.n_images == 64 and entries["hand-sup"].site == "hand"
    assert "no source.yaml" in entries["no-card"].error
    assert "not valid YAML" in entries["corrupt"].error
    assert "lacks keys" in entries["keyless"].error
    assert all("\n" not in (e.error or "") for e in entries.values())


def test_lookup_names_paths_and_errors(catalogue):
    assert lookup("scratch", catalogue) == "scratch"
    assert lookup("chest-ssl", catalogue) == str(catalogue / "chest-ssl")
    assert lookup(str(catalogue / "hand-sup"), catalogue) == str(catalogue / "hand-sup")
    with pytest.raises(UserError, match="did you mean 'chest-ssl'"):
        lookup("chest-sl", catalogue)
    with pytest.raises(UserError, match="broken"):
        lookup("corrupt", catalogue)


def test_sources_dir_precedence(tmp_path, monkeypatch):
    monkeypatch.setenv("MEDTRANSFER_SOURCES", str(tmp_path / "env"))
    assert sources_dir(tmp_path / "x") == tmp_path / "x"
    assert sources_dir() == tmp_path / "env"
    monkeypatch.delenv("MEDTRANSFER_SOURCES")
    assert sources_dir().parts[-3:] == (".cache", "medtransfer", "sources")
