"""Executors are objects in a registry: a new one is one module (``toy_executor.py``) with its own settings, checked
when the config loads, a ``check`` before planning and ``run``; the runner, the CLI and the study's identity need no
edit. Older configs with the Ray executor's flat keys still load."""

from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path

import pytest
import yaml

from medtransfer.cli import main
from medtransfer.config import load_config, replace, to_dict
from medtransfer.errors import ConfigError, UserError
from medtransfer.studies.config import StudyConfig, StudySection
from medtransfer.studies.executors import EXECUTORS, Executor, NoSettings
from medtransfer.studies.identity import fingerprint
from medtransfer.studies.ledger import Ledger
from medtransfer.studies.ray_executor import RaySettings
from medtransfer.studies.runner import run_study


@pytest.fixture
def toy(monkeypatch):
    """``toy_executor.py`` imported afresh (it registers ``toy``); the module and its registration are removed
    after the test."""
    spec = importlib.util.spec_from_file_location("toy_executor", Path(__file__).with_name("toy_executor.py"))
    module = importlib.util.module_from_spec(spec)
    monkeypatch.setitem(sys.modules, "toy_executor", module)
    spec.loader.exec_module(module)
    try:
        yield EXECUTORS.get("toy")
    finally:
        EXECUTORS._items.pop("toy", None)  # the registry has no unregister: nothing else may remove a name


def cli(argv: list[str]) -> int:
    try:
        main(argv)
    except SystemExit as e:
        return int(e.code or 0)
    return 0


def test_a_toy_executor_in_one_module_runs_a_study_end_to_end(tmp_path, tiny, toy, capsys):
    assert "toy" in EXECUTORS.names() and isinstance(toy, Executor)
    config = tmp_path / "study.yaml"
    study = tiny(tmp_path, n=[12], strategies=["finetune"], seeds=[0, 1], executors={"toy": {"order": "reversed"}})
    config.write_text(yaml.safe_dump(study))
    out = tmp_path / "s"
    argv = ["study", str(config), "--out", str(out), "--executor", "toy", "--set", "study.executors.toy.label=A"]
    assert cli(argv) == 0
    assert "done 2" in capsys.readouterr().out
    rows = {r["id"]: r for r in Ledger(out / "study.sqlite").rows()}
    assert toy.checked == ["toy"] and toy.ran == sorted(rows, reverse=True)  # its settings decided the order
    assert all(r["status"] == "done" and r["worker"].startswith("toy A pid ") for r in rows.values())
    assert (out / "report.md").is_file()
    resolved = yaml.safe_load((out / "config.yaml").read_text())["study"]
    assert resolved["executor"] == "toy" and resolved["executors"] == {"toy": {"label": "A", "order": "reversed"}}
    # the executor and its settings are not the study's identity: the same study resumes locally, nothing reruns
    assert run_study(load_config(config, cls=StudyConfig), out, resume=True, progress=False, report=False)["done"] == 2
    assert toy.ran == sorted(rows, reverse=True)


def test_the_toy_executors_settings_are_checked_when_the_config_loads(tmp_path, tiny, study_config, toy):
    cfg = study_config(executor="toy")
    assert cfg.study.executors == {"toy": toy.Settings()}  # the chosen executor's defaults, filled in
    with pytest.raises(ConfigError, match=r"^study.executors.toy.order must be given or reversed, got 'up'"):
        study_config(executor="toy", executors={"toy": {"order": "up"}})
    with pytest.raises(ConfigError, match=r"unknown config key 'study.executors.toy.lable'; did you mean 'label'"):
        study_config(executors={"toy": {"lable": "x"}})  # settings of an executor not chosen are checked too
    with pytest.raises(UserError, match="refuses before planning"):
        run_study(study_config(executor="toy", executors={"toy": {"label": "refuse"}}), tmp_path / "s")
    assert not (tmp_path / "s").exists()  # check() ran before anything was written


