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
