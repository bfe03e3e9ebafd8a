"""One training run end to end: data → split → cache → model + weights → strategy → fit → metrics.

A run directory holds ``config.yaml`` (resolved), ``run_info.json`` (versions, seed), ``split.csv``,
``model.safetensors`` (best validation epoch), ``history.csv``, ``metrics.json``, ``predictions.csv`` (per-image
scores on the test split, or validation without one), ``status.json`` and the last ``checkpoint.pt`` (for
``--resume``).
"""

from __future__ import annotations

import dataclasses
import json
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch

from medtransfer.config import Config, write_run_info
from medtransfer.data.cache import cached_images
from medtransfer.data.dataset import ImageDataset
from medtransfer.data.sources.base import SourceOptions, load_dataset
from medtransfer.data.splits import Split, load_split, make_split
from medtransfer.data.transforms import RadiographAugment
from medtransfer.errors import ConfigError, DataError, TrainingFailed
from medtransfer.evaluation.metrics import to_jsonable
from medtransfer.io import MARKERS, atomic_write, atomic_write_text, check_output_folder, entries, remove_new_entries
from medtransfer.models.backbones import check_backbone
from medtransfer.models.weights import create_model, resolve_weights
from medtransfer.tasks.base import task_kind
from medtransfer.training.batches import Batches
from medtransfer.training.checkpoint import load_checkpoint, save_weights
from medtransfer.training.device import maybe_compile
from medtransfer.training.fitting import fit_best
from medtransfer.training.loop import predict, raw_logits
from medtransfer.training.tasks import Task, make_task
from medtransfer.transfer.strategies import build_strategy

log = logging.getLogger(__name__)


def pick_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise ConfigError(f"train.device={name} but no CUDA device is available; use auto or cpu")
    return torch.device(name)


def load_data(cfg: Config) -> ImageDataset:
    """The dataset a config names (``data.path`` / ``data.format`` and the source options)."""
    d = cfg.data
    opts = SourceOptions(
        labels=tuple(d.labels) if d.labels else None,
        classes=tuple(d.classes) if d.classes else None,
        image_column=d.image_column,
        patient_column=d.patient_column,
        task=cfg.task,
        allow_outside=d.allow_outside,
        channels=d.channels,
    )
    return load_dataset(d.require_path(), d.format, opts)


def resolve_split(cfg: Config, ds: ImageDataset, progress: bool = True, keep_hashes: bool = True) -> Split:
    """The split file ``data.split_file``, or a split made with the run's seed (duplicate groups kept together with
    ``data.dedupe``: the images are hashed once per dataset and the table kept beside the decoded-image cache, unless
    ``keep_hashes`` is False: a dry run writes nothing)."""
    if cfg.data.split_file:
        return load_split(cfg.data.split_file, ds)
    d = cfg.data
    return make_split(
        ds,
        d.split_fractions,
        seed=cfg.seed,
        use_source_splits=d.use_source_splits,
        dedupe=d.dedupe,
        cache_dir=d.cache_dir,
        progress=progress,
        keep_hashes=keep_hashes,
    )


@dataclass
class Prepared:
    """Everything a run needs that depends only on data (shared by the arms of a study)."""

    ds: ImageDataset
    split: Split
    images: np.ndarray  # uint8 cache (N, C, S, S)


def prepare(cfg: Config, progress: bool = True) -> Prepared:
    ds = load_data(cfg)
    split = load_split(cfg.data.split_file, ds) if cfg.data.split_file else None  # a bad split file fails first
    images = cached_images(ds, cfg.data.image_size, cfg.data.cache_dir, progress=progress, resize=cfg.data.resize)
    if split is None:  # after the cache: building it hashed the images, so the split decodes nothing again
        split = resolve_split(cfg, ds, progress)
    return Prepared(ds, split, images)


