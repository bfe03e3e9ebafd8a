"""Configuration: frozen dataclasses loaded from YAML.

* unknown keys are rejected with a did-you-mean (``ConfigError``);
* values are checked against the field types (int, float, str, bool, Optional, list/tuple, nested dataclasses);
* ``--set a.b=value`` overrides are applied to the raw mapping before validation (values parsed as YAML);
* :func:`write_run_info` writes the resolved config, package versions and seed next to every output.

The schema for a training run is :class:`Config`; later layers (studies) extend it with their own sections.
"""

from __future__ import annotations

import dataclasses
import json
import platform
import re
import sys
import types
import typing
from collections.abc import Callable
from dataclasses import dataclass, field
from importlib import metadata
from pathlib import Path
from typing import Any, TypeVar

import yaml

from medtransfer.errors import ConfigError, UnknownNameError
from medtransfer.io import atomic_write_text
from medtransfer.registry import Registry, suggest

# Values that name a registered thing are resolved by the package that owns the names, registered here when its
# module is first needed (the registry imports it by name): ``task`` by the task kinds (the kind, or UnknownNameError),
# ``transfer`` by the strategies (the section, a mapping or a TransferConfig, as its strategy's settings dataclass;
# ``study_transfer``: a study's shared section, checked for each of its strategies),
# ``executors`` by the study executors (a study section's ``executors``, each entry its executor's settings).
# The config stays below them: they build on its dataclasses, it never imports them.
RESOLVERS: Registry[Callable[..., Any]] = Registry(
    "config resolver",
    builtins=("medtransfer.tasks.base", "medtransfer.transfer.strategies", "medtransfer.studies.executors"),
)

C = TypeVar("C")


class _YamlLoader(yaml.SafeLoader):
    """SafeLoader that reads ``1e-4`` as a float (plain YAML 1.1 wants ``1.0e-4``, else a string)."""


_YamlLoader.add_implicit_resolver(
    "tag:yaml.org,2002:float",
    re.compile(r"^[-+]?[0-9][0-9_]*(?:\.[0-9_]*)?[eE][-+]?[0-9]+$"),
    list("-+0123456789"),
)


# --------------------------------------------------------------------------- range checks
# Every value is checked when its section is built (from YAML, --set or in code), so a bad value fails at load with
# the key, the value, the allowed range and the way to fix it, before anything is read or written.
def bad_value(key: str, value: Any, rule: str) -> ConfigError:
    return ConfigError(f"{key} must be {rule}, got {value!r}; fix it in the config or with --set {key}=VALUE")


def _key(section: str, name: str) -> str:
    return f"{section}.{name}" if section else name


def at_least(section: str, obj: Any, minimum: float, *names: str, optional: bool = False) -> None:
    for name in names:
        value = getattr(obj, name)
        if value is None and optional:
            continue
        if value is None or value < minimum:
            raise bad_value(_key(section, name), value, f">= {minimum:g}" + (" (or null)" if optional else ""))


def _positive(section: str, obj: Any, *names: str, optional: bool = False) -> None:
    for name in names:
        value = getattr(obj, name)
        if value is None and optional:
            continue
        if value is None or not value > 0:
            raise bad_value(_key(section, name), value, "> 0" + (" (or null)" if optional else ""))


def _within(section: str, obj: Any, name: str, lo: float, hi: float, closed_hi: bool = True) -> None:
    value = getattr(obj, name)
    if value is None:
        return
    if not (lo <= value <= hi if closed_hi else lo <= value < hi):
        raise bad_value(_key(section, name), value, f"in [{lo:g}, {hi:g}{']' if closed_hi else ')'}")


def _one_of(section: str, obj: Any, name: str, options: tuple, optional: bool = False) -> None:
    value = getattr(obj, name)
    if value is None and optional:
        return
    if value not in options:
        close = suggest(str(value), [str(o) for o in options])
        hint = f" (did you mean {close[0]!r}?)" if close else ""
        raise bad_value(_key(section, name), value, f"one of {list(options)}{hint}")


