"""Where weights come from (:class:`WeightsSpec`) and the one function that loads them (:func:`load_weights`).

``model.source`` is ``scratch`` (mean 0.5 / std 0.25 per channel, images arrive in [0, 1]); ``imagenet`` or
``imagenet:<timm tag>`` (timm's weights, looked up only in the local Hugging Face and torch-hub caches, never
downloaded); a .safetensors/.pt/.pth/.bin file (timm, torchvision or our own Classifier keys); a source-model
folder with ``model.safetensors`` + a ``source.yaml`` card; or a timm Hugging Face folder (``config.json`` naming the
timm architecture, with its ``pretrained_cfg``, + ``model.safetensors`` or ``pytorch_model.bin``, as timm's
``save_for_hf`` / ``push_to_hub`` write it). Normalisation travels with weights.

Every file goes through :func:`read_state_dict` (safetensors, or ``torch.load(weights_only=True)``: nothing is
unpickled) and :func:`load_weights`: keys and shapes checked, the classifier dropped when it does not fit, the input
conv adapted to the model's channels and a ViT's position embedding resampled to the model's patch grid.
"""

from __future__ import annotations

import contextlib
import json
import logging
import math
import os
import pickle
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal
from urllib.parse import urlparse

import torch
import yaml
from safetensors import safe_open
from safetensors.torch import load_file
from torch import Tensor

from medtransfer.errors import UserError
from medtransfer.models import backbones
from medtransfer.models.backbones import Classifier
from medtransfer.registry import suggest

_logger = logging.getLogger(__name__)
StateDict = dict[str, Tensor]
Labels = Sequence[str] | None  # the target's label names, when known

WEIGHT_SUFFIXES = (".safetensors", ".pt", ".pth", ".bin")
CARD_FILE = "source.yaml"
SOURCE_WEIGHTS_FILE = "model.safetensors"
# a card (source.yaml) also has input_size, modality, site, method, label_names, description
CARD_REQUIRED = ("name", "backbone", "in_chans", "mean", "std")
NO_CLASSIFIER = "the file has no classifier"  # LoadReport.head_reason when there was no head to drop
HF_CONFIG = "config.json"  # a timm Hugging Face folder: config.json + one of HF_WEIGHTS
HF_WEIGHTS = ("model.safetensors", "pytorch_model.bin")
ACCEPTED = (
    "'scratch', 'imagenet[:<timm tag>]', a .safetensors/.pt/.pth/.bin file, a source-model folder or a timm "
    "Hugging Face folder (config.json + model.safetensors)"
)
# training checkpoints wrap the state dict under one of these keys
_CONTAINER_KEYS = ("state_dict", "model_state_dict", "model", "module")
_WRAPPER_PREFIXES = ("module.", "_orig_mod.")  # DataParallel/DDP and torch.compile
# old torchvision DenseNet files: 'denselayer1.norm.1.weight' for 'norm1.weight' (as torchvision/timm rename)
_TV_DENSENET = re.compile(r"^(.*denselayer\d+\.(?:norm|relu|conv))\.([12]\.[a-z_]+)$")


@dataclass(frozen=True)
class WeightsSpec:
    """Where weights come from and what they imply (channels, input size, normalisation, labels, domain)."""

    kind: Literal["scratch", "file", "source_dir", "hf_dir", "imagenet"]
    backbone: str
    path: Path | None = None  # the weights file (file, source_dir, hf_dir)
    hub_id: str | None = None  # imagenet: Hugging Face repo, e.g. 'timm/resnet18.a1_in1k'
    url: str | None = None  # imagenet: the legacy download URL (its basename is the torch-hub cache file)
    in_chans: int | None = None
    input_size: tuple[int, ...] | None = None
    mean: tuple[float, ...] | None = None  # None: the backbone's default (ImageNet for timm backbones)
    std: tuple[float, ...] | None = None
    label_names: tuple[str, ...] | None = None
    modality: str | None = None
    site: str | None = None
    name: str | None = None
    method: str | None = None
    description: str = ""
    first_conv: str | None = None  # None: the backbone's pretrained cfg
    classifier: str | None = None


