"""Grid expansion and pairing: arms × N × seeds, 'all', ordering, and early errors with suggestions."""

from __future__ import annotations

import pytest

from medtransfer.errors import ConfigError, UnknownNameError
from medtransfer.studies.config import StudySection, source_label
from medtransfer.studies.grid import expand, reference_arm, resolve_sizes, safe_name


def section(**kw) -> StudySection:
    base = {
        "n": [10, 20, "all"],
        "sources": ["scratch", "/x/sources/cxr-ssl"],
        "strategies": ["finetune", "recipe"],
        "seeds": [0, 1],
        "baselines": ["radiomics"],
    }
    return StudySection(**{**base, **kw})


def study_config(**kw):
    """The whole study config: strategy names are checked by the strategies when it loads."""
    from medtransfer.config import from_dict, to_dict
    from medtransfer.studies.config import StudyConfig

    return from_dict(StudyConfig, {"data": {"path": "synthetic:chest,n=60"}, "study": to_dict(section(**kw))})


def test_every_arm_at_every_size_and_seed_small_n_first():
    trials = expand(section(), pool=40)
    arms = ["scratch/finetune", "scratch/recipe", "cxr-ssl/finetune", "cxr-ssl/recipe", "radiomics"]
    assert len(trials) == len(arms) * 3 * 2
    assert [t.arm for t in trials[:5]] == arms
    assert [(t.n_label, t.n, t.seed) for t in trials[::5]] == [
        ("10", 10, 0),
        ("10", 10, 1),
        ("20", 20, 0),
        ("20", 20, 1),
        ("all", 40, 0),
        ("all", 40, 1),
    ]
    assert len({t.id for t in trials}) == len(trials)
    assert len({t.folder for t in trials}) == len(trials)
    net = [t for t in trials if t.kind == "net"]
    assert {t.source for t in net} == {"scratch", "/x/sources/cxr-ssl"}
    assert all(t.kind == "baseline" and t.source is None for t in trials if t.arm == "radiomics")
    assert trials[0].n_train == 10 and trials[-1].n_train is None


def test_sizes_not_below_the_pool_collapse_into_all():
    assert resolve_sizes([50, 10, 100, 200], pool=100) == [("10", 10), ("50", 50), ("all", 100)]
    assert resolve_sizes(["all", 5, "ALL"], pool=8) == [("5", 5), ("all", 8)]
    for bad in (["most"], [0], []):  # checked when the config loads, not when the grid is expanded
        with pytest.raises(ConfigError, match="study.n must be a"):
            section(n=bad)
    with pytest.raises(ConfigError, match="training split is empty"):
        resolve_sizes([5], pool=0)


def test_names_are_checked_before_any_work():
    with pytest.raises(UnknownNameError, match="finetune"):
        study_config(strategies=["fine_tune"])
    with pytest.raises(UnknownNameError, match="radiomics"):
        expand(section(baselines=["radiomic"]), 40)
    with pytest.raises(ConfigError, match="duplicates"):
        expand(section(seeds=[0, 0]), 40)
    with pytest.raises(ConfigError, match="same name"):
        expand(section(sources=["a/cxr", "b/cxr"]), 40)
    with pytest.raises(ConfigError, match="no arm"):
        expand(section(sources=[], baselines=[]), 40)


def test_reference_arm_defaults_to_scratch_and_is_checked():
    trials = expand(section(sources=["/s/cxr-ssl", "scratch"]), 40)
    assert reference_arm(section(), trials) == "scratch/finetune"
    assert reference_arm(section(reference="cxr-ssl/recipe"), trials) == "cxr-ssl/recipe"
    with pytest.raises(ConfigError, match="did you mean 'cxr-ssl/recipe'"):
        reference_arm(section(reference="cxr-ssl/recipes"), trials)


def test_folder_names_are_safe():
    assert safe_name("cxr-ssl/recipe") == "cxr-ssl__recipe"
    assert safe_name("a b/c") == "a_b__c"
    assert source_label("~/sources/hand-ssl/") == "hand-ssl"
    assert source_label("imagenet") == "imagenet"


def test_exclude_drops_arms_and_checks_names():
    trials = expand(section(exclude=["scratch/recipe"], baselines=[]), 40)
    assert "scratch/recipe" not in {t.arm for t in trials} and len({t.arm for t in trials}) == 3
    with pytest.raises(ConfigError, match="did you mean 'scratch/recipe'"):
        expand(section(exclude=["scratch/recipes"]), 40)


def test_strategy_settings_name_a_study_strategy_and_hold_overrides():
    expand(section(strategy_settings={"recipe": ["train.lr=0.001"]}), 40)
    with pytest.raises(UnknownNameError, match="study.strategy_settings: unknown strategy 'recipes'; did you mean"):
        study_config(strategy_settings={"recipes": ["train.lr=0.001"]})
    with pytest.raises(ConfigError, match="key.sub=value"):
        expand(section(strategy_settings={"recipe": ["train.lr"]}), 40)


def test_strategy_settings_of_a_strategy_not_run_are_ignored_with_a_notice(caplog):
    # an example config trimmed to fewer strategies keeps the settings of the others: a notice, not an error
    with caplog.at_level("WARNING"):
        s = study_config(strategies=["finetune"], strategy_settings={"romero": ["train.lr=0.001"]}).study
        trials = expand(s, 40)
    assert {t.strategy for t in trials if t.kind == "net"} == {"finetune"}
    assert "study.strategy_settings.romero is ignored" in caplog.text


def test_strategy_settings_reach_only_their_strategy_trials(tmp_path):
    from medtransfer.config import from_dict
    from medtransfer.studies.config import StudyConfig
    from medtransfer.studies.trial import StudyContext

    cfg = from_dict(
        StudyConfig,
        {
            "data": {"path": "synthetic:chest,n=60"},
            "train": {"lr": 0.002},
            "study": {
                "sources": ["scratch"],
                "strategies": ["finetune", "romero"],
                "strategy_settings": {"romero": ["train.lr=0.001", "train.balance=true"]},
            },
        },
    )
    trials = {t.strategy: t for t in expand(cfg.study, 40)}
    ctx = StudyContext(cfg, str(tmp_path), {"scratch": "scratch"})
    assert ctx.train_config(trials["romero"]).train.lr == 0.001 and ctx.train_config(trials["romero"]).train.balance
    assert (
        ctx.train_config(trials["finetune"]).train.lr == 0.002
        and not ctx.train_config(trials["finetune"]).train.balance
    )
