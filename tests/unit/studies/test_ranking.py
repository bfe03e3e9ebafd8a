"""The study's transferability ranking: features once per source, LogME and the probe at every N of the study on
the images the arms of that N train on, and a ``ranking.json`` that stays valid JSON where a score is undefined."""

from __future__ import annotations

import dataclasses
import json

import numpy as np
import pandas as pd
import pytest
import yaml

from medtransfer.config import load_config
from medtransfer.pretrain import rank as rank_mod
from medtransfer.studies.config import StudyConfig
from medtransfer.studies.ranking import RANKING_FILE, pool_positions, rank_for_report, ranking_levels
from medtransfer.studies.runner import plan
from medtransfer.studies.trial import prepared


def _strict_json(path) -> dict:
    """``ranking.json`` parsed as strict JSON: a NaN or Infinity in it fails."""

    def refuse(name):
        raise ValueError(f"{name} in {path}")

    return json.loads(path.read_text(), parse_constant=refuse)


@pytest.fixture
def planned(tmp_path, tiny):
    """A planned tiny study (splits written, nothing trained) at sizes 2, 12 and all."""

    def make(**study):
        path = tmp_path / "study.yaml"
        path.write_text(yaml.safe_dump(tiny(tmp_path, **{"n": [2, 12, "all"], "seeds": [0, 1], **study})))
        cfg = load_config(path, cls=StudyConfig)
        out = tmp_path / "s"
        out.mkdir(exist_ok=True)
        _, ctx = plan(cfg, out, progress=False)
        return ctx, out

    return make


def test_pool_positions_and_outsiders():
    pool = np.array([7, 3, 9, 1])
    assert pool_positions(pool, np.array([9, 7, 1])).tolist() == [2, 0, 3]
    assert pool_positions(pool, np.array([], dtype=int)).tolist() == []
    with pytest.raises(ValueError, match="outside the training pool"):
        pool_positions(pool, np.array([4]))


@pytest.mark.parametrize("balance", [False, True])
def test_levels_are_the_subsets_the_arms_train_on(planned, balance):
    ctx, _ = planned()
    prep = prepared(ctx, 0)
    pool = prep.split.train_subset(None)
    labels = prep.ds.labels if balance else None
    levels = ranking_levels(prep.split, [12, "all", 2], labels)
    assert [(lv.n_label, lv.n) for lv in levels] == [("2", 2), ("12", 12), ("all", len(pool))]
    for lv in levels:
        want = prep.split.train_subset(None if lv.n_label == "all" else lv.n, balance_labels=labels)
        assert pool[lv.positions].tolist() == want.tolist()


def test_ranking_json_per_n_on_a_tiny_target(planned, monkeypatch):
    """Real frozen features of the scratch network, extracted once; every N scored on its own images."""
    ctx, out = planned()
    calls = []
    real = rank_mod.source_features

    def spy(source, target, device="cpu"):
        calls.append((source, len(target.indices)))
        return real(source, target, device)

    monkeypatch.setattr(rank_mod, "source_features", spy)
    result = rank_for_report(ctx, out, progress=False)
    saved = _strict_json(out / RANKING_FILE)
    assert saved == json.loads(json.dumps(result))
    prep = prepared(ctx, 0)
    pool = prep.split.train_subset(None)
    assert calls == [("scratch", len(pool))]  # one forward pass over the pool for the source
    assert saved["method"] == "logme" and saved["n_images"] == len(pool) and "error" not in saved
    assert [r["arm_source"] for r in saved["rows"]] == ["scratch"]
    assert [(b["n_label"], b["n"], b["n_images"]) for b in saved["by_n"]] == [
        ("2", 2, 2),
        ("12", 12, 12),
        ("all", len(pool), len(pool)),
    ]
    at = {b["n_label"]: b["rows"][0] for b in saved["by_n"]}
    assert set(at["12"]) == {"arm_source", "source", "score", "probe_auc"}
    assert at["2"]["probe_auc"] is None  # no 3-fold stratified probe on 2 images: null, not a failure
    assert (at["all"]["score"], at["all"]["probe_auc"]) == (saved["rows"][0]["score"], saved["rows"][0]["probe_auc"])
    # N=12 is LogME of the features of exactly the 12 images the N=12 arms train on
    subset = prep.split.train_subset(12)
    target = rank_mod.Target("t", prep.images, prep.ds.labels, subset, "binary", prep.ds.channels, "tiny", ctx.cfg.seed)
    feats = real("scratch", target)
    score, auc = rank_mod.score_features(feats, prep.ds.labels[subset], "binary", seed=ctx.cfg.seed)
    assert at["12"]["score"] == pytest.approx(score, rel=1e-5)
    assert at["12"]["probe_auc"] == (pytest.approx(auc) if np.isfinite(auc) else None)


def test_the_order_at_small_n_can_differ_from_the_pool(planned, monkeypatch):
    """Two fake sources: one informative on the first 12 images of the pool only, one on the rest only."""
    ctx, out = planned(n=[12, "all"], seeds=[0])
    ctx = dataclasses.replace(ctx, sources={"small": "src-small", "large": "src-large"})

    def fake(source, target, device="cpu"):
        y = target.labels[target.indices][:, 0]
        rng = np.random.default_rng(0)
        informative = np.arange(len(y)) < 12 if source == "src-small" else np.arange(len(y)) >= 12
        signal = np.where(informative, y, rng.random(len(y)))
        return np.c_[signal + 0.05 * rng.normal(size=len(y)), rng.normal(size=(len(y), 3))]

    monkeypatch.setattr(rank_mod, "source_features", fake)
    rank_for_report(ctx, out, progress=False)
    saved = _strict_json(out / RANKING_FILE)
    best = {b["n_label"]: max(b["rows"], key=lambda r: r["score"])["arm_source"] for b in saved["by_n"]}
    assert best == {"12": "small", "all": "large"}
    assert max(saved["rows"], key=lambda r: r["score"])["arm_source"] == "large"


def test_a_failing_source_is_recorded_not_raised(planned, monkeypatch):
    ctx, out = planned(seeds=[0])

    def broken(source, target, device="cpu"):
        raise RuntimeError("no features")

    monkeypatch.setattr(rank_mod, "source_features", broken)
    result = rank_for_report(ctx, out, progress=False)
    assert result["error"] == "RuntimeError: no features" and result["rows"] == []
    assert "by_n" not in _strict_json(out / RANKING_FILE)


def test_old_ranking_files_still_render(tmp_path):
    """A ranking.json written before by_n (NaN probe AUCs included) still makes the report's section."""
    from medtransfer.reporting.document import to_markdown
    from medtransfer.reporting.sections import ranking_section

    old = {"method": "logme", "n_images": 80, "rows": [{"arm_source": "scratch", "score": 0.1, "probe_auc": np.nan}]}
    summary = pd.DataFrame(
        {"arm": ["scratch/ft"], "kind": "net", "source": "scratch", "strategy": "ft", "n_label": "12", "n": 12}
    ).assign(auc_mean=0.7)
    md = to_markdown(ranking_section(summary, old))
    assert "| 1 | scratch | 0.100 |" in md and "| ft | mean over 12 | 1 |" in md
