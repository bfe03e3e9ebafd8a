"""Use a finished run on other data: ``medtransfer evaluate`` and ``medtransfer predict``.

Everything needed is read from the run folder: ``model.safetensors`` carries backbone, task, label names,
channels, image size and normalisation in its metadata; ``metrics.json`` the thresholds chosen on validation;
``config.yaml`` the data options.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
from safetensors import safe_open

from medtransfer.config import Config, load_config
from medtransfer.data.cache import cached_images
from medtransfer.data.dataset import ImageDataset
from medtransfer.data.sources.base import SourceOptions, load_dataset
from medtransfer.data.splits import SPLIT_NAMES, SplitMismatch, load_split
from medtransfer.data.transforms import RadiographAugment
from medtransfer.errors import DataError, UserError
from medtransfer.evaluation.metrics import to_jsonable
from medtransfer.io import atomic_write, atomic_write_text
from medtransfer.models.backbones import build_model
from medtransfer.tasks.base import task_kind
from medtransfer.training.batches import Batches
from medtransfer.training.checkpoint import load_weights_file
from medtransfer.training.loop import predict
from medtransfer.training.run import pick_device, write_predictions

log = logging.getLogger(__name__)


@dataclass
class TrainedModel:
    model: torch.nn.Module
    task: Any  # the task kind's runtime object (loss, scores, kind)
    cfg: Config
    label_names: list[str]
    in_chans: int
    image_size: int | None
    thresholds: dict[str, float] | None
    run_dir: Path


def load_run(run_dir: str | Path) -> TrainedModel:
    run = Path(run_dir)
    weights = run / "model.safetensors"
    if not weights.is_file():
        raise UserError(f"{run} has no model.safetensors; is it a finished `medtransfer train` run folder?")
    cfg = load_config(run / "config.yaml")
    with safe_open(str(weights), "pt") as f:
        meta = f.metadata() or {}
    try:
        labels = json.loads(meta["label_names"])
        in_chans, task = int(meta["in_chans"]), meta["task"]
        image_size = json.loads(meta["image_size"])
        norm = json.loads(meta["normalization"])
    except KeyError as e:
        raise UserError(f"{weights} lacks metadata {e}; it was not written by `medtransfer train`") from None
    backbone, size = meta.get("backbone", cfg.model.backbone), image_size if isinstance(image_size, int) else None
    model = build_model(backbone, len(labels), in_chans, cfg.model.dropout, img_size=size)
    load_weights_file(weights, model)
    model.normalization = norm
    thresholds = None
    if (run / "metrics.json").is_file():
        thresholds = json.loads((run / "metrics.json").read_text()).get("thresholds")
    runtime = task_kind(task).restore(len(labels), json.loads(meta.get("task_state") or "{}"))
    return TrainedModel(model, runtime, cfg, labels, in_chans, image_size, thresholds, run)


def _load_target(
    tm: TrainedModel,
    data: str,
    format: str | None,
    labels: list[str] | None,
    with_labels: bool = True,
    allow_outside: bool = False,
    patient_column: str | None = None,
) -> ImageDataset:
    d = tm.cfg.data
    same = str(Path(data).expanduser().resolve()) == str(Path(d.path).expanduser().resolve()) if d.path else False
    run_labels = tuple(d.labels) if (d.labels and with_labels) else None
    opts = SourceOptions(
        labels=tuple(labels) if labels else run_labels,
        classes=tuple(d.classes) if (d.classes and same) else None,
        image_column=d.image_column if same else None,
        patient_column=patient_column or (d.patient_column if same else None),
        allow_outside=allow_outside or d.allow_outside,
        channels=tm.in_chans if tm.in_chans in (1, 3) else None,  # new images are read with the model's channels
    )
    ds = load_dataset(data, format, opts)
    if ds.channels != tm.in_chans:
        raise DataError(f"{data} has {ds.channels}-channel images but the model was trained on {tm.in_chans}")
    return ds


ALL = "all"


def _own_split(tm: TrainedModel, ds: ImageDataset):
    """``(split, None)``: the run's own split when it was made for these images (the data it was trained on); else
    ``(None, why)``, ``why`` the first mismatch found (``None`` when the run has no split file)."""
    mismatch: SplitMismatch | None = None
    for cand in (tm.run_dir / "split.csv", Path(tm.cfg.data.split_file or "")):
        if cand.is_file():
            try:
                return load_split(cand, ds), None
            except SplitMismatch as e:
                mismatch = mismatch or e
    return None, mismatch


def _select(
    tm: TrainedModel, ds: ImageDataset, data: str, split: str | None, split_file: str | Path | None = None
) -> tuple[np.ndarray, str, str | None]:
    """The images of ``split`` in ``data`` and the split's name, with a note for the user when the choice was not
    spelled out: from ``split_file`` when given; else from the run's own split when it was made for these images
    (the data it was trained on); else from the split that comes with the file (MedMNIST ``test``); else an error.
    A split file is never applied to other images, even when their ids match.

    No ``split``: the run's own data is scored on its test split (validation when it has none), never on the images
    it trained on; other data is scored whole. ``all`` scores every image, with a warning when some trained the
    model."""
    if split is not None and split not in (*SPLIT_NAMES, ALL):
        raise UserError(f"--split must be one of {[*SPLIT_NAMES, ALL]}, got '{split}'")
    if split is None or split == ALL:
        own, _ = _own_split(tm, ds)
        if own is None:
            return np.arange(len(ds)), ALL, None
        if split == ALL:
            n_train = len(own.indices("train"))
            note = (
                f"warning: --split all scores every image of the run's own data, the {n_train} it was trained on "
                "included: the score is optimistic and is not an estimate of performance on new images"
            )
            log.warning(note)
            return np.arange(len(ds)), ALL, note
        name = "test" if len(own.indices("test")) else "val"
        idx = own.indices(name)
        note = (
            f"{data} is the run's own data: scoring its {name} split ({len(idx)} images), not the images it was "
            "trained on (--split all scores every image)"
        )
        return idx, name, note
    if split_file is not None:  # the caller named the file: its errors are the answer, no fallback
        if not Path(split_file).is_file():
            raise UserError(f"split file {split_file} does not exist")
        return load_split(Path(split_file), ds).indices(split), split, None
    own, mismatch = _own_split(tm, ds)
    if own is not None:
        return own.indices(split), split, None
    if "source_split" in ds.meta.columns and (ds.meta["source_split"] == split).any():
        idx = np.flatnonzero(ds.meta["source_split"].to_numpy() == split)
        log.info(
            "%s is not the run's training data: scoring the file's own '%s' split (%d images)", data, split, len(idx)
        )
        return idx, split, None
    reason = f": {mismatch}" if mismatch else ""
    raise UserError(
        f"{data} has no '{split}' split of its own and the run's split does not apply to it{reason}. "
        "Drop --split to score all its images, or pass --split-file"
    )


def check_labels(tm: TrainedModel, ds: ImageDataset, data: str) -> None:
    """Refuse ``ds`` when its labels are not the model's (``--labels`` selects matching columns); a one-label kind
    (binary, one regression target) scores any one-label file of the same kind, with a notice."""
    one_label = len(tm.label_names) == len(ds.label_names) == 1 and tm.task.kind.name == ds.task
    if list(ds.label_names) != tm.label_names and one_label:
        log.warning(
            "%s calls its one label '%s'; the model predicts '%s': scoring it as that label",
            data,
            ds.label_names[0],
            tm.label_names[0],
        )
    elif list(ds.label_names) != tm.label_names:
        raise DataError(
            f"{data} has labels {list(ds.label_names)} but the model predicts {tm.label_names}; "
            "pass --labels to select matching columns"
        )


def _scores(tm: TrainedModel, ds: ImageDataset, idx: np.ndarray, tta: int, device_name: str = "auto") -> np.ndarray:
    if len(idx) == 0:
        raise UserError("no images selected")
    images = cached_images(ds, tm.image_size, tm.cfg.data.cache_dir, resize=tm.cfg.data.resize)
    device = pick_device(device_name)
    tm.model.to(device)
    batches = Batches(
        images,
        np.zeros((len(ds), len(tm.label_names)), np.float32),
        idx,
        256,
        tm.model.normalization["mean"],
        tm.model.normalization["std"],
        device,
    )
    augment = RadiographAugment.for_training(tm.cfg.train.hflip, tm.cfg.train.zoom, tm.task.kind)
    return predict(tm.model, tm.task, batches, tta, augment)


def _tta(tm: TrainedModel, tta: int | None) -> int:
    """``--tta`` when given, else the run's ``eval.tta``."""
    if tta is not None and tta < 0:
        raise UserError(f"--tta must be >= 0, got {tta}")
    return tm.cfg.eval.tta if tta is None else tta


