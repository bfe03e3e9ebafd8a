"""Run one trial of a study (in the driver or in a worker process) and return what the ledger records.

A network trial is an ordinary ``medtransfer train`` run folder (``trials/<arm>/n<N>-s<seed>/``) trained on the
seed's split file; a baseline trial writes ``metrics.json`` and ``predictions.csv`` into its folder the same way.
Every file is written atomically, and a trial whose folder already holds a finished result (the driver died
before recording it) returns that result instead of training again.
"""

from __future__ import annotations

import gc
import json
import logging
import math
import os
import resource
import shutil
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from medtransfer.baselines.base import get_baseline
from medtransfer.config import Config, apply_overrides, from_dict, replace, to_dict, write_run_info
from medtransfer.data.cache import cache_key, cached_images, default_cache_dir
from medtransfer.data.sources.base import SourceOptions, load_dataset
from medtransfer.errors import TrainingFailed
from medtransfer.evaluation.metrics import to_jsonable
from medtransfer.io import atomic_write_text
from medtransfer.pipelines.base import pipeline_for
from medtransfer.studies.config import StudyConfig
from medtransfer.studies.grid import Trial
from medtransfer.tasks.base import kind_names, kind_of_metric, task_kind
from medtransfer.training.inference import evaluate_run
from medtransfer.training.run import PREDICTIONS_FILE, write_predictions, write_status
from medtransfer.transfer.strategies import arm_transfer

log = logging.getLogger(__name__)

SPLITS_DIR = "splits"
EXTERNAL_PREDICTIONS = "predictions_external.csv"


@dataclass(frozen=True)
class StudyContext:
    """What a worker needs to run any trial of the study (picklable)."""

    cfg: StudyConfig
    study_dir: str
    sources: dict[str, str]  # the study's source names → ``model.source`` values

    def split_file(self, seed: int) -> Path:
        return Path(self.study_dir) / SPLITS_DIR / f"seed{seed}.csv"

    def train_config(self, trial: Trial) -> Config:
        """The plain train config of a network trial (the ``study`` section removed)."""
        data = {k: v for k, v in to_dict(self.cfg).items() if k != "study"}
        data["seed"] = trial.seed
        data["model"]["source"] = self.sources[trial.source]
        data["transfer"] = arm_transfer(data["transfer"], trial.strategy)  # its strategy's keys of the shared section
        data["train"]["n_train"] = trial.n_train
        data["data"]["split_file"] = str(self.split_file(trial.seed))
        data = apply_overrides(data, self.cfg.study.strategy_settings.get(trial.strategy, []))
        return from_dict(Config, data)


@dataclass
class TrialResult:
    trial_id: str
    ok: bool
    metrics: dict[str, Any]
    seconds: float
    error: str | None = None
    peak_rss_mb: float | None = None
    peak_gpu_mb: float | None = None


def prepared(ctx: StudyContext, seed: int):
    """The target data with the seed's split (2-D images: ``training.run.Prepared``), loaded once per process by
    the study's pipeline and shared by every trial the process runs."""
    cfg = ctx.cfg
    return pipeline_for(cfg.task).prepared(cfg, ctx.split_file(seed))


CRASH_ENV = "MEDTRANSFER_TEST_CRASH_TRIAL"


