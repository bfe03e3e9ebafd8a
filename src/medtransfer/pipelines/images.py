"""The 2-D image pipeline: binary, multi-class, multi-label and regression tasks on images with labels.

Data come through the registered 2-D sources and the decoded-image cache (:mod:`medtransfer.data`), runs through
:func:`medtransfer.training.run.train_run` and :func:`medtransfer.training.inference.evaluate_run`.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

import numpy as np

from medtransfer.config import Config, to_dict
from medtransfer.data.cache import cached_images
from medtransfer.data.dataset import ImageDataset
from medtransfer.data.sources.base import SourceOptions, load_dataset
from medtransfer.data.splits import Split, reseed_subsets
from medtransfer.errors import UserError
from medtransfer.evaluation.operating import describe
from medtransfer.models.backbones import check_backbone
from medtransfer.models.weights import create_model
from medtransfer.pipelines.base import PIPELINES, Pipeline
from medtransfer.tasks.base import TaskKind, metric_label
from medtransfer.training.inference import evaluate_run
from medtransfer.training.plan import RunPlan, plan_run, write_batch_grid
from medtransfer.training.run import Prepared, load_data, resolve_split, train_run

# Per process: the dataset and its decoded images, loaded once and shared by every trial the process runs (keyed
# by the data section without its split file), and each split file once.
_DATA: dict[str, tuple[ImageDataset, np.ndarray]] = {}
_SPLITS: dict[tuple[str, str], Split] = {}


class Images(Pipeline):
    name = "images"
    unit = "images"
    ranks_sources = True

    def preflight(self, cfg: Config) -> None:
        check_backbone(cfg.model.backbone, cfg.data.image_size)  # a misspelt backbone, or a size a ViT cannot take

    def load(self, cfg: Config) -> ImageDataset:
        return load_data(cfg)

    def split(self, cfg: Config, ds: ImageDataset, progress: bool = True) -> Split:
        return resolve_split(cfg, ds, progress)

    def reseed(self, base: Split, ds: ImageDataset, seed: int) -> Split:
        return reseed_subsets(base, ds, seed)

    def preflight_sources(self, cfg: Config, sources: dict[str, str], ds: ImageDataset) -> None:
        for name, source in sources.items():
            model_cfg = dataclasses.replace(cfg.model, source=source, in_chans=ds.channels)
            try:
                create_model(model_cfg, num_outputs=len(ds.label_names), image_size=cfg.data.image_size)
            except UserError as e:
                raise UserError(f"study source '{name}': {e}") from None

    def preflight_test(self, cfg: Any, ds: ImageDataset) -> None:
        t = cfg.study.test
        labels = tuple(cfg.data.labels) if cfg.data.labels else None
        options = SourceOptions(
            labels=labels, task=cfg.task, allow_outside=cfg.data.allow_outside, channels=cfg.data.channels
        )
        ext = load_dataset(t.path, t.format, options)
        if list(ext.label_names) != list(ds.label_names):
            raise UserError(f"study.test {t.path} has labels {list(ext.label_names)}, the study {list(ds.label_names)}")
        if ext.channels != ds.channels:
            raise UserError(f"study.test {t.path} has {ext.channels}-channel images, the study {ds.channels}")
        if t.split and ("source_split" not in ext.meta.columns or not (ext.meta["source_split"] == t.split).any()):
            raise UserError(f"study.test.split={t.split!r}: {t.path} has no such split")

    def warm(self, cfg: Config, ds: ImageDataset, progress: bool) -> None:
        cached_images(ds, cfg.data.image_size, cfg.data.cache_dir, progress=progress, resize=cfg.data.resize)

    def prepared(self, cfg: Config, split_file: str | Path) -> Prepared:
        key = repr(sorted({**to_dict(cfg.data), "split_file": None, "task": cfg.task}.items()))
        if key not in _DATA:
            ds = load_data(cfg)
            d = cfg.data
            _DATA[key] = (ds, cached_images(ds, d.image_size, d.cache_dir, progress=False, resize=d.resize))
        ds, images = _DATA[key]
        skey = (key, str(split_file))
        if skey not in _SPLITS:
            _SPLITS[skey] = self.read_split(split_file, ds)
        return Prepared(ds, _SPLITS[skey], images)

    def train(self, cfg: Config, out: str | Path, resume: bool = False, progress: bool = True, prepared=None) -> dict:
        return train_run(cfg, out, resume=resume, progress=progress, prepared=prepared)

    def evaluate(self, run: str | Path, data: str, out: str | Path, **options: Any) -> dict:
        return evaluate_run(run, data, out, **options)

    def constant_scores(self, kind: TaskKind, prepared: Prepared, n_train: int | None, test_labels) -> dict:
        labels, split = prepared.ds.labels, prepared.split
        train = labels[split.train_subset(n_train)]
        if test_labels is None:
            test_idx = split.indices("test")
            test_labels = labels[test_idx if len(test_idx) else split.indices("val")]
        return {
            "val": kind.constant_score(train, labels[split.indices("val")]),
            "test": kind.constant_score(train, test_labels),
        }

    def plan_run(self, cfg: Config, out: str | Path | None = None, timed: bool = True) -> RunPlan:
        return plan_run(cfg, out, timed)

    def write_batch_grid(self, cfg: Config, plan: RunPlan, path: str | Path) -> int:
        return write_batch_grid(cfg, plan, path)

    def summary(self, metrics: dict, command: str, out: Path) -> list[str]:
        m = metrics
        if command == "evaluate":
            lines = [*_note(m), f"{_score_text(m)} → {out}", *describe(m)]
            if m.get("calibration"):
                bins = m["calibration"]["ece_bins"]
                lines.append(f"Brier {m['brier']:.4f}, ECE {m['ece']:.4f} ({bins} equal-width probability bins)")
            return lines
        lines = [f"validation {_score_text(m['val'])}"]
        if m.get("split") == "test":
            lines += [f"test       {_score_text(m)}", *describe(m)]
        return lines


def _note(m: dict) -> list[str]:
    return [m["split_note"]] if m.get("split_note") else []


def _score_text(m: dict) -> str:
    """``AUC 0.9412 (95% CI …, n=…)``: the metrics' primary score (``metric``/``score``/``score_ci``; AUC in files
    written before those keys existed)."""
    metric = m.get("metric", "auc")
    value = m.get("score", m.get(metric, float("nan")))
    lo, hi = m.get("score_ci") or m.get(f"{metric}_ci") or (float("nan"), float("nan"))
    return f"{metric_label(metric)} {value:.4f} (95% CI {lo:.4f}–{hi:.4f}, n={m['n']})"


PIPELINES.register("images", Images())
