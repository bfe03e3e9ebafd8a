"""A corpus of bad inputs, each run through the real command line.

Every case must end with exit code 2, exactly one ``error:`` line that names the problem, no traceback, and
the case's folder (its inputs and any ``--out``) byte for byte as it was before. Cases are grouped by the
classes of issue 15: config values, names, ``--out``/``--resume``, broken data files, hostile weight files,
damaged study ledgers, evaluation on the wrong images and library messages that must be translated.
"""

from __future__ import annotations

import os
import shutil
import stat
import zipfile
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
import yaml
from PIL import Image

from medtransfer.cli import main

SPEC = "synthetic:chest,n=80,visibility=0.9,size=32,seed=2"


# ----------------------------------------------------------------------------------------------------- helpers
def train_config(root: Path, name: str = "train.yaml", **changes) -> Path:
    cfg = {
        "task": "binary",
        "seed": 0,
        "data": {"path": SPEC, "image_size": 16},
        "model": {"backbone": "tiny"},
        "transfer": {"strategy": "finetune"},
        "train": {"epochs": 1, "batch_size": 16, "lr": 0.003},
    }
    for key, value in changes.items():
        if "." not in key:
            cfg[key] = value
            continue
        section, field = key.split(".")
        cfg.setdefault(section, {})[field] = value
    path = root / name
    path.write_text(yaml.safe_dump(cfg))
    return path


def study_config(root: Path, **study) -> Path:
    cfg = yaml.safe_load(train_config(root, "base.yaml").read_text())
    (root / "base.yaml").unlink()
    cfg["study"] = {
        "n": [12],
        "sources": ["scratch"],
        "strategies": ["finetune"],
        "seeds": [0],
        "baselines": [],
        "rank": False,
        **study,
    }
    path = root / "study.yaml"
    path.write_text(yaml.safe_dump(cfg))
    return path