def run_trial(ctx: StudyContext, trial: Trial, progress: bool = False) -> TrialResult:
    """Run ``trial`` to completion; a failure (NaN loss, out of memory, bad data) becomes a failed result."""
    if os.environ.get(CRASH_ENV) == trial.id:  # fault injection for the tests: a worker dying mid-trial
        os._exit(70)
    t0 = time.perf_counter()
    folder = Path(ctx.study_dir) / trial.folder
    if torch.cuda.is_available():
        torch.cuda.reset_peak_memory_stats()
    try:
        done = _finished(folder)
        if done is not None and trial.kind == "net" and _needs_external(ctx, done):
            log.info("%s: trained in %s; scoring the study's test set", trial.id, folder)
            metrics = _score_external(ctx, folder, done)
        elif done is not None:
            log.info("%s: already finished in %s", trial.id, folder)
            metrics = done
        elif trial.kind == "net":
            try:
                metrics = _net_trial(ctx, trial, folder, progress)
            except (torch.OutOfMemoryError, MemoryError) as e:
                # Once: half the micro-batch with gradient accumulation keeps the effective batch and the schedule.
                accum = 2 * ctx.train_config(trial).train.grad_accum
                log.warning(
                    "%s ran out of memory (%s); retrying with train.grad_accum=%d",
                    trial.id,
                    str(e).splitlines()[0] if str(e) else type(e).__name__,
                    accum,
                )
                _free_memory()
                metrics = _net_trial(ctx, trial, folder, progress, grad_accum=accum)
                metrics["oom_retry"] = {"grad_accum": accum}
        else:
            metrics = _baseline_trial(ctx, trial, folder, progress)
        if "degenerate" not in metrics:
            metrics = mark_collapse(ctx, trial, folder, metrics)
        _drop_resume_state(folder)
        ok, error = True, None
    except TrainingFailed as e:
        metrics, ok, error = {}, False, str(e)
    except (torch.OutOfMemoryError, MemoryError) as e:
        metrics, ok, error = {}, False, f"out of memory: {str(e).splitlines()[0] if str(e) else type(e).__name__}"
    except Exception as e:  # noqa: BLE001 - one broken trial must not stop the study; the reason is recorded
        log.exception("%s failed", trial.id)
        metrics, ok, error = {}, False, f"{type(e).__name__}: {e}"
    gpu = torch.cuda.max_memory_allocated() / 2**20 if torch.cuda.is_available() else None
    return TrialResult(
        trial.id,
        ok,
        _ledger_metrics(metrics),
        time.perf_counter() - t0,
        error,
        resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,  # Linux: kB; the process's peak so far
        gpu,
    )


def mark_collapse(ctx: StudyContext, trial: Trial, folder: Path, metrics: dict) -> dict:
    """Add the constant predictor's scores (``constant``: val, test) and ``degenerate`` (the kind's
    :meth:`~medtransfer.tasks.base.TaskKind.collapse_reason`, or None) to a finished trial's metrics, in its
    ``metrics.json`` too, so a rebuilt ledger (``--repair``) keeps them."""
    if not metrics.get("metric"):
        return metrics
    name = metrics.get("task") or ctx.cfg.task
    kind = task_kind(name) if name else kind_of_metric(metrics["metric"])
    try:
        test = _external(ctx) if _has_external(ctx) else None
        constant = pipeline_for(ctx.cfg.task).constant_scores(
            kind, prepared(ctx, trial.seed), trial.n_train, None if test is None else test[0].labels[test[2]]
        )
    except Exception:  # noqa: BLE001 - a diagnostic; the trial's result stands without it
        log.warning("%s: could not score a constant predictor", trial.id, exc_info=True)
        constant = {"val": math.nan, "test": math.nan}
    metrics = {**metrics, "constant": constant}
    metrics["degenerate"] = kind.collapse_reason(metrics)
    if metrics["degenerate"]:
        log.warning("%s is degenerate: %s", trial.id, metrics["degenerate"])
    if (folder / "metrics.json").is_file():
        atomic_write_text(folder / "metrics.json", json.dumps(to_jsonable(metrics), indent=2))
    return metrics


def _finished(folder: Path) -> dict | None:
    status, metrics = folder / "status.json", folder / "metrics.json"
    if not (status.is_file() and metrics.is_file()):
        return None
    try:
        if json.loads(status.read_text()).get("status") != "done":
            return None
        return json.loads(metrics.read_text())
    except (json.JSONDecodeError, OSError):
        return None


RESUME_ONLY = ("checkpoint.pt", "best.safetensors")  # a finished trial keeps model.safetensors (the best epoch)


def _drop_resume_state(folder: Path) -> None:
    """Delete what only a resume of an unfinished trial needs: the last checkpoint (model and optimizer, ~4x the
    model's size) and the best-epoch weights, already copied to ``model.safetensors``. A 255-trial ResNet-18 study
    otherwise keeps ~45 GB."""
    for name in RESUME_ONLY:
        (folder / name).unlink(missing_ok=True)


def _free_memory() -> None:

    gc.collect()
    if torch.cuda.is_available():
        torch.cuda.empty_cache()