@dataclass
class LoadReport:
    """What :func:`load_weights` did; :meth:`summary` is one line for the caller's log."""

    source: str
    loaded: int = 0
    missing: list[str] = field(default_factory=list)  # tolerated: dropped-head and BN-counter keys
    unexpected: list[str] = field(default_factory=list)
    dropped_head: bool = False
    head_reason: str = ""
    adapted_input_conv: str | None = None
    resampled_pos_embed: str | None = None  # a ViT's position embedding, resampled to the model's patch grid

    def summary(self) -> str:
        if self.loaded == 0 and not self.dropped_head:
            return f"{self.source}: nothing loaded"
        head = f"head dropped ({self.head_reason}), re-initialised" if self.dropped_head else "head loaded"
        conv = f"; input conv {self.adapted_input_conv}" if self.adapted_input_conv else ""
        conv += f"; {self.resampled_pos_embed}" if self.resampled_pos_embed else ""
        return f"{self.source}: loaded {self.loaded} tensors{conv}; {head}; {len(self.unexpected)} unexpected"


# --------------------------------------------------------------------------- resolving
def resolve_weights(source: str, backbone: str) -> WeightsSpec:
    """Turn ``model.source`` into a :class:`WeightsSpec`; reads at most a small YAML card, never weights.

    Example:
        >>> resolve_weights("imagenet", "resnet18").hub_id
        'timm/resnet18.a1_in1k'
    """
    info = backbones.backbone_info(backbone)
    text = str(source).strip()
    if text == "scratch":
        return WeightsSpec("scratch", backbone, description="random initialisation")
    if text == "imagenet" or text.startswith("imagenet:"):
        return _imagenet_spec(backbone, info.timm_name, text.partition(":")[2])
    path = Path(text).expanduser()
    if path.is_dir() and (path / HF_CONFIG).is_file() and not (path / CARD_FILE).is_file():
        return _hf_dir_spec(path, backbone)
    if path.is_dir():
        return _source_dir_spec(path, backbone)
    if path.is_file():
        if path.suffix.lower() not in WEIGHT_SUFFIXES:
            raise UserError(f"weights file {path}: suffix '{path.suffix}' is not one of {WEIGHT_SUFFIXES}")
        return _file_spec(path, backbone)
    if path.suffix.lower() in WEIGHT_SUFFIXES or os.sep in text:
        raise UserError(f"weights not found: {path} does not exist; model.source accepts {ACCEPTED}")
    catalogue = sources_dir()
    if (catalogue / text).is_dir():  # a source built into the catalogue, by name (`medtransfer sources list`)
        return _source_dir_spec(catalogue / text, backbone)
    names = sorted(p.name for p in catalogue.iterdir() if (p / CARD_FILE).is_file()) if catalogue.is_dir() else []
    close = suggest(text, ["scratch", "imagenet", *names])
    hint = f" (did you mean {close[0]!r}?)" if close else ""
    raise UserError(
        f"model.source {text!r} is not a weights source{hint}; use {ACCEPTED}, or a source name in {catalogue} "
        f"({', '.join(names) if names else 'none built yet'})"
    )


def _torch_reason(e: Exception) -> str:
    """torch.load's message without its C++ source location or its advice to set ``weights_only=False`` (which would
    run whatever code the file pickles: never passed on)."""
    text = " ".join(str(e).split())
    text = re.sub(r"\[enforce fail at [^\]]*\]\s*\.?\s*", "", text)
    text = text.split(" (1) ")[0].split("weights_only")[0].rstrip(" .;,(")
    return text or type(e).__name__


def sources_dir(explicit: str | Path | None = None) -> Path:
    """The source catalogue: ``explicit``, else ``$MEDTRANSFER_SOURCES``, else ``~/.cache/medtransfer/sources``."""
    if explicit:
        return Path(explicit).expanduser()
    env = os.environ.get("MEDTRANSFER_SOURCES")
    return Path(env).expanduser() if env else Path("~/.cache/medtransfer/sources").expanduser()


