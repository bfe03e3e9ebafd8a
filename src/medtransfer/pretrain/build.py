"""``medtransfer pretrain``: build a source-model folder (``model.safetensors`` + ``source.yaml`` card).

* ``supervised``: the labelled data goes through :func:`~medtransfer.training.run.train_run` (same loop,
  progress, resume and failure handling as ``medtransfer train``); the best-validation weights (backbone and
  head, with the label names) become the source model, its test metrics the card's own metrics.
* ``simclr``: :func:`~medtransfer.pretrain.ssl.simclr_fit` on all images (labels, if any, are ignored), through
  the same :func:`~medtransfer.training.loop.fit` (bf16, ``grad_accum``, resume, progress); only the last epoch's
  backbone is saved; with ``pretrain.probe_data`` the card gets a linear-probe AUC.

The card holds what :func:`medtransfer.models.weights.resolve_weights` reads (name, backbone, in_chans, mean,
std, input_size, modality, site, method, label_names, description) plus data, training settings, date, metrics.
"""

from __future__ import annotations

import dataclasses
import datetime
import json
import time
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
from safetensors.torch import save_file

from medtransfer.config import PretrainConfig, dump_yaml, replace
from medtransfer.data.cache import cached_images
from medtransfer.data.sources.base import load_dataset
from medtransfer.errors import ConfigError
from medtransfer.evaluation.metrics import to_jsonable
from medtransfer.io import atomic_write
from medtransfer.models.backbones import build_model
from medtransfer.models.weights import CARD_FILE, SOURCE_WEIGHTS_FILE, create_model
from medtransfer.pretrain.features import frozen_features, probe_auc
from medtransfer.pretrain.ssl import simclr_fit
from medtransfer.tasks.base import task_kind
from medtransfer.training.checkpoint import load_weights_file
from medtransfer.training.run import load_data, pick_device, preflight, prepare, run_in_folder, train_run

METHODS = ("supervised", "simclr")


def pretrain_run(cfg: PretrainConfig, out_dir: str | Path, resume: bool = False, progress: bool = True) -> dict:
    """Build the source model ``cfg`` describes into ``out_dir``; returns the card (also in ``source.yaml``).

    Example:
        >>> cfg = load_config("examples/mednist_pretrain.yaml", cls=PretrainConfig)  # doctest: +SKIP
        >>> pretrain_run(cfg, "~/.cache/medtransfer/sources/mednist-sup")["metrics"]  # doctest: +SKIP
    """
    method = cfg.pretrain.method
    if method not in METHODS:
        raise ConfigError(f"pretrain.method '{method}' is unknown; use one of {list(METHODS)}")
    out = Path(out_dir).expanduser()
    _check_probe_data(cfg)
    if method == "supervised":
        return _supervised(cfg, out, resume, progress)
    return _simclr(cfg, out, resume, progress)


def _supervised(cfg: PretrainConfig, out: Path, resume: bool, progress: bool) -> dict:
    prep = prepare(cfg, progress)
    if not task_kind(cfg.task or prep.ds.task).probabilities:
        raise ConfigError(
            f"pretrain.method=supervised needs class labels but {prep.ds.name} has none ({prep.ds.task}); "
            "use pretrain.method=simclr"
        )
    m = train_run(cfg, out, resume=resume, progress=progress, prepared=prep)
    metrics = {
        "split": m.get("split"),
        "auc": m.get("auc"),
        "val_auc": m["val"].get("auc"),
        "best_epoch": m["best_epoch"],
        "epochs_run": m["epochs_run"],
    }
    if cfg.pretrain.probe_data:  # the same card line as a self-supervised source: comparable at a glance
        device = pick_device(cfg.train.device)
        model = build_model(
            cfg.model.backbone,
            len(m["label_names"]),
            m["in_chans"],
            cfg.model.dropout,
            cfg.model.groups,
            cfg.data.image_size,
        )
        load_weights_file(out / "model.safetensors", model)
        model.normalization = m["normalization"]
        metrics["probe"] = probe_metrics(model.to(device), cfg, device, progress)
    info = {"n_train": m["n_train"], "label_names": m["label_names"], "task": m["task"], "seconds": m["seconds"]}
    return write_card(cfg, out, len(prep.ds), m["in_chans"], m["normalization"], metrics, info)