def _net_trial(ctx: StudyContext, trial: Trial, folder: Path, progress: bool, grad_accum: int | None = None) -> dict:

    cfg = ctx.train_config(trial)
    if grad_accum is not None:
        if cfg.train.batch_size % grad_accum:
            raise MemoryError(f"out of memory and train.batch_size={cfg.train.batch_size} cannot be halved further")
        cfg = replace(cfg, **{"train.grad_accum": grad_accum})
    resume = (folder / "checkpoint.pt").exists()
    if not resume and folder.exists():
        shutil.rmtree(folder)  # a trial stopped before its first checkpoint starts over in a clean folder
    pipe = pipeline_for(cfg.task)
    metrics = pipe.train(cfg, folder, resume=resume, progress=progress, prepared=prepared(ctx, trial.seed))
    return _score_external(ctx, folder, metrics)


def _has_external(ctx: StudyContext) -> bool:
    """The study scores its trials on an external test set (``study.test.path``)."""
    test = ctx.cfg.study.test
    return test is not None and bool(test.path)


def _needs_external(ctx: StudyContext, metrics: dict) -> bool:
    """A trained net trial of a study with an external test set whose test set was never scored (the training
    finished, then the scoring failed or was interrupted): scored on resume, not counted with its own split."""
    return _has_external(ctx) and metrics.get("split") != "external"


def _score_external(ctx: StudyContext, folder: Path, metrics: dict) -> dict:
    """The trial's metrics on the study's external test set (``study.test``), its own test split kept as
    ``own_test``; ``metrics`` unchanged when the study has none."""
    if not _needs_external(ctx, metrics):
        return metrics

    test = ctx.cfg.study.test
    external = evaluate_run(
        folder,
        test.path,
        folder / "metrics_external.json",
        format=test.format,
        split=test.split,
        predictions_out=folder / EXTERNAL_PREDICTIONS,
    )
    metrics = {
        **external,
        "split": "external",
        "own_test": {k: metrics.get(k) for k in ("metric", "score", "score_ci", "auc", "auc_ci", "n")},
        **{
            k: metrics[k]
            for k in ("val", "best_epoch", "epochs_run", "n_train", "seconds", "thresholds")
            if k in metrics
        },
    }
    atomic_write_text(folder / "metrics.json", json.dumps(to_jsonable(metrics), indent=2))
    return metrics


def _baseline_trial(ctx: StudyContext, trial: Trial, folder: Path, progress: bool) -> dict:
    """A baseline arm (``study.baselines``, any registered :class:`~medtransfer.baselines.base.Baseline`): its
    features of the trial's training subset and test images, fit, predict, and the task kind's metrics."""

    baseline = get_baseline(trial.strategy)
    t0 = time.perf_counter()
    cfg, study = ctx.cfg, ctx.cfg.study
    write_run_info(
        folder,
        {"baseline": baseline.name, "seed": trial.seed, "n_train": trial.n, "data": to_dict(cfg.data)},
        seed=trial.seed,
    )
    write_status(folder, "running")
    prep = prepared(ctx, trial.seed)
    ds, split = prep.ds, prep.split
    cache_dir = Path(cfg.data.cache_dir).expanduser() if cfg.data.cache_dir else default_cache_dir()
    train_idx = split.train_subset(trial.n_train)
    kind = task_kind(cfg.task or ds.task)

    def features(images, dataset, idx):
        key = cache_key(dataset, cfg.data.image_size)
        return baseline.features(images, idx, cache_dir, key, workers=study.radiomics_workers, progress=progress)

    x_train = features(prep.images, ds, train_idx)
    test_ds, test_images, test_idx, pred_file, split_name = _baseline_test_set(ctx, prep)
    x_test = features(test_images, test_ds, test_idx)
    fitted = baseline.fit(x_train, ds.labels[train_idx], kind.name, trial.seed)
    outputs = baseline.predict(fitted, x_test)
    thresholds = None  # the operating point, chosen on the validation split as a network's is
    val_idx = split.indices("val")
    if len(val_idx) and split_name != "val":
        val_outputs = baseline.predict(fitted, features(prep.images, ds, val_idx))
        thresholds = kind.choose_thresholds(ds.labels[val_idx], val_outputs, list(ds.label_names), cfg.eval.threshold)
    metrics = kind.summarize(
        test_ds.labels[test_idx],
        outputs,
        list(ds.label_names),
        patient_ids=test_ds.meta["patient_id"].to_numpy()[test_idx],
        thresholds=thresholds,
        seed=trial.seed,
    )
    metrics.update(
        {
            "thresholds": thresholds,
            "threshold_rule": cfg.eval.threshold if thresholds else None,
            "split": split_name,
            "task": kind.name,
            "n_train": int(len(train_idx)),
            "n_features": int(x_train.shape[1]),
            "model": baseline.describe(fitted),
            "seconds": time.perf_counter() - t0,
        }
    )
    write_predictions(folder / pred_file, test_ds, test_idx, outputs)
    atomic_write_text(folder / "metrics.json", json.dumps(to_jsonable(metrics), indent=2))
    write_status(folder, "done")
    return metrics