def _batches(prep: Prepared, idx, cfg: Config, model, device, train: bool) -> Batches:
    t = cfg.train
    kind = task_kind(cfg.task or prep.ds.task)
    aug = RadiographAugment.for_training(t.hflip, t.zoom, kind) if (train and t.augment) else None
    norm = model.normalization
    # evaluation needs no gradients: larger batches cost little memory and are much faster on CPU
    return Batches(
        prep.images,
        prep.ds.labels,
        idx,
        t.batch_size if train else max(t.batch_size, 256),
        norm["mean"],
        norm["std"],
        device,
        augment=aug,
        shuffle=train,
        drop_last=train,
    )


def evaluate_indices(
    model, task: Task, prep: Prepared, idx: np.ndarray, cfg: Config, device, thresholds: list[float] | None = None
) -> tuple[dict, np.ndarray]:
    """Metrics and scores of ``model`` on ``idx``, with ``eval.tta`` test-time augmentation."""
    aug = RadiographAugment.for_training(cfg.train.hflip, cfg.train.zoom, task.kind)
    scores = predict(model, task, _batches(prep, idx, cfg, model, device, train=False), cfg.eval.tta, aug)
    labels = prep.ds.labels[idx]
    metrics = task.kind.summarize(
        labels,
        scores,
        list(prep.ds.label_names),
        patient_ids=prep.ds.meta["patient_id"].to_numpy()[idx],
        thresholds=thresholds,
        seed=cfg.seed,
    )
    return metrics, scores


def train_run(
    cfg: Config, out_dir: str | Path, resume: bool = False, progress: bool = True, prepared: Prepared | None = None
) -> dict:
    """Train and evaluate one configuration; returns the metrics written to ``metrics.json``.

    Everything that can be checked is checked before the folder is touched: ``--out`` / ``--resume`` (see
    :func:`check_out`), the names in the config (backbone, weights source, strategy) and the data (read and cached).

    Example:
        >>> cfg = load_config("examples/pneumonia_train.yaml", ["data.path=pneumonia.npz"])  # doctest: +SKIP
        >>> train_run(cfg, "runs/pneumonia")["val"]["auc"]                                  # doctest: +SKIP
    """

    def setup() -> Prepared:
        preflight(cfg)
        prep = prepared or prepare(cfg, progress)
        check_task(cfg, prep)
        return prep

    return run_in_folder(cfg, out_dir, resume, lambda out, prep: _train(cfg, out, prep, progress), setup)


RUN_MARKER = MARKERS["run"]  # written into every run folder: what --out and --resume recognise


def is_run_folder(out: Path) -> bool:
    """A folder written by ``train`` / ``pretrain`` (its marker; ``status.json`` for runs made before markers)."""
    return (out / RUN_MARKER).is_file() or (out / "status.json").is_file()


def check_out(out_dir: str | Path, resume: bool) -> None:
    """The ``--out`` / ``--resume`` rules of a run (:func:`medtransfer.io.check_output_folder`), and for ``resume``
    an unfinished run with a readable ``checkpoint.pt``: all checked before anything is read or written."""
    out = Path(out_dir)
    check_output_folder(out, resume, out.is_dir() and is_run_folder(out), "run")
    if not resume:
        return
    if _read_status(out) == "done":
        raise ConfigError(f"--resume: {out} is a finished run; nothing to resume (train into another --out)")
    if not (out / "checkpoint.pt").is_file():
        raise ConfigError(
            f"--resume: {out} has no checkpoint.pt (it stopped before its first epoch ended); train into a new --out"
        )
    # read here although fit reads it again: an unreadable or unsafe file must fail before status.json says running
    load_checkpoint(out / "checkpoint.pt")


def _read_status(out: Path) -> str | None:
    try:
        return json.loads((out / "status.json").read_text()).get("status")
    except (OSError, ValueError, AttributeError):
        return None


