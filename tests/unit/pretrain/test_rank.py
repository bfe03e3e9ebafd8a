"""LogME against the evidence it maximises, and a ranking where one source is built to transfer better."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import yaml

from medtransfer.config import PretrainConfig, from_dict
from medtransfer.errors import UserError
from medtransfer.pretrain import features as features_mod
from medtransfer.pretrain.build import pretrain_run
from medtransfer.pretrain.rank import (
    load_target,
    logme,
    logme_evidence,
    rank_sources,
    score_features,
    score_source,
    source_features,
)


def direct_evidence(f, y, alpha, beta) -> float:
    """log N(y | 0, I/beta + F F^T / alpha) / n: Bayesian linear regression with w ~ N(0, I/alpha)."""
    n = len(y)
    cov = np.eye(n) / beta + f @ f.T / alpha
    _, logdet = np.linalg.slogdet(cov)
    return float(-0.5 * (logdet + y @ np.linalg.solve(cov, y) + n * np.log(2 * np.pi)) / n)


def test_logme_reaches_the_maximum_evidence():
    rng = np.random.default_rng(0)
    f = rng.normal(size=(60, 5))
    y = f @ rng.normal(size=5) + 0.5 * rng.normal(size=60)
    grid = max(direct_evidence(f, y, a, b) for a in np.logspace(-3, 3, 31) for b in np.logspace(-3, 3, 31))
    assert logme_evidence(f, y) == pytest.approx(grid, abs=0.02)
    assert logme_evidence(f, y) >= grid - 1e-6


def test_logme_prefers_features_that_explain_the_labels():
    rng = np.random.default_rng(1)
    y = (rng.random(120) < 0.5).astype(float)
    good = np.c_[y + 0.3 * rng.normal(size=120), rng.normal(size=(120, 7))]
    bad = rng.normal(size=(120, 8))
    assert logme(good, y[:, None], "binary") > logme(bad, y[:, None], "binary")
    partial = np.where(rng.random(120) < 0.2, np.nan, y)[:, None]  # NaN rows are left out
    assert np.isfinite(logme(good, partial, "multilabel"))
    onehot = np.eye(2)[y.astype(int)]
    assert logme(good, onehot, "multiclass") > logme(bad, onehot, "multiclass")


@pytest.fixture(scope="module")
def setting(tmp_path_factory):
    """A catalogue with a source pretrained on the target's task (site) and a target config (other seed)."""
    root = tmp_path_factory.mktemp("rank")
    cfg = from_dict(
        PretrainConfig,
        {
            "seed": 0,
            "data": {"path": "synthetic:both,n=64,seed=10", "image_size": 32, "cache_dir": str(root / "c")},
            "model": {"backbone": "tiny"},
            "train": {"epochs": 2, "batch_size": 16, "lr": 0.01},
        },
    )
    pretrain_run(cfg, root / "sources" / "site-sup", progress=False)
    target = root / "target.yaml"
    target.write_text(
        yaml.safe_dump(
            {
                "seed": 3,
                "model": {"backbone": "tiny"},
                "data": {"path": "synthetic:both,n=64,seed=3", "image_size": 32, "cache_dir": str(root / "c")},
            }
        )
    )
    return root / "sources", target


def test_the_source_pretrained_on_the_task_ranks_first(setting):
    sources, target = setting
    rows = rank_sources(str(target), ["scratch", "site-sup"], sources)
    assert [r.name for r in rows] == ["site-sup", "scratch"]
    assert rows[0].logme > rows[1].logme + 0.2  # ~0.8 apart over several seeds
    assert all(0.0 <= r.probe_auc <= 1.0 and r.seconds > 0 for r in rows)


def test_bad_source_name_fails_before_any_work(setting):
    sources, _ = setting
    with pytest.raises(UserError, match="did you mean 'site-sup'"):
        rank_sources("does-not-matter.yaml", ["scratch", "site-sp"], sources)


def test_logme_ranks_features_for_a_regression_target():
    """LogME is defined for regression: features that carry the target score higher than noise."""
    from medtransfer.pretrain.rank import logme

    rng = np.random.default_rng(0)
    y = rng.uniform(1, 18, size=(300, 1))
    informative = np.hstack([y + rng.normal(0, 0.5, y.shape), rng.normal(size=(300, 7))])
    noise = rng.normal(size=(300, 8))
    assert logme(informative, y, "regression") > logme(noise, y, "regression")


def test_score_source_is_features_once_then_scores_on_any_subset(setting):
    """score_source = source_features + score_features; a subset of the rows scores as features of the subset."""
    from medtransfer.models.catalogue import lookup

    sources, target = setting
    tgt = load_target(str(target))
    src = lookup("site-sup", sources)
    row = score_source("site-sup", src, tgt)
    feats = source_features(src, tgt)
    labels = tgt.labels[tgt.indices]
    assert feats.shape[0] == len(tgt.indices)
    assert score_features(feats, labels, tgt.task, seed=tgt.seed) == pytest.approx((row.logme, row.probe_auc))
    half = np.arange(len(tgt.indices) // 2)
    sub = source_features(src, dataclasses.replace(tgt, indices=tgt.indices[half]))
    assert score_features(feats[half], labels[half], tgt.task) == pytest.approx(
        score_features(sub, labels[half], tgt.task)
    )


def test_score_features_where_the_probe_is_undefined(monkeypatch):
    """Too few images of a class, a regression target, no images: a NaN probe AUC, never an error."""
    rng = np.random.default_rng(0)
    score, auc = score_features(rng.normal(size=(3, 4)), np.array([[0.0], [1.0], [1.0]]), "binary")
    assert np.isfinite(score) and np.isnan(auc)
    score, auc = score_features(rng.normal(size=(30, 4)), rng.normal(size=(30, 1)), "regression")
    assert np.isfinite(score) and np.isnan(auc)
    assert all(np.isnan(score_features(np.zeros((0, 4)), np.zeros((0, 1)), "binary")))
    y = (np.arange(40) % 2).astype(float)[:, None]

    def refuses(*args, **kwargs):
        raise ValueError("n_splits=3 cannot be greater than the number of members in each class")

    monkeypatch.setattr(features_mod, "cv_probe_auc", refuses)
    score, auc = score_features(np.c_[y, rng.normal(size=(40, 3))], y, "binary")
    assert np.isfinite(score) and np.isnan(auc)