def _imagenet_spec(backbone: str, timm_name: str | None, tag: str) -> WeightsSpec:
    # deferred: timm adds seconds to torch's import; scratch and file weights need none
    from timm.models import get_pretrained_cfg, list_pretrained

    if timm_name is None:
        raise UserError(f"backbone '{backbone}' has no ImageNet weights; use model.source=scratch or a file")
    try:
        cfg = get_pretrained_cfg(f"{timm_name}.{tag}" if tag else timm_name)
    except RuntimeError:  # timm raises for an unknown tag
        cfg = None
    if cfg is None or not (cfg.hf_hub_id or cfg.url):
        tags = [n.partition(".")[2] for n in list_pretrained(f"{timm_name}.*")]
        raise UserError(f"no timm weights '{timm_name}.{tag}'; use model.source=imagenet:<tag> for {tags}")
    name = f"{cfg.architecture}.{cfg.tag}"
    return WeightsSpec(
        "imagenet",
        backbone,
        hub_id=cfg.hf_hub_id or None,
        url=cfg.url or None,
        in_chans=cfg.input_size[0],
        input_size=tuple(cfg.input_size),
        mean=tuple(cfg.mean),
        std=tuple(cfg.std),
        modality="natural images",
        name=name,
        method="supervised",
        description=f"ImageNet weights timm/{name}",
        first_conv=cfg.first_conv,
        classifier=cfg.classifier,
    )


def _file_spec(path: Path, backbone: str) -> WeightsSpec:
    card: dict[str, Any] = {"name": path.name, "description": f"weights file {path}"}
    if path.suffix.lower() == ".safetensors":  # `medtransfer train` writes its model card as metadata
        # a file with foreign metadata or none carries no card
        with contextlib.suppress(Exception), safe_open(str(path), "pt") as f:
            meta = f.metadata()
            norm, labels = json.loads(meta["normalization"]), json.loads(meta["label_names"])
            card.update(backbone=meta["backbone"], label_names=labels, mean=norm["mean"], std=norm["std"])
    return _card_spec("file", backbone, path, card)


def _source_dir_spec(folder: Path, backbone: str) -> WeightsSpec:
    absent = [n for n in (SOURCE_WEIGHTS_FILE, CARD_FILE) if not (folder / n).is_file()]
    if absent:
        raise UserError(f"{folder} is not a source-model folder: it lacks {absent} ({CARD_FILE} is the card)")
    try:
        card = yaml.safe_load((folder / CARD_FILE).read_text())
    except yaml.YAMLError as e:
        raise UserError(f"{folder / CARD_FILE}: not valid YAML ({str(e).splitlines()[0]})") from None
    missing = [k for k in CARD_REQUIRED if not isinstance(card, dict) or k not in card]
    if missing:
        raise UserError(f"{folder / CARD_FILE}: the source-model card lacks keys {missing}")
    return _card_spec("source_dir", backbone, folder / SOURCE_WEIGHTS_FILE, card)


def read_hf_config(folder: Path) -> dict[str, Any]:
    """The ``config.json`` of a timm Hugging Face folder, checked to name a timm architecture."""
    path = folder / HF_CONFIG
    try:
        cfg = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise UserError(f"{path}: not readable JSON ({' '.join(str(e).split())})") from None
    if not isinstance(cfg, dict) or not cfg.get("architecture"):
        found = cfg.get("architectures") or cfg.get("model_type") if isinstance(cfg, dict) else None
        what = f"a Hugging Face transformers config ({found})" if found else "not a timm model config"
        raise UserError(
            f"{path} is {what}: medtransfer reads timm folders, whose config.json names the timm 'architecture' "
            "(as timm's save_for_hf / push_to_hub write it); save the encoder with timm, or pass its state dict "
            "as a .safetensors file with model.backbone set to the timm name"
        )
    return cfg


