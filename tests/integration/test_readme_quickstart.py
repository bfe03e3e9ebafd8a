"""The README's quickstart, run as written: the ```bash block under "## Quickstart" is read from README.md and each
command is executed, through the ``medtransfer`` entry point (``medtransfer.cli.main``, in this process: it saves a
torch import per command), in a fresh folder where ``my_study`` is the MedNIST folder sample (600 JPEGs +
labels.csv), ``new_images`` a plain folder of images without a CSV, and ``examples`` the repository's. Only the
compute budget is changed, by ``--set`` arguments appended to the commands that train (a tiny network at 16 px, one
epoch, a small study); every command must exit 0 and leave what the README says it leaves."""

from __future__ import annotations

import re
import shlex
import shutil
from pathlib import Path

import pandas as pd
import pytest

from medtransfer.cli import main

REPO = Path(__file__).resolve().parents[2]
README = REPO / "README.md"

TINY = ["--set", "model.backbone=tiny", "--set", "data.image_size=16", "--set", "train.epochs=1"]
BUDGET = {  # appended to the commands that train; nothing else of the README's text changes
    ("sources", "build"): [*TINY, "--set", "train.n_train=128", "--set", "train.batch_size=32"],
    ("train",): TINY,
    ("study",): [
        *TINY,
        "--set",
        "study.n=[30]",
        "--set",
        "study.seeds=[0,1]",
        "--set",
        "study.strategies=[finetune]",
        "--set",
        "study.baselines=[]",
    ],
}


def quickstart_commands() -> list[str]:
    """The commands of the README's quickstart block, continuation lines joined."""
    text = README.read_text(encoding="utf-8")
    section = text[text.index("## Quickstart") :]
    block = re.search(r"```bash\n(.*?)```", section, re.S)
    assert block, "README.md: no ```bash block under '## Quickstart'"
    joined = block.group(1).replace("\\\n", " ")
    return [line.strip() for line in joined.splitlines() if line.strip() and not line.strip().startswith("#")]


def with_budget(argv: list[str]) -> list[str]:
    for prefix, extra in BUDGET.items():
        if tuple(argv[1 : 1 + len(prefix)]) == prefix:
            return [*argv, *extra]
    return argv


def test_the_quickstart_block_is_what_a_newcomer_runs():
    commands = quickstart_commands()
    assert commands[0] == "source .venv/bin/activate"
    steps = [shlex.split(c)[1:3] for c in commands[1:]]
    assert all(shlex.split(c)[0] == "medtransfer" for c in commands[1:])
    assert ["data", "inspect"] in steps and ["data", "split"] in steps and ["sources", "build"] in steps
    assert [s[0] for s in steps].count("study") == 2 and "--dry-run" in commands[-2]
    assert "examples/folder_train.yaml" in " ".join(commands) and "examples/folder_study.yaml" in " ".join(commands)


def run(argv: list[str], capsys) -> tuple[int, str, str]:
    try:
        main(argv)
        code = 0
    except SystemExit as e:
        code = int(e.code or 0)
    out = capsys.readouterr()
    return code, out.out, out.err


def test_readme_quickstart_runs_as_written(shared_data, tmp_path, monkeypatch, capsys):
    sample = shared_data / "mednist_folder_sample"
    if not sample.is_dir():
        pytest.skip("mednist_folder_sample not in the shared data")
    work = tmp_path / "work"
    work.mkdir()
    shutil.copytree(sample, work / "my_study")
    (work / "examples").symlink_to(REPO / "examples")
    new = work / "new_images"
    new.mkdir()
    for f in sorted((sample / "images").iterdir())[::100]:  # one image of each class, no CSV
        shutil.copy(f, new / f.name)
    monkeypatch.chdir(work)
    monkeypatch.setenv("MEDTRANSFER_SOURCES", str(tmp_path / "sources"))
    monkeypatch.setenv("MEDTRANSFER_CACHE", str(tmp_path / "cache"))
    for command in quickstart_commands()[1:]:  # the first activates the venv
        argv = with_budget(shlex.split(command))
        code, out, err = run(argv[1:], capsys)
        assert code == 0, f"{command}\n{out[-3000:]}\n{err[-3000:]}"
        if "--dry-run" in argv:
            assert "nothing was written" in out and not (work / "runs" / "my_study").exists()

    assert (work / "my_study_split.csv").is_file()
    assert (tmp_path / "sources" / "my-archive-ssl" / "source.yaml").is_file()
    assert (work / "runs" / "my_model" / "model.safetensors").is_file()
    metrics = pd.read_json(work / "runs" / "my_model_test.json", typ="series")
    assert metrics["split"] == "test"
    predictions = pd.read_csv(work / "runs" / "new_images.csv")
    assert len(predictions) == len(list(new.iterdir()))
    results = pd.read_csv(work / "runs" / "my_study" / "results.csv")
    assert set(results["status"]) == {"done"} and results["arm"].nunique() == 2
    assert (work / "runs" / "my_study" / "report.html").is_file()
