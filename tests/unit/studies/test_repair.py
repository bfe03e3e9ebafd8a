"""`medtransfer study DIR --repair` rebuilds a damaged ledger from the trial folders: finished trials stay finished
(the report is the same), unfinished ones run on --resume, and the damaged file is kept."""

from __future__ import annotations

import shutil

import pandas as pd
import pytest
import yaml

from medtransfer.studies.ledger import Ledger


@pytest.fixture
def finished_study(tmp_path, tiny, cli):
    config = tmp_path / "study.yaml"
    config.write_text(yaml.safe_dump(tiny(tmp_path, n=[12], strategies=["finetune"], baselines=["radiomics"])))
    out = tmp_path / "s"
    assert cli(["study", str(config), "--out", str(out)]) == 0
    return config, out


@pytest.mark.parametrize("damage", ["half", "text", "empty", "missing"])
def test_repair_rebuilds_the_ledger_and_the_report_is_the_same(finished_study, damage, capsys, cli):
    config, out = finished_study
    before = pd.read_csv(out / "results.csv")
    ledger = out / "study.sqlite"
    good = ledger.read_bytes()
    damaged = {"half": good[: len(good) // 2], "text": b"not a database\n" * 100, "empty": b"", "missing": None}[damage]
    if damaged is None:
        ledger.unlink()
    else:
        ledger.write_bytes(damaged)
    assert cli(["report", str(out)]) == 2
    assert "--repair" in capsys.readouterr().err

    assert cli(["study", str(out), "--repair"]) == 0
    said = " ".join(capsys.readouterr().out.split())
    assert "4 done, 0 failed, 0 to run" in said  # 2 seeds × (scratch/finetune + radiomics)
    kept = sorted(out.glob("study.sqlite.damaged-*"))
    assert (len(kept) == 1 and kept[0].read_bytes() == damaged) if damaged is not None else not kept

    assert cli(["report", str(out)]) == 0
    after = pd.read_csv(out / "results.csv")
    cols = ["id", "arm", "n", "seed", "status", "auc"]
    pd.testing.assert_frame_equal(after[cols], before[cols])
    assert cli(["study", str(config), "--out", str(out), "--resume"]) == 0  # the same study: nothing to run again
    with Ledger(ledger, create=False) as led:
        assert led.counts()["done"] == 4 and all(r["attempts"] == 1 for r in led.rows())


def test_an_unfinished_trial_is_pending_after_repair_and_runs_on_resume(finished_study, capsys, cli):
    config, out = finished_study
    trial = next(p for p in (out / "trials").glob("*/*") if p.is_dir() and "radiomics" not in str(p))
    shutil.rmtree(trial)  # as if it had never run
    (out / "study.sqlite").write_bytes(b"")
    assert cli(["study", str(out), "--repair"]) == 0
    assert "3 done, 0 failed, 1 to run" in " ".join(capsys.readouterr().out.split())
    assert cli(["study", str(config), "--out", str(out), "--resume"]) == 0
    with Ledger(out / "study.sqlite", create=False) as led:
        assert led.counts() == {"pending": 0, "running": 0, "done": 4, "failed": 0}


def test_repair_refuses_what_is_not_a_study(tmp_path, capsys, cli):
    (tmp_path / "notes.txt").write_text("mine\n")
    assert cli(["study", str(tmp_path), "--repair"]) == 2
    err = capsys.readouterr().err
    assert "not a medtransfer study folder" in err and sorted(p.name for p in tmp_path.iterdir()) == ["notes.txt"]