def _baseline_test_set(ctx: StudyContext, prep):
    """Where a baseline trial is scored: ``(dataset, images, indices, predictions file, split name)`` of the study's
    external test set, else of the split's test images, else (no test split) of its validation images."""
    if _has_external(ctx):
        test_ds, test_images, test_idx = _external(ctx)
        return test_ds, test_images, test_idx, EXTERNAL_PREDICTIONS, "external"
    split = prep.split
    test_idx = split.indices("test")
    if len(test_idx):
        return prep.ds, prep.images, test_idx, PREDICTIONS_FILE, "test"
    return prep.ds, prep.images, split.indices("val"), PREDICTIONS_FILE, "val"


# Per process: a study's external test set (dataset, decoded images, indices), loaded once.
_EXTERNAL: dict[str, tuple] = {}


def _external(ctx: StudyContext):
    """The study's external test set: (dataset, cached images, indices of its ``split``)."""

    test = ctx.cfg.study.test
    key = ctx.study_dir
    if key not in _EXTERNAL:
        labels = tuple(ctx.cfg.data.labels) if ctx.cfg.data.labels else None
        ds = load_dataset(
            test.path,
            test.format,
            SourceOptions(
                labels=labels,
                task=ctx.cfg.task,
                allow_outside=ctx.cfg.data.allow_outside,
                channels=ctx.cfg.data.channels,
            ),
        )
        images = cached_images(
            ds, ctx.cfg.data.image_size, ctx.cfg.data.cache_dir, progress=False, resize=ctx.cfg.data.resize
        )
        if test.split:
            if "source_split" not in ds.meta.columns:
                raise ValueError(f"study.test.split={test.split!r} but {test.path} defines no splits")
            idx = np.flatnonzero(ds.meta["source_split"].to_numpy() == test.split)
        else:
            idx = np.arange(len(ds))
        _EXTERNAL[key] = (ds, images, idx)
    return _EXTERNAL[key]


# What the ledger keeps of every trial's metrics; each task kind adds its own (TaskKind.ledger_keys).
LEDGER_KEYS = (
    "metric",
    "score",
    "score_ci",
    "n",
    "per_label",
    "split",
    "val",
    "best_epoch",
    "epochs_run",
    "n_train",
    "thresholds",
    "threshold_rule",
    "calibrated",
    "n_features",
    "model",
    "own_test",
    "task",
    "oom_retry",
    "constant",
    "degenerate",
)
VAL_KEYS = ("metric", "score", "score_ci", "n")  # of the validation metrics, with the kind's metric and its CI


def _ledger_metrics(metrics: dict) -> dict:
    """What the ledger keeps of a trial's metrics (the full file stays in the trial folder): :data:`LEDGER_KEYS`
    and the keys of the trial's task kind (of every kind when the metrics do not name theirs)."""
    named = metrics.get("task")
    kinds = [task_kind(named)] if named in kind_names() else [task_kind(n) for n in kind_names()]
    own = {k for kind in kinds for k in (*kind.ledger_keys, *_metric_keys(kind))}
    out = {k: v for k, v in metrics.items() if k in LEDGER_KEYS or k in own}
    if isinstance(out.get("val"), dict):
        keep = set(VAL_KEYS) | {k for kind in kinds for k in _metric_keys(kind)}
        out["val"] = {k: v for k, v in out["val"].items() if k in keep}
    return to_jsonable(out)


def _metric_keys(kind) -> tuple[str, ...]:
    return (kind.metric, f"{kind.metric}_ci") if kind.metric else ()