# --------------------------------------------------------------------------- schema
@dataclass(frozen=True)
class DataConfig:
    """Where the images come from and how they are prepared."""

    path: str | None = None  # file or folder; a relative path is resolved against the current directory
    format: str | None = None  # a registered data source; None or `auto` = detected from the path
    image_size: int = 64  # training resolution (square), images are resized once into the cache
    resize: str = "interpolate"  # to image_size: `interpolate` (antialiased, up or down) or `pad` (centred, zeros)
    labels: list[str] | None = None  # label column(s) for the folder source, or a subset of label names
    classes: list[str] | None = None  # class filter (e.g. MedNIST ['CXR'])
    image_column: str | None = None  # folder source: column with file names (auto-detected when None)
    patient_column: str | None = None  # folder source: column with patient ids
    allow_outside: bool = False  # folder source: the CSV may name image files outside its folder
    channels: int | None = None  # 1 or 3: every image is read with these channels; None = what most images have
    split_file: str | None = None  # a split CSV written by `medtransfer data split`; None = make one
    split_fractions: list[float] = field(default_factory=lambda: [0.7, 0.1, 0.2])
    use_source_splits: bool = True  # use the file's own train/val/test when it has them (MedMNIST)
    dedupe: bool = True  # duplicate images (exact and near copies) go to one split, joining their patients
    cache_dir: str | None = None  # decoded-image cache; None = $MEDTRANSFER_CACHE or ~/.cache/medtransfer

    def __post_init__(self) -> None:
        if self.format == "auto":  # the spelling the examples use for "detect it", the same as null
            object.__setattr__(self, "format", None)
        at_least("data", self, 8, "image_size")
        _one_of("data", self, "resize", ("interpolate", "pad"))
        if isinstance(self.channels, bool):  # YAML `true` would otherwise pass as 1
            raise bad_value("data.channels", self.channels, "1 or 3 (or null: what most images have)")
        _one_of("data", self, "channels", (1, 3), optional=True)
        if not isinstance(self.dedupe, bool):  # in code a 0/1 or "no" would otherwise pass unnoticed
            raise bad_value("data.dedupe", self.dedupe, "true or false")
        f = self.split_fractions
        if len(f) != 3 or any(v < 0 for v in f) or f[0] <= 0 or abs(sum(f) - 1) > 1e-6:
            raise bad_value("data.split_fractions", f, "three fractions train, val, test that are >= 0 and sum to 1")

    def require_path(self) -> str:
        """``path``; a command that reads the data fails here where the config leaves it unset (it may come from
        ``--data`` or ``--set`` instead, so the loader cannot require it)."""
        if not self.path:
            raise ConfigError("data.path is not set; add it to the config or pass --set data.path=PATH")
        return self.path


@dataclass(frozen=True)
class ModelConfig:
    backbone: str = "resnet18"
    source: str = "scratch"  # scratch | imagenet | a weights file | a source-model directory
    dropout: float = 0.2
    in_chans: int | None = None  # None = the number of channels of the data
    groups: list[str] | None = None  # layer-group cuts (parameter-name prefixes); None = the backbone's 3 groups

    def __post_init__(self) -> None:
        _within("model", self, "dropout", 0.0, 1.0, closed_hi=False)
        at_least("model", self, 1, "in_chans", optional=True)
        if self.groups is not None and (not self.groups or any(not str(g).strip() for g in self.groups)):
            raise bad_value("model.groups", self.groups, "a non-empty list of parameter-name prefixes, or null")


@dataclass(frozen=True)
class TransferConfig:
    """The ``transfer`` section: the settings every strategy shares, and the base of each strategy's own settings.

    A strategy with keys of its own (``romero``'s ``unfreeze_at``, ``fastai``'s ``freeze_epochs`` ...) declares a
    frozen subclass in its module (its ``Strategy.Settings``) whose ``__post_init__`` range-checks them. The loader
    builds the section as the settings dataclass of its ``strategy``
    (:func:`medtransfer.transfer.strategies.settings_from_dict`): a key of another strategy is refused, naming it.
    """

    strategy: str = "finetune"
    lr_policy: str | None = None  # None = the strategy's default (cosine; romero and fastai have their own)
    lr_mult: float | None = None  # discriminative rates lr * lr_mult^depth; None = the strategy's (0.3; romero 1/3)
    train_bn: bool = True  # normalisation layers of frozen groups still train (fastai's default); not linear_probe

    def __post_init__(self) -> None:
        _positive("transfer", self, "lr_mult", optional=True)