def check_task(cfg: Config, prep: Prepared) -> None:
    """The task kind fits the labels and the settings (a constant regression target, ``train.balance`` on a
    continuous target, ``train.loss`` on a classifier ...): checked before the run folder is made."""
    kind = task_kind(cfg.task or prep.ds.task)
    kind.check_labels(prep.ds.labels, prep.ds.label_names)
    if len(prep.split.indices("val")) == 0:
        raise DataError("the validation split is empty; adjust data.split_fractions")
    if cfg.train.balance and not kind.probabilities:
        raise ConfigError(f"train.balance draws equal numbers per class; task {kind.name} has no classes")
    if cfg.eval.calibrate and not kind.probabilities:
        raise ConfigError(f"eval.calibrate calibrates probabilities; task {kind.name} has none (set it to null)")
    if cfg.model.in_chans not in (None, prep.ds.channels):
        raise ConfigError(f"model.in_chans={cfg.model.in_chans} but the images have {prep.ds.channels} channel(s)")
    train_idx = prep.split.train_subset(cfg.train.n_train)
    make_task(kind.name, prep.ds.labels[train_idx], cfg.train.pos_weight, cfg.train.loss)


def preflight(cfg: Config) -> None:
    """Resolve every name of a classification config (backbone, weights source, strategy) without building or
    loading anything large."""

    check_backbone(cfg.model.backbone, cfg.data.image_size)
    resolve_weights(cfg.model.source, cfg.model.backbone)
    build_strategy(cfg.transfer, cfg.train)


def run_in_folder(
    cfg: Config,
    out_dir: str | Path,
    resume: bool,
    train: Callable[[Path, Any], dict],
    setup: Callable[[], Any] = lambda: None,
) -> dict:
    """The life of a run folder: check ``--out`` / ``--resume`` (:func:`check_out`), run ``setup()`` (names, data:
    whatever can fail on bad input) before anything is written, then write the marker, resolved config and status,
    call ``train(out, setup_result)``, mark a :class:`TrainingFailed` run failed, and write ``metrics.json`` (with
    ``seconds``) and the final status. Classification and segmentation runs share it.

    When ``train`` fails before its first checkpoint, what this call wrote is removed again: a folder it created is
    deleted, a folder that existed is left as it was. A run that failed later keeps its folder, to be resumed."""
    out = Path(out_dir)
    check_out(out, resume)
    state = setup()
    before = entries(out)
    t0 = time.perf_counter()
    out.mkdir(parents=True, exist_ok=True)
    try:
        atomic_write_text(out / RUN_MARKER, json.dumps({"kind": "run", "task": cfg.task}))
        write_run_info(out, cfg, seed=cfg.seed)
        write_status(out, "running")
        metrics = train(out, state)
    except TrainingFailed as e:
        write_status(out, "failed", str(e))
        raise
    except BaseException:
        if not resume and not (out / "checkpoint.pt").exists():
            remove_new_entries(out, before)
        raise
    metrics["seconds"] = time.perf_counter() - t0
    atomic_write_text(out / "metrics.json", json.dumps(to_jsonable(metrics), indent=2))
    write_status(out, "done")
    return metrics