def _simclr(cfg: PretrainConfig, out: Path, resume: bool, progress: bool) -> dict:
    def setup():  # names and data, checked before the folder is touched (run_in_folder's rule)
        preflight(cfg)
        ds = load_data(cfg)
        images = cached_images(ds, cfg.data.image_size, cfg.data.cache_dir, progress=progress, resize=cfg.data.resize)
        return ds, images

    card: dict = {}

    def train(out: Path, state) -> dict:
        t0 = time.perf_counter()
        ds, images = state
        idx = np.arange(len(ds))
        if cfg.train.n_train is not None:
            idx = np.random.default_rng(cfg.seed).permutation(len(ds))[: cfg.train.n_train]
        torch.manual_seed(cfg.seed)
        device = pick_device(cfg.train.device)
        model_cfg = dataclasses.replace(cfg.model, in_chans=ds.channels)
        model, _ = create_model(model_cfg, num_outputs=1, image_size=cfg.data.image_size)
        model.to(device)
        fit = simclr_fit(model, images, idx, cfg, out, device, progress)
        pd.DataFrame(fit["history"]).to_csv(out / "history.csv", index=False)
        metrics: dict[str, Any] = {
            "final_loss": fit["history"][-1]["train_loss"] if fit["history"] else None,
            "epochs_run": fit["epochs_run"],
        }
        if cfg.pretrain.probe_data:
            metrics["probe"] = probe_metrics(model, cfg, device, progress)
        backbone = {f"backbone.{k}": v for k, v in model.backbone.state_dict().items()}
        save_state(out / SOURCE_WEIGHTS_FILE, backbone)
        info = {"n_train": int(len(idx)), "label_names": None, "task": None, "seconds": time.perf_counter() - t0}
        card.update(write_card(cfg, out, len(ds), ds.channels, model.normalization, metrics, info))
        return metrics

    run_in_folder(cfg, out, resume, train, setup)
    return card


def _check_probe_data(cfg: PretrainConfig) -> None:
    """``pretrain.probe_data`` is read after training: open it now, so a wrong path fails before hours of work."""
    if not cfg.pretrain.probe_data:
        return
    probe = load_dataset(cfg.pretrain.probe_data)
    if not task_kind(probe.task).probabilities:
        raise ConfigError(f"pretrain.probe_data {cfg.pretrain.probe_data} has no labels; a linear probe needs them")


def probe_metrics(model, cfg: PretrainConfig, device, progress: bool) -> dict:
    """Linear-probe AUC of the frozen backbone on ``pretrain.probe_data``: fit on its train split, scored on its
    validation split (a source is a choice made on validation data; test splits stay untouched), or on its test split
    when it has no validation split."""
    probe_cfg = replace(
        cfg,
        **{
            "data.path": cfg.pretrain.probe_data,
            "data.format": None,
            "data.labels": None,
            "data.classes": None,
            "data.split_file": None,
            "data.split_fractions": [0.7, 0.1, 0.2],  # the probe set's default split, whatever the source used
            "task": None,
        },
    )
    prep = prepare(probe_cfg, progress)
    train, test = prep.split.indices("train"), prep.split.indices("val")
    split = "val"
    if len(test) == 0:
        test, split = prep.split.indices("test"), "test"
    y = prep.ds.labels
    auc = probe_auc(
        frozen_features(model, prep.images, train, device),
        y[train],
        frozen_features(model, prep.images, test, device),
        y[test],
        prep.ds.task,
        cfg.seed,
    )
    return {
        "data": cfg.pretrain.probe_data,
        "auc": auc,
        "split": split,
        "n_train": int(len(train)),
        "n_test": int(len(test)),
    }


def save_state(path: Path, state: dict[str, torch.Tensor]) -> None:
    state = {k: v.detach().cpu().contiguous() for k, v in state.items()}
    atomic_write(path, lambda tmp: save_file(state, str(tmp), metadata={"format": "medtransfer-source"}))


def write_card(
    cfg: PretrainConfig,
    out: Path,
    n_images: int,
    in_chans: int,
    normalization: dict,
    metrics: dict,
    info: dict,
) -> dict:
    """Write ``source.yaml`` into ``out`` (beside ``model.safetensors``) and return it."""
    p, t = cfg.pretrain, cfg.train
    size = cfg.data.image_size
    card = {
        "name": p.name or out.name,
        "backbone": cfg.model.backbone,
        "in_chans": int(in_chans),
        "input_size": [int(in_chans), size, size],
        "mean": [float(v) for v in normalization["mean"]],
        "std": [float(v) for v in normalization["std"]],
        "modality": p.modality,
        "site": p.site,
        "method": p.method,
        "label_names": info.get("label_names"),
        "description": p.description or f"{p.method} pretraining on {cfg.data.path}",
        "data": {
            "path": cfg.data.path,
            "format": cfg.data.format,
            "description": p.description,
            "n_images": int(n_images),
            "n_train": int(info["n_train"]),
            "task": info.get("task"),
        },
        "training": {
            "epochs": t.epochs,
            "batch_size": t.batch_size,
            "lr": t.lr,
            "weight_decay": t.weight_decay,
            "seed": cfg.seed,
            "init": cfg.model.source,
            "augment": t.augment,
            **(
                {"temperature": p.temperature, "projection_dim": p.projection_dim}
                if p.method == "simclr"
                else {"strategy": cfg.transfer.strategy}
            ),
            "seconds": round(float(info["seconds"]), 1),
        },
        "date": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
        "metrics": to_jsonable(metrics),
    }
    dump_yaml(json.loads(json.dumps(card, default=str)), out / CARD_FILE)
    return card
