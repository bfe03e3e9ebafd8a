"""`medtransfer pretrain`, `sources list` and `sources rank` through the command line."""

from __future__ import annotations

import yaml

from medtransfer.cli import main


def run(argv: list[str]) -> int:
    try:
        main(argv)
    except SystemExit as e:
        return int(e.code or 0)
    return 0


def test_pretrain_then_list_then_rank(tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("COLUMNS", "250")  # rich tables: no wrapped cells
    sources = tmp_path / "sources"
    config = tmp_path / "pretrain.yaml"
    config.write_text(
        yaml.safe_dump(
            {
                "data": {"path": "synthetic:chest,n=32,labels=none", "image_size": 32},
                "model": {"backbone": "tiny"},
                "train": {"epochs": 1, "batch_size": 16},
                "pretrain": {"method": "simclr", "site": "chest", "modality": "x-ray"},
            }
        )
    )
    assert run(["pretrain", str(config), "--out", str(sources / "chest-ssl"), "--set", "train.lr=0.001"]) == 0
    assert "source 'chest-ssl' (simclr, tiny)" in capsys.readouterr().out
    (sources / "broken").mkdir()
    assert run(["sources", "list", "--sources-dir", str(sources)]) == 0
    out = capsys.readouterr().out
    assert "chest-ssl" in out and "simclr" in out and "x-ray" in out
    assert "unusable" in out and "no source.yaml card" in out and "not available offline" in out

    target = tmp_path / "target.yaml"
    target.write_text(
        yaml.safe_dump({"model": {"backbone": "tiny"}, "data": {"path": "synthetic:both,n=48", "image_size": 32}})
    )
    argv = ["sources", "rank", "--target", str(target), "--sources-dir", str(sources), "--no-probe"]
    assert run([*argv, "--sources", "scratch,chest-ssl"]) == 0
    out = capsys.readouterr().out
    assert "LogME" in out and "scratch" in out and "chest-ssl" in out

    assert run([*argv, "--sources", "scratch,chest-sll"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: unknown source 'chest-sll'") and "did you mean 'chest-ssl'" in err
    assert len(err.splitlines()) == 1


def test_pretrain_bad_config_key_is_one_line(tmp_path, capsys):
    config = tmp_path / "pretrain.yaml"
    config.write_text(yaml.safe_dump({"pretrain": {"metod": "simclr"}}))
    assert run(["pretrain", str(config), "--out", str(tmp_path / "x")]) == 2
    err = capsys.readouterr().err.strip()
    assert "unknown config key 'pretrain.metod'" in err and len(err.splitlines()) == 1


def write_pngs(folder, n: int = 24, size: int = 20) -> None:
    """``n`` small grey PNGs (half in a subfolder): a plain image folder, no CSV."""
    import numpy as np
    from PIL import Image

    rng = np.random.default_rng(0)
    for i in range(n):
        path = folder / ("more" if i % 2 else "") / f"img{i:02d}.png"
        path.parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray((rng.random((size, size)) * 255).astype("uint8")).save(path)


def tree(root) -> list[str]:
    return sorted(str(p.relative_to(root)) for p in root.rglob("*"))


TINY = ["--set", "model.backbone=tiny", "--set", "train.epochs=1", "--set", "data.image_size=16"]


def test_sources_build_from_a_plain_folder_then_list_then_train(tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("COLUMNS", "250")
    sources = tmp_path / "sources"
    monkeypatch.setenv("MEDTRANSFER_SOURCES", str(sources))  # what model.source=NAME looks in
    images = tmp_path / "xrays"
    write_pngs(images)
    argv = ["sources", "build", "--data", str(images), "--name", "my-ssl", "--sources-dir", str(sources)]
    assert run([*argv, *TINY, "--set", "train.batch_size=8", "--site", "chest", "--modality", "x-ray"]) == 0
    assert "source 'my-ssl' (simclr, tiny)" in capsys.readouterr().out
    card = yaml.safe_load((sources / "my-ssl" / "source.yaml").read_text())
    assert card["method"] == "simclr" and card["site"] == "chest" and card["data"]["n_images"] == 24
    assert card["training"]["temperature"] == 0.2 and card["training"]["projection_dim"] == 128
    assert [p.name for p in sources.iterdir()] == ["my-ssl"]  # the build's hidden folder is gone

    assert run(["sources", "list", "--sources-dir", str(sources)]) == 0
    out = capsys.readouterr().out
    line = next(s for s in out.splitlines() if "my-ssl" in s)
    assert "simclr" in line and "x-ray" in line and "ok" in line

    before = tree(tmp_path)
    assert run([*argv, *TINY]) == 2  # the name is taken: nothing written
    assert "already exists" in capsys.readouterr().err and tree(tmp_path) == before
    assert run([*argv, *TINY, "--resume"]) == 0  # --resume on a finished source: nothing to do
    assert "nothing to do" in capsys.readouterr().out and tree(tmp_path) == before

    config = tmp_path / "train.yaml"
    config.write_text(
        yaml.safe_dump(
            {
                "task": "binary",
                "data": {"path": "synthetic:chest,n=60", "image_size": 16},
                "model": {"backbone": "tiny", "source": "my-ssl"},
                "train": {"epochs": 1, "batch_size": 16},
            }
        )
    )
    assert run(["train", str(config), "--out", str(tmp_path / "run")]) == 0
    assert "validation AUC" in capsys.readouterr().out


def test_sources_build_refuses_bad_input_before_writing(tmp_path, capsys):
    sources = tmp_path / "sources"
    images = tmp_path / "xrays"
    write_pngs(images, n=4)
    before = tree(tmp_path)
    base = ["sources", "build", "--name", "x", "--sources-dir", str(sources), *TINY]
    cases = [
        (["--data", str(tmp_path / "nowhere")], "not found"),
        (["--data", str(images), "--supervised"], "--labels COL"),  # an unlabelled folder cannot train supervised
        (["--data", str(images), "--supervised", "--labels", "label"], "no labels"),
        (["--data", str(images), "--set", "model.backbone=resnet19"], "resnet19"),
        (["--data", str(images), "--name", "../up"], "one folder name"),
    ]
    for extra, message in cases:
        assert run([*base, *extra]) == 2, extra
        err = capsys.readouterr().err.strip()
        assert err.startswith("error:") and message in err and len(err.splitlines()) == 1, err
        assert tree(tmp_path) == before, extra


def test_sources_list_says_how_to_get_what_is_missing(tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("COLUMNS", "250")
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hf"))  # empty caches: imagenet is not available offline
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    assert run(["sources", "list", "--sources-dir", str(tmp_path / "none")]) == 0
    out = " ".join(capsys.readouterr().out.split())
    assert "timm.create_model('resnet18.a1_in1k', pretrained=True)" in out
    assert "hf download timm/resnet18.a1_in1k model.safetensors" in out
    assert "medtransfer sources build --data ARCHIVE --name NAME" in out
