"""``medtransfer sources import``: an encoder the user already has, checked and written into the catalogue.

``PATH`` is a timm checkpoint file (``.safetensors``, or a ``.pth``/``.bin``/``.pt`` state dict as
``torch.save(model.state_dict())`` writes it) or a timm Hugging Face folder (``config.json`` naming the timm
architecture, with its ``pretrained_cfg``, + ``model.safetensors`` or ``pytorch_model.bin``, as timm's
``save_for_hf`` / ``push_to_hub`` write it: a DINOv2 ViT, a ConvNeXt ...). The architecture is ``--backbone``, else
the folder's ``config.json``, else the backbone a ``medtransfer train`` file records.

:func:`import_source` reads the weights through the one loader (:mod:`medtransfer.models.weights`: safetensors or
``torch.load(weights_only=True)``, never unpickling; every key and shape checked, the classifier dropped) into the
backbone built at the weights' own channels and input size, so a file that does not fit fails here, before anything
is written. The backbone tensors are stored unchanged (no input-conv or position-embedding adaptation: that happens
for each target when the source is used) as ``model.safetensors`` with a ``source.yaml`` card (architecture,
channels, input size, mean/std, where the weights came from and their sha256), written in a hidden folder beside the
target and renamed onto it: a catalogue folder is either absent or complete.

Example:
    >>> imported = import_source("~/encoders/dinov2-small", "dinov2-s")  # doctest: +SKIP
    >>> imported.card["backbone"], imported.folder.name                  # doctest: +SKIP
    ('vit_small_patch14_dinov2', 'dinov2-s')
"""

from __future__ import annotations

import datetime
import hashlib
import math
import os
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml
from safetensors import safe_open
from safetensors.torch import save_file
from timm.models import get_pretrained_cfg

from medtransfer.errors import ConfigError, UserError
from medtransfer.models.backbones import backbone_info, build_model
from medtransfer.models.weights import (
    CARD_FILE,
    HF_CONFIG,
    NO_CLASSIFIER,
    SOURCE_WEIGHTS_FILE,
    WEIGHT_SUFFIXES,
    LoadReport,
    WeightsSpec,
    load_weights,
    read_hf_config,
    read_state_dict,
    resolve_weights,
    sources_dir,
)
from medtransfer.pretrain.source_build import check_name

IMPORT_SUFFIX = ".import"


@dataclass(frozen=True)
class Imported:
    """What :func:`import_source` wrote: the card, the catalogue folder, and what loading the weights did."""

    card: dict
    folder: Path
    report: LoadReport


def import_source(
    path: str | Path,
    name: str,
    backbone: str | None = None,
    folder: str | Path | None = None,
    force: bool = False,
    modality: str | None = None,
    site: str | None = None,
    description: str | None = None,
) -> Imported:
    """Check that the weights at ``path`` load into ``backbone``, then write them into the catalogue as ``name``.

    Args:
        path: a weights file or a timm Hugging Face folder (see the module docstring).
        name: the catalogue name (``model.source: NAME``).
        backbone: the timm architecture; ``None``: the folder's ``config.json`` (or a training file's metadata).
        folder: the catalogue folder (:func:`~medtransfer.models.weights.sources_dir`).
        force: replace an existing source of that name.
        modality, site, description: for the card.

    Raises:
        UserError: a missing file, an unknown or mismatched architecture, weights that do not fit it, a checkpoint
            that only unpickling could read, or an existing ``name`` without ``force``; nothing is written then.
    """
    check_name(name)
    src = Path(path).expanduser().resolve()
    target = sources_dir(folder) / name
    if target.exists() or target.is_symlink():
        if not target.is_dir():
            raise ConfigError(f"{target} exists and is not a folder; choose another --name")
        if not force:
            raise ConfigError(
                f"source '{name}' already exists: {target}; choose another --name, or pass --force to replace it "
                "(nothing was written)"
            )
    arch = _architecture(src, backbone, target)
    spec = resolve_weights(str(src), arch)  # an unknown architecture fails here, with close matches
    state = _backbone_state(spec, arch)
    size = int(spec.input_size[-1]) if spec.input_size else None  # None: timm's default for a fixed-size family
    model = build_model(arch, num_outputs=1, in_chans=_in_chans(spec, state, arch), img_size=size)
    report = load_weights(model, spec)  # the strict check: every backbone key, every shape
    keys = model.backbone.state_dict().keys()
    kept = {k: v for k, v in state.items() if k in keys}  # the file's own tensors, not the adapted ones
    card = _card(name, arch, src, spec, model, state, report, modality, site, description)
    return Imported(_write(kept, card, target, force), target, report)


def _architecture(src: Path, backbone: str | None, target: Path) -> str:
    """``--backbone``, else what the folder or file says the architecture is."""
    if not src.exists():
        raise UserError(
            f"{src} does not exist: give a weights file ({', '.join(WEIGHT_SUFFIXES)}) or a timm Hugging Face folder "
            f"({HF_CONFIG} + model.safetensors)"
        )
    if src.is_dir():
        if (src / CARD_FILE).is_file():
            raise UserError(f"{src} is a source-model folder already: copy it to {target} to use it by name")
        if not (src / HF_CONFIG).is_file():
            raise UserError(
                f"{src} is a folder without {HF_CONFIG}: give a timm Hugging Face folder ({HF_CONFIG} naming the timm "
                "architecture + model.safetensors, as timm's save_for_hf writes it) or a weights file"
            )
        found = str(read_hf_config(src)["architecture"]).partition(".")[0]
        if backbone and backbone != found:
            raise UserError(
                f"--backbone {backbone} but {src / HF_CONFIG} names the architecture '{found}': drop --backbone, "
                f"or pass --backbone {found}"
            )
        return found
    if backbone:
        return backbone
    if src.suffix.lower() == ".safetensors":  # a `medtransfer train` file records its backbone
        try:
            with safe_open(str(src), "pt") as f:
                recorded = (f.metadata() or {}).get("backbone")
        except Exception:  # a damaged file: the loader says so below, with the file's name
            recorded = None
        if recorded:
            return str(recorded)
    raise UserError(f"{src} is a bare state dict that does not name its architecture: pass --backbone TIMM_NAME")