def _hf_dir_spec(folder: Path, backbone: str) -> WeightsSpec:
    cfg = read_hf_config(folder)
    arch = str(cfg["architecture"]).partition(".")[0]  # 'vit_small_patch14_dinov2.lvd142m' names the weights too
    if arch != backbones.backbone_info(backbone).timm_name:
        raise UserError(
            f"{folder} holds '{arch}' weights (its {HF_CONFIG}), not '{backbone}': set model.backbone={arch}"
        )
    weights = next((folder / n for n in HF_WEIGHTS if (folder / n).is_file()), None)
    if weights is None:
        raise UserError(f"{folder} has a {HF_CONFIG} but no weights: put {' or '.join(HF_WEIGHTS)} beside it")
    pretrained = cfg.get("pretrained_cfg") if isinstance(cfg.get("pretrained_cfg"), dict) else {}
    size, args = pretrained.get("input_size"), cfg.get("model_args") if isinstance(cfg.get("model_args"), dict) else {}
    in_chans = args.get("in_chans") or (size[0] if size else None)
    mean, std, labels = pretrained.get("mean"), pretrained.get("std"), cfg.get("label_names")
    return WeightsSpec(
        "hf_dir",
        backbone,
        path=weights,
        in_chans=int(in_chans) if in_chans else None,
        input_size=tuple(int(v) for v in size) if size else None,
        mean=tuple(float(v) for v in mean) if mean else None,
        std=tuple(float(v) for v in std) if std else None,
        label_names=tuple(str(n) for n in labels) if isinstance(labels, list) and labels else None,
        name=folder.name,
        description=f"timm folder {folder} ({arch})",
        first_conv=pretrained.get("first_conv"),
        classifier=pretrained.get("classifier"),
    )


def _card_spec(kind: Any, backbone: str, path: Path, card: dict[str, Any]) -> WeightsSpec:
    """A spec from a source-model card: ``source.yaml``, or the metadata of a file written by training."""
    if card.get("backbone", backbone) != backbone:
        raise UserError(
            f"source model {path} was trained with backbone '{card['backbone']}', not '{backbone}': "
            f"set model.backbone={card['backbone']} or choose a source for {backbone}"
        )
    in_chans, mean, std = card.get("in_chans"), card.get("mean"), card.get("std")
    if in_chans is not None and not len(mean) == len(std) == int(in_chans):
        raise UserError(f"{path.parent / CARD_FILE}: mean/std need {in_chans} values, got {mean}/{std}")
    labels, size = card.get("label_names"), card.get("input_size")
    return WeightsSpec(
        kind,
        backbone,
        path=path,
        in_chans=int(in_chans) if in_chans is not None else None,
        input_size=tuple(size) if size else None,
        mean=tuple(float(v) for v in mean) if mean else None,
        std=tuple(float(v) for v in std) if std else None,
        label_names=tuple(str(n) for n in labels) if labels else None,
        name=str(card["name"]),
        description=card.get("description") or f"source model {card['name']} ({path.parent})",
        **{k: card.get(k) for k in ("modality", "site", "method")},
    )


# --------------------------------------------------------------------------- local caches
def _hf_cache_dir() -> Path:
    """The Hugging Face hub cache, read from the environment now (huggingface_hub reads it once at import)."""
    explicit = os.environ.get("HF_HUB_CACHE") or os.environ.get("HUGGINGFACE_HUB_CACHE")
    if explicit:
        return Path(explicit).expanduser()
    xdg = os.environ.get("XDG_CACHE_HOME", "~/.cache")
    return Path(os.environ.get("HF_HOME") or os.path.join(xdg, "huggingface")).expanduser() / "hub"


def _torch_hub_file(url: str) -> Path:
    """Where ``torch.hub.load_state_dict_from_url`` (used by timm and torchvision) keeps ``url``."""
    return Path(torch.hub.get_dir()) / "checkpoints" / os.path.basename(urlparse(url).path)