@dataclass(frozen=True)
class TrainConfig:
    epochs: int = 10
    max_steps: int | None = None  # cap on optimizer steps: fewer epochs for large N (a learning-curve budget)
    batch_size: int = 64  # the effective batch: images per optimizer step
    grad_accum: int = 1  # micro-batches per optimizer step (batch_size // grad_accum images per forward)
    lr: float = 1e-3
    weight_decay: float | None = None  # decoupled (AdamW); None = the strategy's (1e-4; romero 0, fastai 0.01)
    n_train: int | None = None  # size of the nested training subset; None = all
    balance: bool = False  # the training subset holds every class equally often (as far as the pool allows)
    grad_clip: float | None = 1.0
    early_stop_patience: int | None = None
    val_every: int = 1  # validate (and consider a best checkpoint) every k epochs and at the last one
    # best checkpoint by validation `auc` (the task's primary metric: AUC, or MAE for regression) or `loss`;
    # None = the strategy's (auc)
    select_by: str | None = None
    pos_weight: bool = False  # class-balancing weight for binary / multi-label BCE
    loss: str | None = None  # regression: l1 | mse | huber on standardised targets; None = l1 (classification: null)
    augment: bool = True
    hflip: bool = False  # off by default: laterality matters in chest films
    # random-resized-crop scaling; false keeps lengths (targets in pixels: a head circumference); None = the task
    # kind's default (regression: false, classification: true)
    zoom: bool | None = None
    device: str = "auto"
    compile: bool = False  # torch.compile the model's forward (skipped with a warning where unsupported)
    warmup_pct: float | None = None  # one-cycle warm-up share; None = the strategy's (0.25; romero, fastai 0.3)
    div_factor: float | None = None  # one-cycle initial divisor; None = the strategy's (25; fastai phase 2: 5)
    final_div_factor: float | None = None  # one-cycle final divisor; None = the strategy's (1e5; romero 1e4)
    step_size: int = 5  # step policy
    gamma: float = 0.1  # step policy

    def __post_init__(self) -> None:
        at_least("train", self, 1, "epochs", "batch_size", "grad_accum", "val_every", "step_size")
        at_least("train", self, 1, "max_steps", "n_train", "early_stop_patience", optional=True)
        if self.batch_size % self.grad_accum:
            raise bad_value(
                "train.grad_accum",
                self.grad_accum,
                f"a divisor of train.batch_size={self.batch_size} (batch_size is the effective batch, split into "
                "grad_accum equal micro-batches)",
            )
        _positive("train", self, "lr")
        at_least("train", self, 0, "weight_decay", optional=True)
        _positive("train", self, "grad_clip", optional=True)
        _one_of("train", self, "select_by", ("auc", "loss"), optional=True)
        _one_of("train", self, "loss", ("l1", "mse", "huber"), optional=True)
        if self.warmup_pct is not None and not 0 < self.warmup_pct < 1:
            raise bad_value("train.warmup_pct", self.warmup_pct, "in (0, 1) (or null)")
        at_least("train", self, 1, "div_factor", "final_div_factor", optional=True)
        if not 0 < self.gamma <= 1:
            raise bad_value("train.gamma", self.gamma, "in (0, 1]")
        if not re.fullmatch(r"auto|cpu|mps|cuda(:\d+)?", self.device):
            raise bad_value("train.device", self.device, "auto, cpu, mps, cuda or cuda:N")


@dataclass(frozen=True)
class EvalConfig:
    """How a trained model is scored (``evaluate``, ``predict``, the test split of every run and trial)."""

    tta: int = 0  # test-time augmentation: average the plain image and this many augmented views (0 = off)
    # probability calibration fitted on the validation split and stored with the model: `temperature` (Guo et al.
    # 2017: logits / T, T by validation NLL); null = none
    calibrate: str | None = None
    # the operating point of binary and multi-label tasks, chosen on the validation split: `youden` (maximise
    # sensitivity + specificity - 1), `sensitivity:0.9` (the highest threshold reaching that sensitivity),
    # `specificity:0.95` (the lowest threshold reaching that specificity) or a fixed probability such as 0.5
    threshold: str = "youden"

    def __post_init__(self) -> None:
        _within("eval", self, "tta", 0, 64)
        _one_of("eval", self, "calibrate", ("temperature",), optional=True)
        threshold_rule(self.threshold)


THRESHOLD_RULES = ("youden", "sensitivity", "specificity")