def _backbone_state(spec: WeightsSpec, arch: str) -> dict:
    """The file's tensors with timm's keys (our Classifier's mapped back), the classifier dropped."""
    classifier = spec.classifier or _default_cfg(arch).get("classifier") or "fc"
    state = read_state_dict(spec.path, classifier=classifier)
    return {k: v for k, v in state.items() if not k.startswith(classifier + ".")}


def _default_cfg(arch: str) -> dict[str, Any]:
    info = backbone_info(arch)
    if info.timm_name is None:  # tiny: its cfg lives on the module
        return dict(info.create(1).pretrained_cfg)
    cfg = get_pretrained_cfg(info.timm_name)
    return cfg.to_dict() if cfg is not None else {}


def _in_chans(spec: WeightsSpec, state: dict, arch: str) -> int:
    """The weights' own input channels: their first conv's, else what the folder says, else 3."""
    first = spec.first_conv or _default_cfg(arch).get("first_conv")
    weight = state.get(f"{first}.weight")
    if weight is not None and weight.ndim == 4:
        return int(weight.shape[1])
    return int(spec.in_chans or 3)


def _size(spec: WeightsSpec, model, state: dict) -> int | None:
    """The input size the weights were made for: the folder's; for a ViT file its position-embedding grid × patch
    size; else timm's default for the architecture (a CNN takes any size: the card records the size it was made for
    when known, timm's default otherwise)."""
    if spec.input_size:
        return int(spec.input_size[-1])
    pos, embed = state.get("pos_embed"), getattr(model.backbone, "patch_embed", None)
    if pos is not None and pos.ndim == 3 and embed is not None and model.img_size:
        backbone = model.backbone
        prefix = 0 if getattr(backbone, "no_embed_class", False) else int(getattr(backbone, "num_prefix_tokens", 1))
        side = math.isqrt(pos.shape[1] - prefix)
        if side * side == pos.shape[1] - prefix:
            return side * int(embed.patch_size[0])
    default = model.pretrained_cfg.get("input_size")
    return int(default[-1]) if default else None


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _card(
    name: str,
    arch: str,
    src: Path,
    spec: WeightsSpec,
    model,
    state: dict,
    report: LoadReport,
    modality: str | None,
    site: str | None,
    description: str | None,
) -> dict:
    defaults = model.pretrained_cfg
    in_chans, size = model.in_chans, _size(spec, model, state)
    from_folder = spec.kind == "hf_dir"
    stats = f"timm's defaults for {arch}"
    if spec.mean:
        stats = f"{HF_CONFIG} pretrained_cfg" if from_folder else "the file's metadata"
    mean, std = spec.mean or defaults.get("mean") or (0.5,), spec.std or defaults.get("std") or (0.25,)
    return {
        "name": name,
        "backbone": arch,
        "architecture": arch,
        "in_chans": int(in_chans),
        "input_size": [int(in_chans), int(size), int(size)] if size else None,
        "mean": _fit(mean, in_chans),
        "std": _fit(std, in_chans),
        "modality": modality,
        "site": site,
        "method": "imported",
        "label_names": None,
        "description": description or f"imported {arch} weights from {src}",
        "origin": {
            "path": str(src),
            "layout": "timm Hugging Face folder" if from_folder else "weights file",
            "file": spec.path.name,
            "sha256": _sha256(spec.path),
            "statistics": stats,
            "classifier": "none in the file" if report.head_reason == NO_CLASSIFIER else "dropped (not stored)",
        },
        "date": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
    }


def _fit(values, in_chans: int) -> list[float]:
    """The card's mean/std hold one value per channel of the stored weights."""
    values = [float(v) for v in values]
    return values if len(values) == in_chans else [round(sum(values) / len(values), 6)] * in_chans


def _write(state: dict, card: dict, target: Path, force: bool) -> dict:
    """Weights and card into a hidden folder beside ``target``, then renamed onto it (replacing it with ``force``)."""
    root = target.parent
    created = [p for p in [root, *root.parents] if not p.exists()]
    root.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix=f".{target.name}.", suffix=IMPORT_SUFFIX, dir=root))
    try:
        weights = work / SOURCE_WEIGHTS_FILE
        tensors = {k: v.detach().cpu().contiguous() for k, v in state.items()}
        save_file(tensors, str(weights), metadata={"format": "medtransfer-source"})
        card = {**card, "sha256": _sha256(weights)}
        (work / CARD_FILE).write_text(yaml.safe_dump(card, sort_keys=False))
        old = None
        if target.exists() and force:
            old = root / f".{target.name}.replaced{IMPORT_SUFFIX}"
            shutil.rmtree(old, ignore_errors=True)
            os.rename(target, old)
        os.rename(work, target)  # same folder: atomic
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)
    except BaseException:
        shutil.rmtree(work, ignore_errors=True)
        for p in created:  # catalogue folders this call made and left empty go again
            if p.is_dir() and not any(p.iterdir()):
                p.rmdir()
        raise
    return card