def find_imagenet_file(spec: WeightsSpec) -> Path | None:
    """The cached file for an ``imagenet`` spec, or None. Looks only in local caches; never downloads.

    Checks the HF hub cache (HF_HOME, HF_HUB_CACHE), then torch.hub.get_dir()/checkpoints (TORCH_HOME).

    Example:
        >>> find_imagenet_file(resolve_weights("imagenet", "resnet18"))  # doctest: +SKIP
        PosixPath('.../hub/models--timm--resnet18.a1_in1k/snapshots/<hash>/model.safetensors')
    """
    from huggingface_hub import try_to_load_from_cache  # deferred: timm's dependency (~0.3 s), as timm is

    if spec.hub_id:
        repo, _, revision = spec.hub_id.partition("@")
        for name in ("model.safetensors", "pytorch_model.bin"):
            found = try_to_load_from_cache(repo, name, cache_dir=_hf_cache_dir(), revision=revision or None)
            if isinstance(found, str):  # a sentinel object means "known to be absent"
                return Path(found)
    if spec.url and _torch_hub_file(spec.url).is_file():
        return _torch_hub_file(spec.url)
    return None


def _not_cached_message(spec: WeightsSpec) -> str:
    repo = (spec.hub_id or "").partition("@")[0]
    places = [f"model.safetensors of {repo} in the Hugging Face cache {_hf_cache_dir()}"] if repo else []
    if spec.url:
        places.append(f"{_torch_hub_file(spec.url).name} ({spec.url}) in {_torch_hub_file(spec.url).parent}")
    run = f"python -c \"import timm; timm.create_model('{spec.name}', pretrained=True)\""
    return (
        f"ImageNet weights for {spec.backbone} are not in the local cache (nothing is downloaded): put "
        f"{' or '.join(places)} (run once with internet: {run}), or set model.source to a local weights file"
    )


# --------------------------------------------------------------------------- reading
def read_state_dict(path: str | Path, classifier: str | None = None) -> StateDict:
    """Read a state dict safely: safetensors, or ``torch.load(weights_only=True)`` for .pt/.pth/.bin.

    Unwraps checkpoint containers (``state_dict``, ``model``, ...) and ``module.`` / ``_orig_mod.`` prefixes.
    With ``classifier``, our own :class:`Classifier` keys (``backbone.*``, ``head.1.*``) become timm keys.

    Example:
        >>> read_state_dict("resnet18.pth")["conv1.weight"].shape  # doctest: +SKIP
        torch.Size([64, 3, 7, 7])
    """
    path = Path(path)
    if not path.is_file():
        raise UserError(f"weights file not found: {path}")
    if path.suffix.lower() == ".safetensors":
        try:
            obj: Any = load_file(str(path), device="cpu")
        except Exception as e:  # safetensors raises its own error types for truncated/corrupt files
            reason = " ".join(str(e).split())
            raise UserError(
                f"{path}: not a readable safetensors file ({reason}); it is damaged or incomplete: copy it again"
            ) from None
    else:
        try:
            obj = torch.load(path, map_location="cpu", weights_only=True)
        except pickle.UnpicklingError:
            raise UserError(
                f"{path} is not a plain state dict: torch.load(weights_only=True) refuses the Python objects "
                "it pickles; re-save it with torch.save(model.state_dict(), path) or as .safetensors"
            ) from None
        except Exception as e:  # zip/EOF/runtime errors from a truncated or foreign file
            raise UserError(
                f"{path} is not a readable PyTorch checkpoint ({_torch_reason(e)}); it is damaged, incomplete or "
                "another kind of file: save the weights again with torch.save(model.state_dict(), path)"
            ) from None
    while isinstance(obj, Mapping) and any(isinstance(obj.get(k), Mapping) for k in _CONTAINER_KEYS):
        obj = next(obj[k] for k in _CONTAINER_KEYS if isinstance(obj.get(k), Mapping))
    state = {str(k): v for k, v in obj.items() if isinstance(v, Tensor)} if isinstance(obj, Mapping) else {}
    if not state:
        raise UserError(f"{path} holds no tensors; expected a state dict (name -> tensor)")
    for prefix in _WRAPPER_PREFIXES:
        if all(k.startswith(prefix) for k in state):
            state = {k[len(prefix) :]: v for k, v in state.items()}
    if classifier and any(k.startswith("backbone.") for k in state):
        # our Classifier: the Linear of the Sequential(Dropout, Linear) head is 'head.1'
        new = {"backbone.": "", "head.1.": f"{classifier}."}
        state = {new[p] + k[len(p) :]: v for k, v in state.items() for p in new if k.startswith(p)}
    # torchvision's ResNet/DenseNet keys equal timm's except in old DenseNet files
    return {_TV_DENSENET.sub(r"\1\2", k): v for k, v in state.items()}


