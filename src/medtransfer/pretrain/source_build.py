"""``medtransfer sources build``: a source model from the user's own images, with the settings we measured, written
into the catalogue as one folder that appears whole.

The recipes (:data:`RECIPES`) are the one place the defaults live; ``--set`` and the command's options override them:

* ``simclr`` (the default): self-supervised SimCLR on any images, labels ignored; the settings of
  ``examples/sources/cxr_ssl.yaml`` (NT-Xent temperature 0.2, projection 128, AdamW lr 1e-3, weight decay 1e-4,
  batch 128, 8 epochs, 64 px, resnet18 from scratch). ``train.n_train: 8000`` caps the images per epoch: a random
  8,000 of a larger archive (all of a smaller one). 8,000 × 8 epochs is the budget measured for a linear probe
  >= 0.95 AUC on PneumoniaMNIST val from MedNIST CXR (8 to 17 min on 2 CPU cores for resnet18 at 64 px); more
  images per epoch cost time in proportion (``--set train.n_train=null`` uses them all).
* ``supervised`` (``--supervised``): supervised training on the archive's labels through the training run; the
  settings of ``examples/sources/mednist_all.yaml`` (lr 3e-3, batch 128, dropout 0.2, from scratch,
  ``train.n_train: 20000``) except 8 epochs and a 80/10/10 split: MedNIST's 2 epochs and 94/2/4 split fit its
  6 separable classes and 59k images, not a general archive (``examples/build_sources.sh`` sets them back).

:func:`build_source` checks everything that can be checked (the name, the target folder, the config, the data and
its labels) before anything is written, trains into a hidden ``.<name>.partial`` folder beside the target (the
catalogue lists no dot-folders) and renames it onto the target when the card is written: a catalogue folder is
either absent or complete. An interrupted build stays in the hidden folder; ``--resume`` continues it.
"""

from __future__ import annotations

import json
import logging
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd
import yaml

from medtransfer.config import PretrainConfig, apply_overrides, from_dict
from medtransfer.errors import ConfigError
from medtransfer.models.catalogue import BUILTINS
from medtransfer.models.weights import CARD_FILE, SOURCE_WEIGHTS_FILE, sources_dir
from medtransfer.tasks.base import task_kind

log = logging.getLogger(__name__)

PARTIAL_SUFFIX = ".partial"
_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]*")

RECIPES: dict[str, dict[str, Any]] = {
    "simclr": {  # examples/sources/cxr_ssl.yaml without its data
        "seed": 0,
        "data": {"image_size": 64},
        "model": {"backbone": "resnet18", "source": "scratch"},
        "train": {"n_train": 8000, "epochs": 8, "batch_size": 128, "lr": 1e-3, "weight_decay": 1e-4},
        "pretrain": {"method": "simclr", "temperature": 0.2, "projection_dim": 128},
    },
    "supervised": {  # examples/sources/mednist_all.yaml without its data, 8 epochs, an 80/10/10 split
        "seed": 0,
        "data": {"image_size": 64, "split_fractions": [0.8, 0.1, 0.1]},
        "model": {"backbone": "resnet18", "source": "scratch", "dropout": 0.2},
        "transfer": {"strategy": "scratch"},
        "train": {"n_train": 20000, "epochs": 8, "batch_size": 128, "lr": 3e-3},
        "pretrain": {"method": "supervised"},
    },
}


@dataclass(frozen=True)
class Built:
    """What :func:`build_source` did: ``status`` is ``built``, ``resumed`` or ``exists`` (already built)."""

    card: dict
    folder: Path
    status: str


def check_name(name: str) -> str:
    """A catalogue name is a plain folder name that is not a built-in source."""
    if not _NAME.fullmatch(name or ""):
        raise ConfigError(
            f"--name {name!r}: a source name is one folder name (letters, digits, '.', '_', '-'; not starting "
            "with '.' or '-'), e.g. cxr-ssl"
        )
    if name in BUILTINS:
        raise ConfigError(f"--name {name!r} is a built-in source; choose another name")
    return name


def build_config(
    data: str,
    name: str,
    *,
    supervised: bool = False,
    labels: tuple[str, ...] | None = None,
    format: str | None = None,
    backbone: str | None = None,
    image_size: int | None = None,
    modality: str | None = None,
    site: str | None = None,
    description: str | None = None,
    device: str | None = None,
    overrides: list[str] | tuple[str, ...] = (),
) -> PretrainConfig:
    """The recipe's config with ``--set`` overrides applied, then the command's options (they win, as on ``train``).

    Example:
        >>> build_config("images/", "my-ssl").train.epochs
        8
    """
    method = "supervised" if supervised else "simclr"
    options = {
        "data.path": data,
        "data.format": format,
        "data.labels": list(labels) if labels else None,
        "data.image_size": image_size,
        "model.backbone": backbone,
        "train.device": device,
        "pretrain.method": method,
        "pretrain.name": name,
        "pretrain.modality": modality,
        "pretrain.site": site,
        "pretrain.description": description,
    }
    extra = [f"{k}={json.dumps(v)}" for k, v in options.items() if v is not None]
    return from_dict(PretrainConfig, apply_overrides(RECIPES[method], [*overrides, *extra]))