def threshold_rule(text: str | float) -> tuple[str, float | None]:
    """``eval.threshold`` parsed: ``(method, target)``; ``("fixed", p)`` for a number. Raises ConfigError.

    Example:
        >>> threshold_rule("specificity:0.95"), threshold_rule("youden"), threshold_rule(0.5)
        (('specificity', 0.95), ('youden', None), ('fixed', 0.5))
    """
    rule = "one of youden, sensitivity:X, specificity:X (X in (0, 1]) or a probability in [0, 1]"
    raw = str(text).strip().lower()
    name, sep, value = raw.partition(":")
    try:
        number = float(value if sep else raw)
    except ValueError:
        number = None
    if not sep and number is None:
        if raw != "youden":
            close = suggest(raw, list(THRESHOLD_RULES))
            hint = f" (did you mean {close[0]!r}?)" if close else ""
            raise bad_value("eval.threshold", text, rule + hint)
        return "youden", None
    if not sep:
        if not 0.0 <= number <= 1.0:
            raise bad_value("eval.threshold", text, rule)
        return "fixed", number
    if name not in THRESHOLD_RULES[1:] or number is None or not 0.0 < number <= 1.0:
        raise bad_value("eval.threshold", text, rule)
    return name, number


@dataclass(frozen=True)
class SegConfig:
    """3-D segmentation settings (``task: segmentation``)."""

    patch_size: list[int] = field(default_factory=lambda: [32, 48, 32])  # training patch and inference window
    patches_per_volume: int = 4  # random patches drawn from each training volume per epoch
    fg_fraction: float = 0.67  # share of patches centred on an annotated foreground voxel
    overlap: float = 0.5  # sliding-window overlap at inference
    spacing: list[float] | None = None  # resample every volume to this voxel spacing (mm); None = keep
    ct_window: list[float] = field(default_factory=lambda: [-1000.0, 1000.0])  # CT: clip (HU) then scale to [0, 1]
    features: list[int] | None = None  # U-Net channel widths; None = the network's default
    cases_file: str | None = None  # a CSV with a `case` column (or one id per line): use only these cases
    annotated_file: str | None = None  # a CSV `case,annotated` (class names joined by ';'): partial labels
    hd95: bool = True  # also compute the 95th-percentile Hausdorff distance on the test volumes

    def __post_init__(self) -> None:
        if len(self.patch_size) != 3 or any(v < 1 for v in self.patch_size):
            raise bad_value("seg.patch_size", self.patch_size, "three positive voxel counts")
        at_least("seg", self, 1, "patches_per_volume")
        _within("seg", self, "fg_fraction", 0.0, 1.0)
        _within("seg", self, "overlap", 0.0, 1.0, closed_hi=False)
        if self.spacing is not None and (len(self.spacing) != 3 or any(v <= 0 for v in self.spacing)):
            raise bad_value("seg.spacing", self.spacing, "three positive spacings in mm, or null")
        if len(self.ct_window) != 2 or self.ct_window[0] >= self.ct_window[1]:
            raise bad_value("seg.ct_window", self.ct_window, "[low, high] with low < high (HU)")
        if self.features is not None and (len(self.features) != 6 or any(v < 1 for v in self.features)):
            raise bad_value("seg.features", self.features, "six positive channel widths, or null")