# --------------------------------------------------------------------------- loading
def load_weights(model: Classifier, spec: WeightsSpec, label_names: Labels = None) -> LoadReport:
    """Load the weights ``spec`` describes into ``model`` and set ``model.normalization`` from them.

    The input conv (cfg ``first_conv``) is adapted when channels differ (timm ``adapt_input_conv`` sums RGB
    filters for 1 channel). The file's classifier (cfg ``classifier``, or our ``head.1``) is loaded only if
    its shape fits and, for a source model with label names, ``label_names`` equal the card's; otherwise the
    head is re-initialised. Other mis-shaped or missing backbone tensors raise UserError.

    Example:
        >>> model = build_model("resnet18", num_outputs=2)  # doctest: +SKIP
        >>> load_weights(model, resolve_weights("rn18_tv.pth", "resnet18")).summary()  # doctest: +SKIP
        'weights file rn18_tv.pth: loaded 122 tensors; input conv conv1: 3→1 channels (RGB filters summed)...'
    """
    name = model.backbone_name
    if spec.backbone != name:
        raise UserError(f"weights for '{spec.backbone}' cannot load into a '{name}' model")
    report = LoadReport(source=spec.description or spec.kind)
    if spec.kind == "scratch":
        model.normalization = backbones.scratch_normalization(model.in_chans)
        return report
    path = spec.path if spec.kind != "imagenet" else find_imagenet_file(spec)
    if path is None:
        raise UserError(_not_cached_message(spec))
    cfg = model.pretrained_cfg
    classifier = spec.classifier or cfg.get("classifier") or "fc"
    state = read_state_dict(path, classifier=classifier)
    prefix = classifier + "."
    head_state = {k[len(prefix) :]: state.pop(k) for k in list(state) if k.startswith(prefix)}
    target = model.backbone.state_dict()
    report.adapted_input_conv = _adapt_input_conv(state, target, spec.first_conv or cfg.get("first_conv"))
    report.resampled_pos_embed = _resample_pos_embed(state, target, model.backbone)
    wrong = [k for k, v in state.items() if k in target and v.shape != target[k].shape]
    if wrong:
        shown = "; ".join(f"{k} {tuple(state[k].shape)} vs {tuple(target[k].shape)}" for k in wrong[:4])
        raise UserError(f"{path}: {len(wrong)} tensors do not fit {name} (file vs model: {shown})")
    report.missing = [k for k in target if k not in state]
    fatal = [k for k in report.missing if not k.endswith("num_batches_tracked")]  # old files lack BN counters
    if fatal:
        raise UserError(f"{path} lacks {len(fatal)} {name} tensors (e.g. {fatal[:3]}); partial load refused")
    report.unexpected = [k for k in state if k not in target]
    model.backbone.load_state_dict({k: v for k, v in state.items() if k in target}, strict=False)
    report.loaded = len(target) - len(report.missing)
    linear = model.head[-1]
    theirs = {k: tuple(v.shape) for k, v in head_state.items()}
    ours = {k: tuple(p.shape) for k, p in linear.named_parameters()}
    if not head_state:
        report.head_reason = NO_CLASSIFIER
    elif theirs != ours:
        report.head_reason = f"{classifier} shapes {theirs} vs {ours}"
    elif spec.label_names is not None and list(spec.label_names) != list(label_names or []):
        report.head_reason = "label names differ from the source model's"
    else:
        linear.load_state_dict(head_state)
        report.loaded += 2
    if report.head_reason:
        linear.reset_parameters()
        report.dropped_head = True
        report.missing += ["head.1.weight", "head.1.bias"]
    # a plain file carries no statistics: the backbone's defaults (ImageNet for timm backbones) apply
    mean, std = spec.mean or cfg.get("mean") or (0.5,), spec.std or cfg.get("std") or (0.25,)
    model.normalization = backbones.fit_normalization(mean, std, model.in_chans)
    if report.unexpected:
        _logger.warning("%s: unexpected keys ignored: %s", path, report.unexpected[:5])
    return report