def png(path: Path, value: int = 100, size: int = 16, mode: str = "L") -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    arr = np.full((size, size) if mode == "L" else (size, size, 3), value, np.uint8)
    arr[: size // 2] = 255 - value
    Image.fromarray(arr, mode).save(path)
    return path


def folder(root: Path, rows: list[str] | None = None, n: int = 12, header: str = "file,label") -> Path:
    """A folder + CSV dataset of ``n`` small PNGs with 0/1 labels (``rows`` replaces the CSV body)."""
    data = root / "data"
    for i in range(n):
        png(data / "images" / f"img{i:02d}.png", value=40 + 10 * (i % 2))
    body = rows if rows is not None else [f"images/img{i:02d}.png,{i % 2}" for i in range(n)]
    (data / "labels.csv").write_text("\n".join([header, *body]) + "\n")
    return data


def snapshot(root: Path) -> dict[str, object]:
    state: dict[str, object] = {}
    for p in sorted(root.rglob("*")):
        rel = str(p.relative_to(root))
        if p.is_symlink():
            state[rel] = ("link", os.readlink(p))
        elif p.is_dir():
            state[rel] = ("dir", stat.S_IMODE(p.stat().st_mode))
        else:
            state[rel] = p.read_bytes()
    return state


# -------------------------------------------------------------------------------- finished run and study, once
@pytest.fixture(scope="module")
def finished(tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("finished")
    run = root / "run"
    with pytest.raises(SystemExit) as info:
        main(["train", str(train_config(root)), "--out", str(run)])
    assert info.value.code in (0, None)
    study = root / "study"
    with pytest.raises(SystemExit) as info:
        main(["study", str(study_config(root)), "--out", str(study)])
    assert info.value.code in (0, None)
    return {"run": run, "study": study, "config": root / "train.yaml", "study_config": root / "study.yaml"}


def copy_of(finished: dict[str, Path], what: str, root: Path) -> Path:
    target = root / what
    shutil.copytree(finished[what], target)
    return target


# ------------------------------------------------------------------------------------------------------ cases
# Each case builds its inputs under `root` and returns (argv, a fragment the error line must contain).
Case = Callable[[Path, dict], tuple[list[str], str]]
CASES: dict[str, Case] = {}


def case(name: str):
    def register(fn: Case) -> Case:
        assert name not in CASES
        CASES[name] = fn
        return fn

    return register


def _train(root: Path, **changes) -> list[str]:
    return ["train", str(train_config(root, **changes)), "--out", str(root / "run")]


# --- config values (range-checked at load)
for _key, _value, _match in [
    ("train.epochs", 0, "train.epochs"),
    ("train.lr", -0.001, "train.lr"),
    ("train.lr", 0, "train.lr"),
    ("train.batch_size", 0, "train.batch_size"),
    ("data.image_size", 0, "data.image_size"),
    ("train.weight_decay", -1, "train.weight_decay"),
    ("model.dropout", 1.5, "model.dropout"),
    ("eval.tta", -2, "eval.tta"),
    ("data.channels", 2, "data.channels"),  # mixed colour modes are converted (tests/unit/cli/test_cli_colour.py)
]:
    case(f"config {_key}={_value}")(lambda root, fx, k=_key, v=_value, m=_match: (_train(root, **{k: v}), m))

case("config unknown key")(lambda root, fx: (_train(root, **{"train.epoch": 3}), "did you mean 'epochs'"))
case("config --set without =")(lambda root, fx: ([*_train(root), "--set", "train.epochs"], "train.epochs"))
case("config --set wrong type")(lambda root, fx: ([*_train(root), "--set", "train.epochs=many"], "train.epochs"))
case("config file missing")(
    lambda root, fx: (["train", str(root / "nope.yaml"), "--out", str(root / "r")], "nope.yaml")
)


@case("config YAML syntax error has line and column")
def _(root, fx):
    path = root / "bad.yaml"
    path.write_text("task: binary\ntrain:\n  epochs: [1, 2\n  lr: 0.1\n")
    return ["train", str(path), "--out", str(root / "r")], "line 3"


@case("CSV binary label that is not 0/1 names the row")
def _(root, fx):
    rows = [f"images/img{i:02d}.png,{i % 2}" for i in range(12)]
    data = folder(root, rows=rows, header="file,effusion")
    data2 = folder(
        root / "two",
        rows=[f"{r},1" if i != 4 else f"{r},maybe" for i, r in enumerate(rows)],
        header="file,effusion,mass",
    )
    for i in range(12):
        (data2 / "images" / f"img{i:02d}.png").write_bytes((data / "images" / f"img{i:02d}.png").read_bytes())
    return _train(root, **{"data.path": str(data2), "data.labels": ["effusion", "mass"], "task": "multilabel"}), "row 6"


@case("config YAML is a list")
def _(root, fx):
    path = root / "list.yaml"
    path.write_text("- task\n- binary\n")
    return ["train", str(path), "--out", str(root / "r")], "list.yaml"


@case("config empty file")
def _(root, fx):
    path = root / "empty.yaml"
    path.write_text("")
    return ["train", str(path), "--out", str(root / "r")], "data.path is not set"


# --- names
case("name backbone")(lambda root, fx: (_train(root, **{"model.backbone": "resnt18"}), "resnet18"))
case("name strategy")(lambda root, fx: (_train(root, **{"transfer.strategy": "fine_tune"}), "finetune"))
case("name source")(lambda root, fx: (_train(root, **{"model.source": "cxr-ssl-resnet99"}), "cxr-ssl-resnet99"))
case("name label column")(
    lambda root, fx: (_train(root, **{"data.path": str(folder(root)), "data.labels": ["lable"]}), "did you mean")
)
case("name study source")(
    lambda root, fx: (
        ["study", str(study_config(root, sources=["scratch", "nope-src"])), "--out", str(root / "s")],
        "nope-src",
    )
)
case("name study strategy")(
    lambda root, fx: (["study", str(study_config(root, strategies=["finetnue"])), "--out", str(root / "s")], "finetune")
)
case("name study reference")(
    lambda root, fx: (
        ["study", str(study_config(root, reference="scratch/finetnue")), "--out", str(root / "s")],
        "scratch/finetnue",
    )
)
case("name study baseline")(
    lambda root, fx: (
        ["study", str(study_config(root, baselines=["radiomix"])), "--out", str(root / "s")],
        "radiomics",
    )
)
case("study seeds empty")(
    lambda root, fx: (["study", str(study_config(root, seeds=[])), "--out", str(root / "s")], "study.seeds")
)
case("study n zero")(lambda root, fx: (["study", str(study_config(root, n=[0])), "--out", str(root / "s")], "study.n"))


# --- --out and --resume
@case("out is a file")
def _(root, fx):
    (root / "taken").write_text("mine\n")
    return ["train", str(train_config(root)), "--out", str(root / "taken")], "taken"


@case("out below a file")
def _(root, fx):
    (root / "afile").write_text("mine\n")
    return ["train", str(train_config(root)), "--out", str(root / "afile" / "run")], "afile"


@case("out is a user's folder")
def _(root, fx):
    (root / "mine").mkdir()
    (root / "mine" / "config.yaml").write_text("my config\n")
    return ["train", str(train_config(root)), "--out", str(root / "mine")], "mine"


case("resume missing folder")(lambda root, fx: ([*_train(root), "--resume"], "run"))


@case("resume a folder that is not a run")
def _(root, fx):
    (root / "run").mkdir()
    (root / "run" / "notes.txt").write_text("mine\n")
    return [*_train(root), "--resume"], "not a medtransfer run"


@case("resume a finished run")
def _(root, fx):
    run = copy_of(fx, "run", root)
    return ["train", str(run / "config.yaml"), "--out", str(run), "--resume"], "finished"


@case("train into a study folder")
def _(root, fx):
    study = copy_of(fx, "study", root)
    return ["train", str(train_config(root)), "--out", str(study)], "holds a medtransfer study, not a run"


@case("study resume on a folder that is not a study")
def _(root, fx):
    (root / "s").mkdir()
    (root / "s" / "notes.txt").write_text("mine\n")
    return ["study", str(study_config(root)), "--out", str(root / "s"), "--resume"], "not a medtransfer study"


@case("study into a user's folder")
def _(root, fx):
    (root / "s").mkdir()
    (root / "s" / "notes.txt").write_text("mine\n")
    return ["study", str(study_config(root)), "--out", str(root / "s")], "notes.txt"


@case("study into a run folder")
def _(root, fx):
    run = copy_of(fx, "run", root)
    return ["study", str(study_config(root)), "--out", str(run)], "holds a medtransfer run, not a study"


case("study --workers 0")(
    lambda root, fx: (["study", str(study_config(root)), "--out", str(root / "s"), "--workers", "0"], "--workers")
)
case("config data.resize unknown")(lambda root, fx: (_train(root, **{"data.resize": "stretch"}), "data.resize"))


@case("weights file with a foreign suffix")
def _(root, fx):
    (root / "weights.txt").write_text("1 2 3\n")
    return _train(root, **{"model.source": str(root / "weights.txt")}), "suffix"


# --- damaged ledgers
@case("ledger cut in half, report")
def _(root, fx):
    study = copy_of(fx, "study", root)
    db = study / "study.sqlite"
    db.write_bytes(db.read_bytes()[: db.stat().st_size // 2])
    return ["report", str(study)], "--repair"


@case("ledger overwritten with text, resume")
def _(root, fx):
    study = copy_of(fx, "study", root)
    (study / "study.sqlite").write_text("this is not a database\n" * 50)
    return ["study", str(fx["study_config"]), "--out", str(study), "--resume"], "--repair"


@case("ledger 0 bytes, resume")
def _(root, fx):
    study = copy_of(fx, "study", root)
    (study / "study.sqlite").write_bytes(b"")
    return ["study", str(fx["study_config"]), "--out", str(study), "--resume"], "--repair"


@case("ledger missing, report")
def _(root, fx):
    study = copy_of(fx, "study", root)
    (study / "study.sqlite").unlink()
    return ["report", str(study)], "--repair"


@case("report --pair with a misspelt arm")
def _(root, fx):
    study = copy_of(fx, "study", root)
    return ["report", str(study), "--pair", "scratch/finetnue:scratch/finetune"], "scratch/finetnue"


@case("repair with other options")
def _(root, fx):
    study = copy_of(fx, "study", root)
    return ["study", str(study), "--repair", "--out", str(study)], "--repair takes only the study folder"


case("report on a folder that is not a study")(lambda root, fx: (["report", str(folder(root))], "not a study folder"))


# --- broken data: folder + CSV
@case("data path missing")
def _(root, fx):
    return _train(root, **{"data.path": str(root / "nowhere")}), "nowhere"


@case("training on a plain image folder (no CSV, no labels)")
def _(root, fx):
    png(root / "imgs" / "a.png")
    return _train(root, **{"data.path": str(root / "imgs")}), "no labels"


@case("CSV missing label column")
def _(root, fx):
    data = folder(root, header="file,diagnosis")
    return _train(root, **{"data.path": str(data)}), "label"


@case("CSV lists a missing image")
def _(root, fx):
    data = folder(root, rows=[*(f"images/img{i:02d}.png,{i % 2}" for i in range(12)), "images/gone.png,1"])
    return _train(root, **{"data.path": str(data)}), "row 14"


@case("CSV empty")
def _(root, fx):
    data = folder(root)
    (data / "labels.csv").write_text("")
    return _train(root, **{"data.path": str(data)}), "labels.csv"


@case("CSV header only")
def _(root, fx):
    data = folder(root, rows=[])
    return _train(root, **{"data.path": str(data)}), "no rows"


@case("CSV row with an extra field names the row")
def _(root, fx):
    rows = [f"images/img{i:02d}.png,{i % 2}" for i in range(12)]
    data = folder(root, rows=rows[:5] + ["images/img05.png,0,1"] + rows[6:])
    return _train(root, **{"data.path": str(data)}), "row 7"


@case("truncated PNG names the CSV row and the fix")
def _(root, fx):
    data = folder(root)
    img = data / "images" / "img03.png"
    img.write_bytes(img.read_bytes()[:40])
    return _train(root, **{"data.path": str(data)}), "row 5"


@case("text file named .png")
def _(root, fx):
    data = folder(root)
    (data / "images" / "img00.png").write_text("not an image\n")
    return _train(root, **{"data.path": str(data)}), "row 2"


@case("CSV path leaves the data folder")
def _(root, fx):
    png(root / "secret.png")
    data = folder(root, rows=[*(f"images/img{i:02d}.png,{i % 2}" for i in range(12)), "../secret.png,1"])
    return _train(root, **{"data.path": str(data)}), "data.allow_outside"


@case("CSV absolute path outside the data folder")
def _(root, fx):
    secret = png(root / "elsewhere" / "secret.png")
    data = folder(root, rows=[*(f"images/img{i:02d}.png,{i % 2}" for i in range(12)), f"{secret},1"])
    return _train(root, **{"data.path": str(data)}), "data.allow_outside"


@case("broken DICOM")
def _(root, fx):
    data = folder(root, rows=[*(f"images/img{i:02d}.png,{i % 2}" for i in range(12)), "images/scan.dcm,1"])
    (data / "images" / "scan.dcm").write_bytes(b"\x00" * 64 + b"garbage")
    return ["data", "inspect", str(data), "--check-all"], "scan.dcm"


@case("data inspect --check-all names every unreadable image")
def _(root, fx):
    data = folder(root)
    for i in (2, 7):
        (data / "images" / f"img{i:02d}.png").write_text("broken\n")
    return ["data", "inspect", str(data), "--check-all"], "img07.png"


# --- broken data: npz
@case("npz truncated")
def _(root, fx):
    path = root / "pneumoniamnist.npz"
    np.savez_compressed(path, train_images=np.zeros((20, 8, 8), np.uint8), train_labels=np.zeros((20, 1), np.uint8))
    path.write_bytes(path.read_bytes()[:100])
    return _train(root, **{"data.path": str(path)}), "pneumoniamnist.npz"


@case("npz without image arrays")
def _(root, fx):
    path = root / "weird.npz"
    np.savez(path, x=np.zeros(3))
    return _train(root, **{"data.path": str(path)}), "weird.npz"


@case("npz with zero images")
def _(root, fx):
    path = root / "pneumoniamnist.npz"
    np.savez(path, train_images=np.zeros((0, 8, 8), np.uint8), train_labels=np.zeros((0, 1), np.uint8))
    return _train(root, **{"data.path": str(path)}), "no images"


@case("npz images and labels disagree")
def _(root, fx):
    path = root / "pneumoniamnist.npz"
    np.savez(path, train_images=np.zeros((10, 8, 8), np.uint8), train_labels=np.zeros((7, 1), np.uint8))
    return _train(root, **{"data.path": str(path)}), "7 labels"


# --- hostile or broken weight files
@case("pickle payload as a source")
def _(root, fx):
    import pickle

    class Payload:
        def __reduce__(self):
            return (os.system, (f"touch {root / 'pwned'}",))

    path = root / "weights.pt"
    with open(path, "wb") as f:
        pickle.dump({"state_dict": Payload()}, f)
    return _train(root, **{"model.source": str(path)}), "weights.pt"


@case("truncated safetensors as a source")
def _(root, fx):
    path = root / "model.safetensors"
    shutil.copy(fx["run"] / "model.safetensors", path)
    path.write_bytes(path.read_bytes()[:50])
    return _train(root, **{"model.source": str(path)}), "model.safetensors"


@case("zip that is not a checkpoint as a source")
def _(root, fx):
    path = root / "weights.pth"
    with zipfile.ZipFile(path, "w") as z:
        z.writestr("hello.txt", "hi")
    return _train(root, **{"model.source": str(path)}), "weights.pth"


# --- evaluation on the wrong images
@case("evaluate data with other labels")
def _(root, fx):
    return ["evaluate", str(fx["run"]), "--data", "synthetic:both,n=30", "--out", str(root / "m.json")], "labels"


@case("evaluate a folder that is not a run")
def _(root, fx):
    (root / "notarun").mkdir()
    return ["evaluate", str(root / "notarun"), "--data", SPEC, "--out", str(root / "m.json")], "notarun"


@case("evaluate --split on other data with no split of its own")
def _(root, fx):
    other = "synthetic:chest,n=60,visibility=0.9,size=32,seed=5"
    argv = ["evaluate", str(fx["run"]), "--data", other, "--split", "test", "--out", str(root / "m.json")]
    return argv, "made for"


@case("evaluate with a split file made for other data")
def _(root, fx):
    argv = ["evaluate", str(fx["run"]), "--data", "synthetic:chest,n=60,visibility=0.9,size=32,seed=5"]
    return [*argv, "--split", "test", "--split-file", str(fx["run"] / "split.csv"), "--out", str(root / "m.json")], (
        "made for"
    )


case("predict with a folder that is not a run")(
    lambda root, fx: (["predict", str(root), "--data", SPEC, "--out", str(root / "p.csv")], "model.safetensors")
)
case("data split with bad fractions")(
    lambda root, fx: (["data", "split", SPEC, "--out", str(root / "split.csv"), "--fractions", "0.5,0.6"], "fractions")
)

case("evaluate --tta negative")(
    lambda root, fx: (
        ["evaluate", str(fx["run"]), "--data", SPEC, "--tta", "-1", "--out", str(root / "m.json")],
        "--tta",
    )
)


# --- one CLI: a user's file is never replaced without --force; names of splits and datasets are checked
@case("data split onto an existing file")
def _(root, fx):
    (root / "mine.csv").write_text("my own notes\n")
    return ["data", "split", "--data", SPEC, "--out", str(root / "mine.csv")], "--force"


@case("evaluate onto an existing file")
def _(root, fx):
    (root / "m.json").write_text("{}")
    return ["evaluate", str(fx["run"]), "--data", SPEC, "--out", str(root / "m.json")], "--force"


case("evaluate --split misspelt")(
    lambda root, fx: (
        ["evaluate", str(fx["run"]), "--data", SPEC, "--split", "tset", "--out", str(root / "m.json")],
        "--split must be one of",
    )
)
case("predict --out is a folder")(
    lambda root, fx: (["predict", str(fx["run"]), "--data", SPEC, "--out", str(root)], "is a folder")
)
case("two different datasets given")(
    lambda root, fx: (["data", "inspect", SPEC, "--data", "synthetic:hand,n=10"], "two datasets")
)


# --- pretrain checks first too
@case("pretrain with a bad value")
def _(root, fx):
    cfg = yaml.safe_load(train_config(root).read_text())
    cfg["pretrain"] = {"method": "simclr", "temperature": 0}
    path = root / "pre.yaml"
    path.write_text(yaml.safe_dump(cfg))
    return ["pretrain", str(path), "--out", str(root / "src")], "pretrain.temperature"


@case("pretrain on missing data")
def _(root, fx):
    cfg = yaml.safe_load(train_config(root, **{"data.path": str(root / "nowhere.npz")}).read_text())
    cfg["pretrain"] = {"method": "simclr"}
    path = root / "pre.yaml"
    path.write_text(yaml.safe_dump(cfg))
    return ["pretrain", str(path), "--out", str(root / "src")], "nowhere.npz"


# ------------------------------------------------------------------------------------------------------- test
def test_the_corpus_is_large_enough():
    assert len(CASES) >= 40


@pytest.mark.parametrize("name", sorted(CASES))
def test_bad_input_is_one_line_and_changes_nothing(name, tmp_path, finished, capsys):
    root = tmp_path / "case"
    root.mkdir()
    argv, match = CASES[name](root, finished)
    before = snapshot(root)
    capsys.readouterr()
    with pytest.raises(SystemExit) as info:
        main(argv)
    err = capsys.readouterr().err
    lines = [line for line in err.splitlines() if line.strip()]
    errors = [line for line in lines if line.startswith("error:")]
    assert info.value.code == 2, err
    assert len(errors) == 1 and lines[-1] == errors[0], err
    assert "Traceback" not in err and "weights_only=False" not in err and "force=True" not in err, err
    assert match in errors[0], err
    assert snapshot(root) == before, f"{name}: the case's folder changed"
    assert not (root / "pwned").exists()