def evaluate_run(
    run_dir: str | Path,
    data: str,
    out: str | Path,
    format: str | None = None,
    split: str | None = None,
    labels: list[str] | None = None,
    predictions_out: str | Path | None = None,
    split_file: str | Path | None = None,
    tta: int | None = None,
    allow_outside: bool = False,
    patient_column: str | None = None,
    device: str = "auto",
) -> dict:
    """Metrics of a trained run on ``data`` (AUC with bootstrap CI; thresholds from the run's validation);
    with ``predictions_out`` also the per-image scores (``image_id, patient_id, label:<name>, score:<name>``).
    ``tta``: test-time augmented views (default: the run's ``eval.tta``)."""
    tm = load_run(run_dir)
    tta = _tta(tm, tta)
    ds = _load_target(tm, data, format, labels, allow_outside=allow_outside, patient_column=patient_column)
    check_labels(tm, ds, data)
    idx, split_name, note = _select(tm, ds, data, split, split_file)
    scores = _scores(tm, ds, idx, tta, device)
    metrics = tm.task.kind.summarize(
        ds.labels[idx],
        scores,
        tm.label_names,
        patient_ids=ds.meta["patient_id"].to_numpy()[idx],
        thresholds=tm.thresholds,
    )
    metrics.update({"data": str(data), "split": split_name, "run": str(run_dir), "tta": tta})
    if tm.thresholds:
        metrics["threshold_rule"] = tm.cfg.eval.threshold  # chosen on the run's validation split
    if note:
        metrics["split_note"] = note
    if predictions_out is not None:
        write_predictions(Path(predictions_out), ds, idx, scores)
    atomic_write_text(out, json.dumps(to_jsonable(metrics), indent=2))
    return metrics


def predict_run(
    run_dir: str | Path,
    data: str,
    out: str | Path,
    format: str | None = None,
    tta: int | None = None,
    allow_outside: bool = False,
    labels: list[str] | None = None,
    device: str = "auto",
) -> pd.DataFrame:
    """Per-image probabilities of a trained run on ``data`` (labels in the data are not needed); ``tta``:
    test-time augmented views (default: the run's ``eval.tta``)."""
    tm = load_run(run_dir)
    tta = _tta(tm, tta)
    ds = _load_target(tm, data, format, labels, with_labels=False, allow_outside=allow_outside)
    scores = _scores(tm, ds, np.arange(len(ds)), tta, device)
    table = ds.meta[["image_id", "patient_id"]].copy()
    for k, column in enumerate(tm.task.kind.prediction_columns(tm.label_names)):
        table[column] = scores[:, k]
    atomic_write(out, lambda tmp: table.to_csv(tmp, index=False))
    return table