def _adapt_input_conv(state: StateDict, target: StateDict, first_conv: str | None) -> str | None:
    """Adapt the file's first conv to the model's input channels in place; describe what was done."""
    key = f"{first_conv}.weight"
    if key not in state or key not in target or state[key].shape == target[key].shape or state[key].ndim != 4:
        return None
    from timm.models import adapt_input_conv  # deferred: timm is heavy (see _imagenet_spec)

    src, dst = state[key].shape[1], target[key].shape[1]
    try:
        state[key] = adapt_input_conv(dst, state[key], base_chans=src)
    except (NotImplementedError, ValueError, AssertionError):
        return None  # left as it is: the shape check reports it
    return f"{first_conv}: {src}→{dst} channels" + (" (RGB filters summed)" if dst == 1 else "")


def _resample_pos_embed(state: StateDict, target: StateDict, backbone: torch.nn.Module) -> str | None:
    """Resample a ViT's absolute position embedding to the model's patch grid in place (timm's
    ``resample_abs_pos_embed``, as its own checkpoint filters do): weights made at 224 or 518 px load into a model built
    at the data's image size. Class/register tokens keep their rows. Anything else is left to the shape check."""
    key = "pos_embed"
    if key not in state or key not in target or state[key].shape == target[key].shape:
        return None
    src, dst = state[key], target[key]
    grid = getattr(getattr(backbone, "patch_embed", None), "grid_size", None)
    if src.ndim != 3 or dst.ndim != 3 or src.shape[-1] != dst.shape[-1] or grid is None:
        return None
    prefix = 0 if getattr(backbone, "no_embed_class", False) else int(getattr(backbone, "num_prefix_tokens", 1))
    side = math.isqrt(src.shape[1] - prefix)
    if side * side != src.shape[1] - prefix or grid[0] * grid[1] != dst.shape[1] - prefix:
        return None
    from timm.layers import resample_abs_pos_embed  # deferred: timm is heavy (see _imagenet_spec)

    state[key] = resample_abs_pos_embed(src, list(grid), [side, side], num_prefix_tokens=prefix, verbose=False)
    return f"position embedding {side}x{side}→{grid[0]}x{grid[1]} patches (resampled)"


def create_model(
    cfg_model: Any, num_outputs: int, label_names: Labels = None, image_size: int | None = None
) -> tuple[Classifier, LoadReport]:
    """Build a :class:`Classifier` from a ``ModelConfig``-like object and load its ``source`` weights.

    ``cfg_model`` needs ``backbone``, ``source``, ``dropout``, ``in_chans`` (None: 1). With ``scratch`` the
    model is random and normalises with mean 0.5 / std 0.25 per channel (the data layer scales images to
    [0, 1]); otherwise mean/std come with the weights. The target's ``label_names`` may keep a source head.
    ``image_size`` (``data.image_size``) is the size a fixed-size family (ViT ...) is built for.

    Example:
        >>> from medtransfer.config import ModelConfig
        >>> model, report = create_model(ModelConfig(backbone="tiny"), num_outputs=3)
        >>> report.summary()
        'random initialisation: nothing loaded'
    """
    spec = resolve_weights(cfg_model.source, cfg_model.backbone)  # fail before building a large model
    in_chans = 1 if cfg_model.in_chans is None else cfg_model.in_chans  # None: the data's; callers pass it
    groups = getattr(cfg_model, "groups", None)
    model = backbones.build_model(cfg_model.backbone, num_outputs, in_chans, cfg_model.dropout, groups, image_size)
    return model, load_weights(model, spec, label_names=label_names)
