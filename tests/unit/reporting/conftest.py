"""A tiny paired study: 3 arms × N {10, 20, all=40} × 2 seeds on one shared 60-image test set.

``cxr-ssl/recipe`` is built to be better than ``scratch/finetune``; ``radiomics`` is a flat baseline. Scores are
label × signal + noise, so AUCs rise with the signal. Predictions are shuffled per trial, so comparisons that
align rows by position instead of joining on ``image_id`` get wrong answers.
"""

from __future__ import annotations

import zlib
from dataclasses import dataclass

import numpy as np
import pandas as pd
import pytest

from medtransfer.evaluation.stats import bootstrap_auc_ci, rank_auc

N_TEST = 60
SIZES = (("10", 10), ("20", 20), ("all", 40))
SEEDS = (0, 1)
# Signal strength per arm and N: the pretrained recipe learns faster than scratch; radiomics is flat.
SIGNAL = {
    ("scratch/finetune", "10"): 0.2,
    ("scratch/finetune", "20"): 0.6,
    ("scratch/finetune", "all"): 1.6,
    ("cxr-ssl/recipe", "10"): 1.3,
    ("cxr-ssl/recipe", "20"): 1.8,
    ("cxr-ssl/recipe", "all"): 2.4,
    ("radiomics", "10"): 0.9,
    ("radiomics", "20"): 0.9,
    ("radiomics", "all"): 0.9,
}
ARMS = {
    "scratch/finetune": ("net", "scratch", "finetune"),
    "cxr-ssl/recipe": ("net", "cxr-ssl", "recipe"),
    "radiomics": ("baseline", None, None),
}
FAILED_ID = "scratch-finetune-n20-s1"
FAILED_ERROR = "RuntimeError: CUDA out of memory | tried to allocate *2* GiB <oom>"
PENDING_ID = "cxr-ssl-recipe-nall-s1"


@dataclass
class Study:
    """Trials and predictions, plus the fixture's constants (test modules cannot import conftest)."""

    trials: pd.DataFrame
    preds: dict[str, pd.DataFrame]
    failed_id: str = FAILED_ID
    failed_error: str = FAILED_ERROR
    pending_id: str = PENDING_ID

    def predictions(self, trial_id: str) -> pd.DataFrame | None:
        return self.preds.get(trial_id)


def make_study(labels: tuple[str, ...] = ("pneumonia",)) -> Study:
    """The fixture study; with several labels every label gets the same signal."""
    rng = np.random.default_rng(7)
    image_ids = [f"img{i:03d}" for i in range(N_TEST)]
    y = rng.integers(0, 2, size=(N_TEST, len(labels))).astype(float)
    y[:2, 0] = [0.0, 1.0]  # both classes present whatever the draw
    y[5, 0] = np.nan  # one unknown label: dropped from every AUC
    rows, preds = [], {}
    for arm, (kind, source, strategy) in ARMS.items():
        for n_label, n in SIZES:
            for seed in SEEDS:
                tid = f"{arm.replace('/', '-')}-n{n_label}-s{seed}"
                status = "failed" if tid == FAILED_ID else "pending" if tid == PENDING_ID else "done"
                row = {
                    "id": tid,
                    "arm": arm,
                    "kind": kind,
                    "source": source,
                    "strategy": strategy,
                    "n": n,
                    "n_label": n_label,
                    "seed": seed,
                    "status": status,
                    "seconds": np.nan,
                    "auc": np.nan,
                    "auc_ci_lo": np.nan,
                    "auc_ci_hi": np.nan,
                    "error": FAILED_ERROR if status == "failed" else None,
                    "metrics": {},
                }
                if status == "done":
                    trng = np.random.default_rng(zlib.crc32(tid.encode()))
                    scores = np.nan_to_num(y) * SIGNAL[arm, n_label] + trng.normal(size=y.shape)
                    per_label = {lab: {"auc": rank_auc(y[:, j], scores[:, j])} for j, lab in enumerate(labels)}
                    (lo, hi), _ = bootstrap_auc_ci(y, scores, n_boot=200, seed=seed)
                    auc = float(np.mean([v["auc"] for v in per_label.values()]))
                    row.update(seconds=float(trng.uniform(5, 50)), auc=auc, auc_ci_lo=lo, auc_ci_hi=hi)
                    row["metrics"] = {"auc": auc, "auc_ci": [lo, hi], "per_label": per_label}
                    frame = pd.DataFrame({"image_id": image_ids})
                    for j, lab in enumerate(labels):
                        frame[f"label:{lab}"] = y[:, j]
                        frame[f"score:{lab}"] = scores[:, j]
                    preds[tid] = frame.sample(frac=1.0, random_state=seed + n).reset_index(drop=True)
                rows.append(row)
    return Study(pd.DataFrame(rows), preds)


@pytest.fixture(scope="session")
def study() -> Study:
    return make_study()


@pytest.fixture(scope="session")
def study_factory():
    """``make_study(labels=...)`` for tests that need another label set."""
    return make_study


RANKING = {
    "method": "logme",
    "rows": [
        {"arm_source": "imagenet", "score": 0.4, "seconds": 2.5},
        {"arm_source": "cxr-ssl", "score": 1.3, "seconds": 4.0},
        {"arm_source": "scratch", "score": -0.2, "seconds": 0.1},
    ],
}
NOTES = "Pretraining on chest X-rays **helps** at small N.\n\n- scratch catches up at N=all\n- see `summary.csv`"


@pytest.fixture(scope="session")
def ranking() -> dict:
    return RANKING


@pytest.fixture(scope="session")
def notes_md() -> str:
    return NOTES


@pytest.fixture(scope="session")
def report(study, tmp_path_factory):
    """The report of the fixture study, written once for all tests that only read it."""
    from medtransfer.reporting import write_report

    out = tmp_path_factory.mktemp("report")
    paths = write_report(
        study.trials,
        out,
        predictions=study.predictions,
        ranking=RANKING,
        title="Fixture study",
        command="medtransfer study run study.yaml --set seeds=2",
        notes_md=NOTES,
    )
    return paths
