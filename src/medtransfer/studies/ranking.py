"""The transferability ranking a study computes before its trials: LogME (and, for classification, a CV linear
probe) of every source on the target's training pool, into ``ranking.json`` for the report."""

from __future__ import annotations

import json
import logging
import time
from pathlib import Path

from medtransfer.io import atomic_write_text
from medtransfer.studies.grid import source_label
from medtransfer.studies.trial import StudyContext

log = logging.getLogger(__name__)

RANKING_FILE = "ranking.json"


def rank_for_report(ctx: StudyContext, out: Path, progress: bool) -> dict:
    """LogME (and a CV linear probe) of every source on the target's training pool → ``ranking.json``.

    A failure is recorded in the file and logged; it never stops the study.
    """
    from medtransfer.pretrain.rank import Target, score_source
    from medtransfer.studies.trial import prepared

    cfg = ctx.cfg
    t0 = time.perf_counter()
    try:
        prep = prepared(ctx, cfg.study.seeds[0])
        idx = prep.split.train_subset(None)
        target = Target(
            "study",
            prep.images,
            prep.ds.labels,
            idx,
            cfg.task or prep.ds.task,
            prep.ds.channels,
            cfg.model.backbone,
            cfg.seed,
        )
        rows = []
        for name, source in ctx.sources.items():
            r = score_source(name, source, target)
            rows.append(
                {
                    "arm_source": source_label(name),
                    "source": source,
                    "score": r.logme,
                    "probe_auc": r.probe_auc,
                    "seconds": r.seconds,
                }
            )
            log.info("ranking: %s LogME %.4f (%.1f s)", name, r.logme, r.seconds)
        result = {"method": "logme", "n_images": int(len(idx)), "rows": rows}
    except Exception as e:  # noqa: BLE001 - the ranking is a report section, not a reason to stop the study
        log.warning("transferability ranking failed: %s", e)
        result = {"method": "logme", "error": f"{type(e).__name__}: {e}", "rows": []}
    result["seconds"] = time.perf_counter() - t0
    atomic_write_text(out / RANKING_FILE, json.dumps(result, indent=2))
    return result