def _train(cfg: Config, out: Path, prep: Prepared, progress: bool) -> dict:
    torch.manual_seed(cfg.seed)  # model initialisation
    ds, split = prep.ds, prep.split
    kind = cfg.task or ds.task
    train_idx = split.train_subset(cfg.train.n_train, balance_labels=ds.labels if cfg.train.balance else None)
    val_idx, test_idx = split.indices("val"), split.indices("test")
    split.save(out / "split.csv")
    task = make_task(kind, ds.labels[train_idx], cfg.train.pos_weight, cfg.train.loss)
    device = pick_device(cfg.train.device)
    task = task.to(device)  # once, not a blocking host → device copy inside every loss
    model_cfg = dataclasses.replace(cfg.model, in_chans=ds.channels)
    model, report = create_model(model_cfg, task.num_outputs, list(ds.label_names), cfg.data.image_size)
    log.info("weights: %s", report.summary())
    # channels_last helps oneDNN convolutions on CPU too (measured ~2x for a ResNet-18 forward here)
    model.to(device, memory_format=torch.channels_last)
    if cfg.train.compile:
        maybe_compile(model, device)
    train = _batches(prep, train_idx, cfg, model, device, train=True)
    val = _batches(prep, val_idx, cfg, model, device, train=False)
    state, strategy = fit_best(cfg, out, model, task, train, val, device, progress)
    if cfg.eval.calibrate == "temperature":  # fitted on validation, stored with the model (task_state)
        t = task.calibrate(
            raw_logits(model, _batches(prep, val_idx, cfg, model, device, train=False)), ds.labels[val_idx]
        )
        log.info("temperature scaling on the validation split: T = %.3f", t)
    save_weights(out / "model.safetensors", model, metadata=model_card(cfg, kind, ds, model, task))
    val_metrics, val_scores = evaluate_indices(model, task, prep, val_idx, cfg, device)
    thresholds = task.kind.choose_thresholds(ds.labels[val_idx], val_scores, list(ds.label_names), cfg.eval.threshold)
    if len(test_idx):
        metrics, test_scores = evaluate_indices(model, task, prep, test_idx, cfg, device, thresholds)
        metrics["split"] = "test"
        write_predictions(out / PREDICTIONS_FILE, prep.ds, test_idx, test_scores)
    else:
        metrics = {**val_metrics, "split": "val"}
        write_predictions(out / PREDICTIONS_FILE, prep.ds, val_idx, val_scores)
    val_metrics["tta"] = cfg.eval.tta
    metrics.update(
        {
            "val": val_metrics,
            "tta": cfg.eval.tta,
            "strategy": strategy.settings(),
            "calibrated": {"method": cfg.eval.calibrate, **task.state()} if cfg.eval.calibrate else None,
            "best_epoch": state.best_epoch,
            "epochs_run": state.epoch,
            "n_train": int(len(train_idx)),
            "thresholds": thresholds,
            "threshold_rule": cfg.eval.threshold if thresholds else None,
            "task": kind,
            "label_names": list(ds.label_names),
            "in_chans": ds.channels,
            "normalization": model.normalization,
        }
    )
    return metrics


PREDICTIONS_FILE = "predictions.csv"


def write_predictions(path: Path, ds: ImageDataset, idx: np.ndarray, scores: np.ndarray) -> pd.DataFrame:
    """Per-image scores of the evaluated split (``image_id, patient_id, label:<name>, score:<name>``): what
    paired tests between models on the same images (DeLong) need."""

    table = ds.meta.iloc[idx][["image_id", "patient_id"]].reset_index(drop=True)
    for k, name in enumerate(ds.label_names):
        table[f"label:{name}"] = ds.labels[idx, k]
        table[f"score:{name}"] = scores[:, k]
    atomic_write(path, lambda tmp: table.to_csv(tmp, index=False))
    return table


def model_card(cfg: Config, kind: str, ds: ImageDataset, model, task=None) -> dict[str, str]:
    """What a trained model file must carry to be used alone (safetensors metadata: strings only); ``task_state``
    is what the task kind needs to turn outputs into predictions (a regression target's scale)."""
    return {
        "backbone": cfg.model.backbone,
        "task": kind,
        "task_state": json.dumps(task.state() if task is not None else {}),
        "label_names": json.dumps(list(ds.label_names)),
        "in_chans": str(ds.channels),
        "image_size": json.dumps(cfg.data.image_size),
        "normalization": json.dumps(model.normalization),
        "dropout": str(cfg.model.dropout),
    }


def write_status(out: Path, status: str, error: str | None = None) -> None:
    atomic_write_text(out / "status.json", json.dumps({"status": status, "error": error}))