def default_target(name: str, folder: str | Path | None = None) -> Path:
    """``<catalogue>/<name>``: the folder ``model.source=<name>`` finds (see :func:`sources_dir`)."""
    return sources_dir(folder) / check_name(name)


def partial_folder(target: Path) -> Path:
    """Where the build of ``target`` runs until it is complete: a hidden folder beside it."""
    return target.parent / f".{target.name}{PARTIAL_SUFFIX}"


def _read_card(folder: Path) -> dict:
    return yaml.safe_load((folder / CARD_FILE).read_text())


def _is_source(folder: Path) -> bool:
    return (folder / CARD_FILE).is_file() and (folder / SOURCE_WEIGHTS_FILE).is_file()


def build_source(cfg: PretrainConfig, target: str | Path, resume: bool = False, progress: bool = True) -> Built:
    """Build the source ``cfg`` describes into ``target`` (a new folder), atomically; see the module docstring.

    ``resume``: a finished ``target`` is kept (status ``exists``), an interrupted build is continued from its last
    checkpoint, and otherwise a new build starts: the same command line can be rerun until it has succeeded.

    Example:
        >>> cfg = build_config("~/xrays", "my-ssl", site="chest", modality="x-ray")  # doctest: +SKIP
        >>> build_source(cfg, default_target("my-ssl")).folder                        # doctest: +SKIP
        PosixPath('/home/me/.cache/medtransfer/sources/my-ssl')
    """
    # deferred: the training stack adds seconds to torch, and `sources list` imports this module (partial_builds)
    from medtransfer.pretrain.build import pretrain_run
    from medtransfer.training.run import load_data, preflight

    target = Path(target).expanduser()
    name = cfg.pretrain.name or target.name
    partial = partial_folder(target)
    if target.exists() or target.is_symlink():
        if _is_source(target) and resume:
            log.info("source '%s' is already built in %s; nothing to do", name, target)
            return Built(_read_card(target), target, "exists")
        if _is_source(target):
            raise ConfigError(
                f"source '{name}' already exists: {target}; choose another --name, delete that folder, or pass "
                "--resume to keep it (nothing was written)"
            )
        raise ConfigError(f"{target} exists and is not a built source; choose another --name or --out")
    resume_partial = False
    if partial.exists():
        if not resume:
            raise ConfigError(
                f"an interrupted build of '{name}' is in {partial}: pass --resume to continue it, or delete that "
                "folder to start again (nothing was written)"
            )
        if _is_source(partial):  # trained and carded, but stopped before the rename
            os.rename(partial, target)
            return Built(_read_card(target), target, "resumed")
        if not (partial / "checkpoint.pt").is_file():
            raise ConfigError(
                f"the interrupted build in {partial} stopped before its first checkpoint: nothing to resume; "
                "delete that folder and run again"
            )
        resume_partial = True

    # pretrain_run checks the names and reads the data before its first write; labels are checked here first, to
    # say which option gives them
    if cfg.pretrain.method == "supervised":
        preflight(cfg)
        _check_supervised(cfg, load_data(cfg))

    created = [p for p in [target.parent, *target.parent.parents] if not p.exists()]
    try:
        card = pretrain_run(cfg, partial, resume=resume_partial, progress=progress)
    except BaseException:
        for folder in created:  # a catalogue folder this call made and left empty goes again
            if folder.is_dir() and not any(folder.iterdir()):
                folder.rmdir()
        raise
    if target.exists():
        raise ConfigError(f"{target} appeared while '{name}' was built; the source stays in {partial}")
    os.rename(partial, target)  # same folder: atomic; the card inside names the source, not its path
    return Built(card, target, "resumed" if resume_partial else "built")


def _check_supervised(cfg: PretrainConfig, ds) -> None:
    if task_kind(cfg.task or ds.task).probabilities:
        return
    columns = ""
    if ds.info.get("csv"):  # a folder+CSV without label columns: say which columns it has
        header = [str(c) for c in pd.read_csv(ds.info["csv"], nrows=0).columns]
        columns = f" (the columns of {Path(ds.info['csv']).name}: {header})"
    raise ConfigError(
        f"--supervised needs class labels but {cfg.data.path} has none ({ds.task}); name the label column with "
        f"--labels COL{columns}, or drop --supervised to build a self-supervised (SimCLR) source"
    )


def partial_builds(folder: Path) -> list[str]:
    """Names of the interrupted builds in a catalogue folder (``--resume`` continues them)."""
    if not folder.is_dir():
        return []
    return sorted(
        p.name[1 : -len(PARTIAL_SUFFIX)]
        for p in folder.iterdir()
        if p.is_dir() and p.name.startswith(".") and p.name.endswith(PARTIAL_SUFFIX)
    )