def test_fingerprint_keys_make_an_executors_settings_part_of_the_study(study_config, toy, monkeypatch):
    cfg = study_config(executor="toy", executors={"toy": {"label": "A"}})
    assert "executor" not in fingerprint(cfg)["study"]  # by default: where trials run is not what they are
    assert fingerprint(cfg) == fingerprint(replace(cfg, **{"study.executor": "local"}))
    monkeypatch.setattr(type(toy), "fingerprint_keys", ("label",))
    assert fingerprint(cfg)["study"]["executor"] == {"toy": {"label": "A"}}
    assert fingerprint(cfg) != fingerprint(replace(cfg, **{"study.executors.toy.label": "B"}))


def test_the_cli_lists_the_registered_executors(toy):
    from medtransfer.cli.study import _executor_names

    assert _executor_names() == "local | ray | toy"


def test_an_unknown_executor_fails_at_load_with_close_matches(study_config):
    with pytest.raises(ConfigError, match=r"^study.executor: unknown executor 'rey'; did you mean \['ray'\]"):
        study_config(executor="rey")
    with pytest.raises(ConfigError, match=r"^study.executors.lokal: unknown executor 'lokal'; did you mean"):
        study_config(executors={"lokal": {}})


def test_ray_settings_are_checked_at_load():
    def study(*overrides: str) -> StudySection:
        return load_config(None, list(overrides), cls=StudyConfig).study

    assert study().executors == {"local": NoSettings()}
    ray = study("study.executor=ray", "study.executors.ray.cpus_per_trial=2").executors["ray"]
    assert ray == RaySettings(address=None, cpus_per_trial=2.0, gpus_per_trial=0.0)
    assert study("study.executors.ray.gpus_per_trial=0.25").executors["ray"].gpus_per_trial == 0.25
    for bad, message in [
        ("gpus_per_trial=1.5", ".*above 1 a trial takes whole GPUs"),
        ("gpus_per_trial=-1", "0 \\(CPU only\\)"),
        ("cpus_per_trial=0", "a positive number of CPUs"),
        ("address=''", "a cluster's address"),
    ]:
        with pytest.raises(ConfigError, match=f"^study.executors.ray.{bad.split('=')[0]} must be {message}"):
            study(f"study.executors.ray.{bad}")
    built = StudySection(executor="ray", executors={"ray": RaySettings(cpus_per_trial=4)})  # built in code
    assert built.executors["ray"].cpus_per_trial == 4


def test_the_old_flat_ray_keys_still_load(tmp_path):
    """A study folder's config.yaml written before executors had settings: resume and --repair read it."""
    old = {"study": {"executor": "ray", "ray_address": "auto", "trial_cpus": 2.0, "trial_gpus": 0.0}}
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump(old))
    study = load_config(path, cls=StudyConfig).study
    assert study.executors == {"ray": RaySettings(address="auto", cpus_per_trial=2.0, gpus_per_trial=0.0)}
    assert (study.ray_address, study.trial_cpus, study.trial_gpus) == (None, None, None)  # moved, not kept twice
    defaults = {"study": {"executor": "local", "ray_address": None, "trial_cpus": 1.0, "trial_gpus": 0.0}}
    path.write_text(yaml.safe_dump(defaults))  # what every older resolved config.yaml holds: nothing to carry
    assert load_config(path, cls=StudyConfig).study.executors == {"local": NoSettings()}
    with pytest.raises(ConfigError, match=r"^study.trial_cpus must be left out: it is study.executors.ray.cpus_per"):
        load_config(None, ["study.trial_cpus=2", "study.executors.ray.cpus_per_trial=3"], cls=StudyConfig)
    with pytest.raises(ConfigError, match=r"^study.executors.ray.cpus_per_trial must be a positive number"):
        load_config(None, ["study.trial_cpus=0"], cls=StudyConfig)


def test_a_study_started_before_executor_settings_resumes(tmp_path):
    """The identity of a study is unchanged by the move: the fingerprint an older ledger stored still matches."""
    cfg = load_config(None, ["study.executor=ray", "study.executors.ray.address=auto"], cls=StudyConfig)
    study = fingerprint(cfg)["study"]
    assert not {"workers", "executor", "executors", "ray_address", "trial_cpus", "trial_gpus"} & set(study)
    assert json.loads(json.dumps(to_dict(cfg)))["study"]["executors"]["ray"]["address"] == "auto"