@dataclass(frozen=True)
class Config:
    """A training run: ``medtransfer train CONFIG``."""

    # binary | multiclass | multilabel | regression | segmentation (a registered task kind); None or `auto` = the
    # kind `data inspect` guesses from the labels
    task: str | None = None
    seed: int = 0
    data: DataConfig = field(default_factory=DataConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    transfer: TransferConfig = field(default_factory=TransferConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)
    seg: SegConfig = field(default_factory=SegConfig)

    def __post_init__(self) -> None:
        at_least("", self, 0, "seed")
        if self.task == "auto":
            object.__setattr__(self, "task", None)
        if self.task is not None:
            try:
                RESOLVERS.get("task")(self.task)
            except UnknownNameError as e:
                raise ConfigError(f"task: {e}; fix it in the config or with --set task=KIND") from None
        self._resolve_transfer()

    def _resolve_transfer(self) -> None:
        """``transfer`` as the settings dataclass of its strategy: the loader builds it so; code may pass the base
        :class:`TransferConfig` (``Config(transfer=TransferConfig(strategy="romero"))``)."""
        object.__setattr__(self, "transfer", RESOLVERS.get("transfer")(self.transfer))


@dataclass(frozen=True)
class PretrainSection:
    """How a source model is built (``medtransfer pretrain``) and what its card says about it."""

    method: str = "supervised"  # supervised (the data's labels) | simclr (self-supervised, labels ignored)
    name: str | None = None  # the source's name in the catalogue; None = the --out folder's name
    modality: str | None = None  # e.g. x-ray, ct, mri
    site: str | None = None  # anatomical site, e.g. chest, hand
    description: str | None = None  # what the images are (goes into the card)
    temperature: float = 0.1  # simclr: NT-Xent temperature
    projection_dim: int = 128  # simclr: output size of the projection MLP (discarded after pretraining)
    probe_data: str | None = None  # simclr: a labelled dataset for the card's linear-probe AUC

    def __post_init__(self) -> None:
        _positive("pretrain", self, "temperature")
        at_least("pretrain", self, 1, "projection_dim")


@dataclass(frozen=True)
class PretrainConfig(Config):
    """Building a source model: ``medtransfer pretrain CONFIG`` (all of :class:`Config` plus ``pretrain``)."""

    pretrain: PretrainSection = field(default_factory=PretrainSection)


# --------------------------------------------------------------------------- building
def _type_name(tp: Any) -> str:
    return getattr(tp, "__name__", None) or str(tp).replace("typing.", "")


def _coerce(value: Any, tp: Any, where: str) -> Any:
    """Check/convert ``value`` to the annotated type ``tp``; raise ConfigError naming ``where``."""
    origin = typing.get_origin(tp)
    if origin in (typing.Union, types.UnionType):
        args = typing.get_args(tp)
        if value is None and type(None) in args:
            return None
        errors = []
        for arg in args:
            if arg is type(None):
                continue
            try:
                return _coerce(value, arg, where)
            except ConfigError as e:
                errors.append(str(e))
        raise ConfigError(errors[0] if len(errors) == 1 else f"{where}: {value!r} is not a valid {_type_name(tp)}")
    if dataclasses.is_dataclass(tp):
        if not isinstance(value, dict):
            raise ConfigError(f"{where}: expected a mapping, got {value!r}")
        if isinstance(tp, type) and issubclass(tp, TransferConfig):  # the settings dataclass of the chosen strategy
            return RESOLVERS.get("transfer")(value, where)
        return from_dict(tp, value, prefix=where)
    if origin in (list, tuple):
        if isinstance(value, tuple):
            value = list(value)
        if not isinstance(value, list):
            raise ConfigError(f"{where}: expected a list, got {value!r}")
        (inner, *_) = typing.get_args(tp) or (Any,)
        items = [_coerce(v, inner, f"{where}[{i}]") for i, v in enumerate(value)]
        return items if origin is list else tuple(items)
    if origin is dict:
        if not isinstance(value, dict):
            raise ConfigError(f"{where}: expected a mapping, got {value!r}")
        return dict(value)
    if tp is Any:
        return value
    if tp is bool:
        if isinstance(value, bool):
            return value
        raise ConfigError(f"{where}: expected true/false, got {value!r}")
    if tp is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        raise ConfigError(f"{where}: expected an integer, got {value!r}")
    if tp is float:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
        raise ConfigError(f"{where}: expected a number, got {value!r}")
    if tp is str:
        if isinstance(value, (str, int, float)) and not isinstance(value, bool):
            return str(value)
        raise ConfigError(f"{where}: expected a string, got {value!r}")
    return value


def from_dict(cls: type[C], data: dict[str, Any], prefix: str = "") -> C:
    """Build the frozen dataclass ``cls`` from a mapping, rejecting unknown keys.

    Example:
        >>> from_dict(Config, {"train": {"epochs": 3}}).train.epochs
        3
    """
    if data is None:
        data = {}
    hints = typing.get_type_hints(cls)
    names = [f.name for f in dataclasses.fields(cls)]
    kwargs = {}
    for key, value in data.items():
        where = f"{prefix}.{key}" if prefix else str(key)
        if key not in names:
            close = suggest(str(key), names)
            hint = f"; did you mean {close[0]!r}?" if close else f"; known keys: {names}"
            raise ConfigError(f"unknown config key '{where}'{hint}")
        kwargs[key] = _coerce(value, hints[key], where)
    return cls(**kwargs)


def to_dict(cfg: Any) -> dict[str, Any]:
    """The plain mapping of a config dataclass (for YAML dumps)."""
    return dataclasses.asdict(cfg)


def parse_override(item: str) -> tuple[list[str], Any]:
    """Split ``a.b=value`` into (["a", "b"], parsed value); the value is parsed as YAML."""
    if "=" not in item:
        raise ConfigError(f"override '{item}' must look like key.sub=value")
    key, raw = item.split("=", 1)
    key = key.strip()
    if not key:
        raise ConfigError(f"override '{item}' has an empty key")
    try:
        value = yaml.load(raw, Loader=_YamlLoader) if raw.strip() else ""
    except yaml.YAMLError:
        value = raw
    return key.split("."), value


def apply_overrides(data: dict[str, Any], overrides: list[str] | tuple[str, ...]) -> dict[str, Any]:
    """Return a copy of ``data`` with ``key.sub=value`` overrides applied (keys are validated later)."""
    out = json.loads(json.dumps(data))  # deep copy of plain YAML data
    for item in overrides:
        keys, value = parse_override(item)
        node = out
        for k in keys[:-1]:
            if node.get(k) is None:
                node[k] = {}
            if not isinstance(node[k], dict):
                raise ConfigError(f"override '{item}': '{k}' is not a section")
            node = node[k]
        node[keys[-1]] = value
    return out


def read_yaml(path: str | Path) -> dict[str, Any]:
    p = Path(path)
    if not p.is_file():
        raise ConfigError(f"config file not found: {p}")
    try:
        data = yaml.load(p.read_text(), Loader=_YamlLoader) or {}
    except UnicodeDecodeError:
        raise ConfigError(f"{p} is not a text file; a config is YAML text (key: value lines)") from None
    except yaml.YAMLError as e:
        raise ConfigError(_yaml_error(p, e)) from None
    if not isinstance(data, dict):
        raise ConfigError(
            f"{p}: the top level must be a mapping of keys (key: value lines), not a {type(data).__name__}"
        )
    return data


def _yaml_error(path: Path, e: yaml.YAMLError) -> str:
    """PyYAML's multi-line message → one line with the line and column where the parser stopped."""
    mark = getattr(e, "problem_mark", None) or getattr(e, "context_mark", None)
    where = f", line {mark.line + 1} column {mark.column + 1}" if mark is not None else ""
    what = getattr(e, "problem", None) or str(e).splitlines()[0]
    context, start = getattr(e, "context", None), getattr(e, "context_mark", None)
    if context and start is not None and start is not mark:
        what += f", {context} started at line {start.line + 1} column {start.column + 1}"
    elif context:
        what += f" {context}"
    return f"{path}{where}: not valid YAML ({what}); check the brackets, quotes and indentation there"


def load_config(path: str | Path | None, overrides: list[str] | tuple[str, ...] = (), cls: type[C] = Config) -> C:
    """Load a YAML config (or defaults when ``path`` is None), apply overrides, validate."""
    data = read_yaml(path) if path is not None else {}
    return from_dict(cls, apply_overrides(data, list(overrides)))


def replace(cfg: C, **changes: Any) -> C:
    """``dataclasses.replace`` that also accepts dotted keys for nested sections, e.g. ``{"train.epochs": 3}``."""
    data = to_dict(cfg)
    return from_dict(type(cfg), apply_overrides(data, [f"{k}={json.dumps(v)}" for k, v in changes.items()]))


def package_versions() -> dict[str, str]:
    """Versions of Python, medtransfer and the libraries that determine results."""

    out = {"python": sys.version.split()[0], "platform": platform.platform()}
    for pkg in ("medtransfer", "torch", "torchvision", "timm", "monai", "numpy", "scipy", "scikit-learn", "pandas"):
        try:
            out[pkg] = metadata.version(pkg)
        except metadata.PackageNotFoundError:
            out[pkg] = "not installed"
    return out


def dump_yaml(data: dict[str, Any], path: str | Path) -> None:
    """Write YAML atomically (temporary file + rename)."""

    atomic_write_text(path, yaml.safe_dump(data, sort_keys=False))


def write_run_info(out_dir: str | Path, cfg: Any, seed: int | None = None, extra: dict | None = None) -> None:
    """Write ``config.yaml`` (resolved), and ``run_info.json`` (versions, seed, command line) into ``out_dir``."""

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    dump_yaml(to_dict(cfg) if dataclasses.is_dataclass(cfg) else dict(cfg), out / "config.yaml")
    info = {"seed": seed, "versions": package_versions(), "argv": sys.argv, **(extra or {})}
    atomic_write_text(out / "run_info.json", json.dumps(info, indent=2, default=str))
