"""The transferability ranking a study computes before its trials: LogME (and, for classification, a CV linear
probe) of every source into ``ranking.json`` for the report.

A user with N labels ranks with those N labels, so the scores are computed at every training-set size of the study
(``study.n``), on the first seed's subset of that size: the same images the arms of that size train on. Each
source's frozen features are extracted once, over the whole training pool, and scored on each subset.

``ranking.json``::

    {"method": "logme", "n_images": <pool size>, "seconds": ...,
     "rows": [{"arm_source", "source", "score", "probe_auc", "seconds"}, ...],       # the whole pool
     "by_n": [{"n_label": "50", "n": 50, "n_images": 50,
               "rows": [{"arm_source", "source", "score", "probe_auc"}, ...]}, ...]}  # one per size, small first

A score that cannot be computed (the probe AUC with too few images of a class) is ``null``. Files written before
``by_n`` existed hold ``rows`` only; the report reads both.
"""

from __future__ import annotations

import json
import logging
import math
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from medtransfer.io import atomic_write_text
from medtransfer.pretrain import rank  # rank.source_features etc.: looked up per call (tests replace them)
from medtransfer.studies.config import source_label
from medtransfer.studies.grid import resolve_sizes
from medtransfer.studies.trial import StudyContext, prepared

log = logging.getLogger(__name__)

RANKING_FILE = "ranking.json"


def finite_or_none(x: float) -> float | None:
    """``x`` as a JSON number, or ``None`` (``null``) where it is NaN or infinite.

    Example:
        >>> finite_or_none(0.5), finite_or_none(float("nan"))
        (0.5, None)
    """
    return float(x) if x is not None and math.isfinite(x) else None


def pool_positions(pool: np.ndarray, subset: np.ndarray) -> np.ndarray:
    """Positions in the (non-empty) ``pool`` of the dataset indices ``subset``, which must all lie in the pool.

    Example:
        >>> pool_positions(np.array([7, 3, 9, 1]), np.array([9, 7])).tolist()
        [2, 0]
    """
    order = np.argsort(pool, kind="stable")
    pos = order[np.minimum(np.searchsorted(pool, subset, sorter=order), len(pool) - 1)]
    if not np.array_equal(pool[pos], subset):
        raise ValueError("a training subset holds images outside the training pool")
    return pos


@dataclass(frozen=True)
class Level:
    """One training-set size of the study: its label ('50' … 'all'), size, and its images as positions in the pool."""

    n_label: str
    n: int
    positions: np.ndarray


def ranking_levels(split, study_n: list[int | str], balance_labels: np.ndarray | None = None) -> list[Level]:
    """Every size of ``study_n``, small first, with the images the arms of that size train on.

    ``split`` is the first seed's :class:`~medtransfer.data.splits.Split`; the pool is its whole training split in
    rank order (``train_subset(None)``). A size's subset is the one a trial of that size trains on
    (:attr:`~medtransfer.studies.grid.Trial.n_train`: ``None`` for 'all'), balanced when ``balance_labels`` is given
    (``train.balance``).
    """
    pool = split.train_subset(None)
    levels = []
    for label, n in resolve_sizes(list(study_n), len(pool)):
        subset = split.train_subset(None if label == "all" else n, balance_labels=balance_labels)
        levels.append(Level(label, int(n), pool_positions(pool, subset)))
    return levels


def score_levels(
    features: np.ndarray,
    labels: np.ndarray,
    task: str,
    seed: int,
    levels: list[Level],
    pool_scores: tuple[float, float],
) -> list[tuple[float, float]]:
    """``(LogME, probe AUC)`` at each level: the pool's ``features``/``labels`` restricted to its positions.

    A level that is the whole pool reuses ``pool_scores`` rather than scoring the same images again.
    """
    return [
        pool_scores
        if len(lv.positions) == len(features)
        else rank.score_features(features[lv.positions], labels[lv.positions], task, seed=seed)
        for lv in levels
    ]


def rank_for_report(ctx: StudyContext, out: Path, progress: bool) -> dict:
    """LogME (and a CV linear probe) of every source on the target's training pool and at every size of the study
    → ``ranking.json`` (layout in the module docstring).

    A failure is recorded in the file and logged; it never stops the study.
    """
    cfg = ctx.cfg
    t0 = time.perf_counter()
    try:
        prep = prepared(ctx, cfg.study.seeds[0])
        idx = prep.split.train_subset(None)
        balance = prep.ds.labels if cfg.train.balance else None
        levels = ranking_levels(prep.split, list(cfg.study.n), balance)
        target = rank.Target(
            "study",
            prep.images,
            prep.ds.labels,
            idx,
            cfg.task or prep.ds.task,
            prep.ds.channels,
            cfg.model.backbone,
            cfg.seed,
        )
        labels = prep.ds.labels[idx]
        rows: list[dict] = []
        level_rows: list[list[dict]] = [[] for _ in levels]
        for name, source in ctx.sources.items():
            t_source = time.perf_counter()
            feats = rank.source_features(source, target)  # once per source; every size scores a subset of its rows
            score, auc = rank.score_features(feats, labels, target.task, seed=target.seed)
            per_level = score_levels(feats, labels, target.task, target.seed, levels, (score, auc))
            seconds = time.perf_counter() - t_source
            arm = {"arm_source": source_label(name), "source": source}
            rows.append({**arm, "score": finite_or_none(score), "probe_auc": finite_or_none(auc), "seconds": seconds})
            for bucket, (s, a) in zip(level_rows, per_level, strict=True):
                bucket.append({**arm, "score": finite_or_none(s), "probe_auc": finite_or_none(a)})
            at_n = ", ".join(f"N={lv.n_label} {s:.4f}" for lv, (s, _) in zip(levels, per_level, strict=True))
            log.info("ranking: %s LogME %.4f (%s; %.1f s)", name, score, at_n, seconds)
        by_n = [
            {"n_label": lv.n_label, "n": lv.n, "n_images": int(len(lv.positions)), "rows": bucket}
            for lv, bucket in zip(levels, level_rows, strict=True)
        ]
        result = {"method": "logme", "n_images": int(len(idx)), "rows": rows, "by_n": by_n}
    except Exception as e:  # noqa: BLE001 - the ranking is a report section, not a reason to stop the study
        log.warning("transferability ranking failed: %s", e)
        result = {"method": "logme", "error": f"{type(e).__name__}: {e}", "rows": []}
    result["seconds"] = time.perf_counter() - t0
    atomic_write_text(out / RANKING_FILE, json.dumps(result, indent=2))
    return result
