"""Backbones by name and the :class:`Classifier` that wraps one with a dropout + linear head.

``model.backbone`` is a registered name (:data:`BACKBONES`: five timm models with their published layer groups, and
``tiny``, a small module that follows timm's conventions, for tests) or **any timm architecture name**
(``timm.list_models()``: ``convnext_atto``, ``vit_small_patch14_dinov2``, ``efficientnet_b3`` ...), resolved by
:func:`backbone_info`. An unknown name fails with close matches from both. Every backbone is created with
``num_classes=0`` so that it returns pooled features.

Families with a fixed input size (timm's ``fixed_input_size``: ViT, DeiT, EVA, BEiT, Swin ...) are built at the
data's image size (timm's ``img_size=``; for a patch model it must be a multiple of the patch size); their
position embeddings are resampled when weights of another size load (:mod:`medtransfer.models.weights`).

Layer groups (for discriminative learning rates and gradual unfreezing) are three, as the published recipes split
them: early layers | late layers | head. A group starts at a *cut*, a parameter-name prefix; the rule goes by family:

* ResNet (fastai's splitter): ``conv1 … layer2 | layer3, layer4 | head`` (cut ``layer3``);
* DenseNet (Romero et al.'s ``features[:7] | features[7:]``, fastai's too): ``… denseblock2 | transition2 … norm5 |
  head`` (cut ``features.transition2``);
* ViT and other transformers with a ``patch_embed`` and a list of ``blocks`` (DeiT, EVA, BEiT, DINOv2 ...): patch
  embedding, class/register tokens, position embedding and the first half of the blocks (rounded up) | the second
  half of the blocks and the final norm | head (cut ``blocks.6`` of 12);
* any other backbone (EfficientNet, ConvNeXt, Swin, ``tiny`` ...): timm's coarse ``group_matcher`` stages, the first
  half (stem and early stages, rounded up) | the rest | head; a model without a ``group_matcher`` is split the same
  way by its top-level modules;
* ``model.groups`` (a list of cuts) overrides the rule, e.g. ``[layer1, layer2, layer3, layer4]`` for ResNet's six.

The family is read from the built model (timm's ``ResNet`` and ``DenseNet`` classes; ``patch_embed`` + ``blocks``),
so ``resnet34`` gets ResNet's cut and ``deit_small_patch16_224`` the ViT rule without being registered.

Example:
    >>> model = build_model("tiny", num_outputs=3, in_chans=1)
    >>> model(torch.zeros(2, 1, 32, 32)).shape
    torch.Size([2, 3])
    >>> model.layer_group_names()
    ['stem.0+stem.1+stages.0', 'stages.1+stages.2', 'head']
    >>> build_model("vit_tiny_patch16_224", 2, img_size=32).layer_group_names()  # doctest: +SKIP
    ['cls_token..blocks.5', 'blocks.6..norm', 'head']
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from medtransfer.errors import ConfigError, UnknownNameError
from medtransfer.registry import Registry, suggest

# Images reach the model scaled to [0, 1] by the data layer; without pretrained statistics we centre them
# on 0.5 and scale by 0.25 so a random-init network sees roughly zero-mean, unit-range inputs.
SCRATCH_MEAN = 0.5
SCRATCH_STD = 0.25


def scratch_normalization(in_chans: int) -> dict[str, list[float]]:
    """The per-channel normalisation used when no weights are loaded: mean 0.5, std 0.25."""
    return {"mean": [SCRATCH_MEAN] * in_chans, "std": [SCRATCH_STD] * in_chans}


def fit_normalization(mean: Sequence[float], std: Sequence[float], in_chans: int) -> dict[str, list[float]]:
    """Per-channel mean/std for ``in_chans`` channels: kept when they fit, else averaged (RGB → gray).

    Example:
        >>> fit_normalization((0.485, 0.456, 0.406), (0.229, 0.224, 0.225), 1)["mean"]
        [0.449]
    """

    def fit(values: Sequence[float]) -> list[float]:
        values = [float(v) for v in values]
        return values if len(values) == in_chans else [round(sum(values) / len(values), 6)] * in_chans

    return {"mean": fit(mean), "std": fit(std)}


# --------------------------------------------------------------------------- tiny test backbone
def _conv_bn_relu(c_in: int, c_out: int, stride: int = 1) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(c_in, c_out, 3, stride=stride, padding=1, bias=False),
        nn.BatchNorm2d(c_out),
        nn.ReLU(inplace=True),
    )


class TinyNet(nn.Module):
    """A ~53k-parameter CNN for tests, with timm's model interface.

    A stem (conv-BN-ReLU, stride 2) and three stages of two conv-BN-ReLU each (the first with stride 2),
    global average pooling and an optional linear classifier ``fc``.

    Example:
        >>> net = TinyNet(num_classes=0, in_chans=1)
        >>> net(torch.zeros(1, 1, 32, 32)).shape
        torch.Size([1, 48])
    """

    def __init__(self, num_classes: int = 1000, in_chans: int = 3, widths: tuple[int, ...] = (16, 32, 48)) -> None:
        super().__init__()
        self.num_classes = num_classes
        self.in_chans = in_chans
        self.stem = _conv_bn_relu(in_chans, widths[0], stride=2)
        stages, c_in = [], widths[0]
        for width in widths:
            stages.append(nn.Sequential(_conv_bn_relu(c_in, width, stride=2), _conv_bn_relu(width, width)))
            c_in = width
        self.stages = nn.Sequential(*stages)
        self.num_features = widths[-1]
        self.global_pool = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten(1))
        self.fc: nn.Module = nn.Linear(self.num_features, num_classes) if num_classes > 0 else nn.Identity()
        # The same keys timm's PretrainedCfg carries, so the weights loader treats tiny like a timm model.
        self.pretrained_cfg: dict[str, Any] = {
            "architecture": "tiny",
            "first_conv": "stem.0",
            "classifier": "fc",
            "input_size": (in_chans, 64, 64),
            "mean": (SCRATCH_MEAN,) * in_chans,
            "std": (SCRATCH_STD,) * in_chans,
            "num_classes": num_classes,
        }

    def group_matcher(self, coarse: bool = False) -> dict[str, Any]:
        """Regexes mapping parameter names to groups, in timm's format (stem, then blocks)."""
        return {"stem": r"^stem", "blocks": r"^stages\.(\d+)" if coarse else r"^stages\.(\d+)\.(\d+)"}

    def get_classifier(self) -> nn.Module:
        return self.fc

    def reset_classifier(self, num_classes: int, global_pool: str | None = None) -> None:
        """Replace the classifier; ``num_classes=0`` makes the model return pooled features."""
        del global_pool  # always average pooling
        self.num_classes = num_classes
        self.fc = nn.Linear(self.num_features, num_classes) if num_classes > 0 else nn.Identity()

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        return self.stages(self.stem(x))

    def forward_head(self, x: torch.Tensor, pre_logits: bool = False) -> torch.Tensor:
        x = self.global_pool(x)
        return x if pre_logits else self.fc(x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_head(self.forward_features(x))


# --------------------------------------------------------------------------- registry
@dataclass(frozen=True)
class BackboneInfo:
    """A registered backbone: our name, the timm model name, and a one-line description.

    ``factory`` builds backbones that are not timm models (``tiny``); it takes ``num_classes`` and
    ``in_chans`` like ``timm.create_model``.
    """

    name: str
    timm_name: str | None
    description: str
    factory: Callable[..., nn.Module] | None = None
    group_cuts: tuple[str, ...] | None = None  # where layer groups 2, 3, … start; None = its family's rule

    def create(self, in_chans: int = 1, img_size: int | None = None) -> nn.Module:
        """Build the backbone with random weights, returning pooled features (``num_classes=0``).

        ``img_size`` (the data's image size) reaches timm only for a family with a fixed input size (ViT ...);
        ``None`` builds those at timm's default size. Other families take any size and ignore it.
        """
        if self.factory is not None:
            return self.factory(num_classes=0, in_chans=in_chans)
        import timm  # deferred: timm adds seconds to torch's import; listing and checking names need no timm

        default = fixed_input_size(self.timm_name)
        if default is None or img_size is None:
            return timm.create_model(self.timm_name, pretrained=False, num_classes=0, in_chans=in_chans)
        try:
            model = timm.create_model(
                self.timm_name, pretrained=False, num_classes=0, in_chans=in_chans, img_size=img_size
            )
        except TypeError as e:  # the family's constructor takes no img_size: it only runs at its own size
            if "img_size" not in str(e):
                raise
            if img_size == default:
                return timm.create_model(self.timm_name, pretrained=False, num_classes=0, in_chans=in_chans)
            raise ConfigError(
                f"backbone {self.name!r} takes {default}x{default} images only (timm cannot build it for another "
                f"size): set data.image_size={default}"
            ) from None
        _check_patch_size(model, self.name, img_size)
        return model


class UnknownBackboneError(UnknownNameError, ConfigError):
    """``model.backbone`` is neither registered nor a timm architecture."""


def fixed_input_size(timm_name: str | None) -> int | None:
    """timm's default input size for a family that only takes images of the size it was built for (timm's
    ``fixed_input_size``: ViT, DeiT, EVA, Swin ...); ``None`` for one that takes any size (CNNs)."""
    if timm_name is None:
        return None
    from timm.models import get_pretrained_cfg  # deferred: timm is heavy (see BackboneInfo.create)

    try:
        cfg = get_pretrained_cfg(timm_name)
    except RuntimeError:  # timm raises for a name without a default configuration
        cfg = None
    return int(cfg.input_size[-1]) if cfg is not None and cfg.fixed_input_size else None


def _check_patch_size(model: nn.Module, name: str, img_size: int) -> None:
    """A patch model cuts the image into whole patches; another size would silently drop its edge."""
    patch = getattr(getattr(model, "patch_embed", None), "patch_size", None)
    p = int(patch[0]) if isinstance(patch, (tuple, list)) else (int(patch) if isinstance(patch, int) else None)
    if p and img_size % p:
        below, above = max(p, img_size // p * p), (img_size // p + 1) * p
        raise ConfigError(
            f"data.image_size={img_size} is not a multiple of {name}'s patch size {p}: set data.image_size to "
            f"{below} or {above}"
        )


BACKBONES = Registry[BackboneInfo]("backbone")
for _info in (
    BackboneInfo(
        "densenet121",
        "densenet121",
        "DenseNet-121 (CheXNet, torchxrayvision), 7.0M params",
        group_cuts=("features.transition2",),
    ),
    BackboneInfo("resnet50", "resnet50", "ResNet-50, 23.5M params", group_cuts=("layer3",)),
    BackboneInfo("resnet18", "resnet18", "ResNet-18, 11.2M params", group_cuts=("layer3",)),
    BackboneInfo("efficientnet_b0", "efficientnet_b0", "EfficientNet-B0, 4.0M params"),
    BackboneInfo("convnext_tiny", "convnext_tiny", "ConvNeXt-Tiny, 27.8M params"),
    BackboneInfo("tiny", None, "a ~53k-parameter CNN for tests (no ImageNet weights)", factory=TinyNet),
):
    BACKBONES.register(_info.name, _info)


def backbone_info(name: str) -> BackboneInfo:
    """The backbone called ``name``: a registered one, else any timm architecture (layer groups by its family).

    Raises:
        UnknownBackboneError: (a :class:`~medtransfer.errors.ConfigError`) for a name neither knows, with close
            matches from the registry and ``timm.list_models()``.

    Example:
        >>> backbone_info("resnet18").group_cuts
        ('layer3',)
        >>> backbone_info("vit_tiny_patch16_224").timm_name
        'vit_tiny_patch16_224'
    """
    name = str(name).strip()
    if name in BACKBONES:
        return BACKBONES.get(name)
    import timm  # deferred: timm is heavy; a registered name needs none

    if timm.is_model(name) and "." not in name:
        return BackboneInfo(name, name, f"timm architecture {name}")
    arch, _, tag = name.partition(".")
    if tag and (arch in BACKBONES or timm.is_model(arch)):
        raise ConfigError(
            f"model.backbone {name!r} names weights, not an architecture: set model.backbone={arch} and "
            f"model.source=imagenet:{tag}"
        )
    timm_names = timm.list_models()
    close = suggest(name, list(dict.fromkeys([*BACKBONES.names(), *timm_names])), n=4)
    hint = f" did you mean {close}?" if close else ""
    raise UnknownBackboneError(
        f"unknown backbone '{name}';{hint} available: {BACKBONES.names()} or any of timm's {len(timm_names)} "
        "architectures (timm.list_models())"
    )


def check_backbone(name: str, img_size: int | None = None) -> BackboneInfo:
    """Resolve ``name`` (:func:`backbone_info`) and check that a fixed-size family can be built for ``img_size``;
    the family is built on the meta device (no memory, no weights), so a run fails before its folder exists.

    Example:
        >>> check_backbone("vit_small_patch14_dinov2", 64)  # doctest: +IGNORE_EXCEPTION_DETAIL
        Traceback (most recent call last):
        ConfigError: data.image_size=64 is not a multiple of vit_small_patch14_dinov2's patch size 14: ...
    """
    info = backbone_info(name)
    if img_size is not None and fixed_input_size(info.timm_name) is not None:
        with torch.device("meta"):
            info.create(3, img_size)
    return info


# --------------------------------------------------------------------------- classifier
class Classifier(nn.Module):
    """A backbone returning pooled features, followed by ``head = Sequential(Dropout, Linear)``.

    Attributes:
        backbone_name: the backbone's name (registered or timm's).
        in_chans: input channels (1 for X-ray/CT).
        img_size: the input size a fixed-size family (ViT ...) was built for; ``None`` for a backbone taking any.
        num_outputs: logits per image.
        normalization: ``{"mean": [...], "std": [...]}`` per input channel, to apply to [0, 1] images.
            Scratch values (0.5 / 0.25) until :func:`medtransfer.models.weights.load_weights` replaces them
            with those that travel with the weights.

    Example:
        >>> model = build_model("tiny", num_outputs=2)
        >>> [len(g) for g in model.layer_groups()][-1]  # the head (weight, bias) is the last group
        2
    """

    def __init__(
        self,
        backbone: nn.Module,
        num_outputs: int,
        backbone_name: str,
        in_chans: int,
        dropout: float = 0.2,
        group_cuts: Sequence[str] | None = None,
        img_size: int | None = None,
    ) -> None:
        super().__init__()
        self.backbone = backbone
        self.head = nn.Sequential(nn.Dropout(dropout), nn.Linear(backbone.num_features, num_outputs))
        self.backbone_name = backbone_name
        self.in_chans = in_chans
        self.num_outputs = num_outputs
        self.img_size = img_size
        self.normalization = scratch_normalization(in_chans)
        # where the backbone's layer groups start (parameter-name prefixes); None = its family's rule
        self.group_cuts = tuple(group_cuts) if group_cuts is not None else None
        self._backbone_groups()  # a bad cut fails here, when the model is built, not at the first unfreeze

    @property
    def pretrained_cfg(self) -> dict[str, Any]:
        """The backbone's timm pretrained cfg (``first_conv``, ``classifier``, ``mean``, ...) as a dict."""
        cfg = getattr(self.backbone, "pretrained_cfg", None) or {}
        return dict(cfg) if isinstance(cfg, dict) else cfg.to_dict()

    def features(self, x: torch.Tensor) -> torch.Tensor:
        """Pooled features, shape (N, num_features)."""
        return self.backbone(x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.backbone(x))

    def _backbone_groups(self) -> list[list[tuple[str, nn.Parameter]]]:
        named = list(self.backbone.named_parameters())
        cuts = self.group_cuts if self.group_cuts is not None else family_cuts(self.backbone)
        starts = [_first_match(named, cut) for cut in cuts]
        for i in range(1, len(starts)):
            a, cut_a, b, cut_b = starts[i - 1], cuts[i - 1], starts[i], cuts[i]
            if b <= a:
                raise ConfigError(
                    f"model.groups: {cut_b!r} does not come after {cut_a!r} in {self.backbone_name}; list the cuts "
                    "from input to output"
                )
        bounds = [0, *starts, len(named)]
        return [named[lo:hi] for lo, hi in zip(bounds, bounds[1:], strict=False)]

    def layer_groups(self) -> list[list[nn.Parameter]]:
        """Parameters in groups ordered from input to output; the head is the last group.

        Every parameter (trainable or frozen) is in exactly one group.

        Example:
            >>> len(build_model("resnet18", num_outputs=2).layer_groups())  # conv1..layer2, layer3-4, head
            3
        """
        groups = [[p for _, p in group] for group in self._backbone_groups()]
        return [*groups, list(self.head.parameters())]

    def layer_group_names(self) -> list[str]:
        """Short names for :meth:`layer_groups`, for logs, e.g. ``['conv1+bn1', 'layer1', ..., 'head']``."""
        named = [[n for n, _ in group] for group in self._backbone_groups()]
        return [_group_label(names, [*named, ["head"]]) for names in named] + ["head"]


def _first_match(named: list[tuple[str, nn.Parameter]], cut: str) -> int:
    """Index of the first parameter whose name is ``cut`` or lies under the module ``cut``."""
    for i, (name, _) in enumerate(named):
        if name == cut or name.startswith(cut + "."):
            return i
    modules = list(dict.fromkeys(n.rsplit(".", 1)[0] for n, _ in named))
    tops = list(dict.fromkeys(m.split(".")[0] for m in modules))
    close = suggest(cut, modules + tops)
    hint = f"; did you mean {close[0]!r}?" if close else f"; its top-level modules are {tops}"
    raise ConfigError(f"model.groups: no parameter of the backbone is under {cut!r}{hint}")


def family_cuts(backbone: nn.Module) -> tuple[str, ...]:
    """The default cut of a backbone, by its family (the rule of the module docstring).

    Example:
        >>> family_cuts(TinyNet(num_classes=0))
        ('stages.1.0.0.weight',)
    """
    # deferred: timm is heavy (see BackboneInfo.create)
    from timm.models.densenet import DenseNet
    from timm.models.resnet import ResNet

    if isinstance(backbone, ResNet):
        return ("layer3",)
    if isinstance(backbone, DenseNet):
        return ("features.transition2",)
    blocks = getattr(backbone, "blocks", None)
    if hasattr(backbone, "patch_embed") and isinstance(blocks, (nn.Sequential, nn.ModuleList)) and len(blocks) > 1:
        return (f"blocks.{math.ceil(len(blocks) / 2)}",)  # the first half, rounded up, stays with the embeddings
    if hasattr(backbone, "group_matcher"):
        return _half_of_stages(backbone)
    # no stages to go by: the same halves over the top-level modules that hold parameters
    tops = [n for n, m in backbone.named_children() if any(True for _ in m.parameters())]
    return (tops[math.ceil(len(tops) / 2)],) if len(tops) > 1 else ()


def _half_of_stages(backbone: nn.Module) -> tuple[str, ...]:
    """The default cut: the first parameter of the coarse timm stage that starts the second half of the stages
    (the stem counts as a stage; the first half is rounded up), e.g. ``layer3`` of a ResNet's five."""
    from timm.models import group_parameters  # deferred: timm is heavy

    groups = group_parameters(backbone, backbone.group_matcher(coarse=True))
    ordinals = sorted(groups)
    if len(ordinals) < 2:
        return ()
    return (groups[ordinals[math.ceil(len(ordinals) / 2)]][0],)


def _group_label(names: list[str], all_groups: list[list[str]]) -> str:
    """The shallowest module prefixes of ``names`` that no other group shares, joined with '+'."""
    others = {n for group in all_groups if group is not names for n in group}
    modules = [n.rsplit(".", 1)[0] for n in names]  # 'layer1.0.conv1.weight' -> 'layer1.0.conv1'
    for depth in (1, 2, 3):
        prefixes = list(dict.fromkeys(".".join(m.split(".")[:depth]) for m in modules))
        if not any(o == p or o.startswith(p + ".") for o in others for p in prefixes):
            break
    return "+".join(prefixes) if len(prefixes) <= 3 else f"{prefixes[0]}..{prefixes[-1]}"


def build_model(
    backbone: str,
    num_outputs: int,
    in_chans: int = 1,
    dropout: float = 0.2,
    groups: Sequence[str] | None = None,
    img_size: int | None = None,
) -> Classifier:
    """Build a :class:`Classifier` with random weights (nothing is loaded or downloaded).

    Args:
        backbone: a registered backbone name (see ``BACKBONES.names()``) or any timm architecture name.
        num_outputs: number of logits (1 for binary, K for multi-class / multi-label).
        in_chans: input channels (1 for grayscale X-ray/CT).
        dropout: dropout probability before the linear head.
        groups: cuts (parameter-name prefixes) where layer groups 2, 3, … start (``model.groups``); ``None`` = the
            backbone's rule (see the module docstring).
        img_size: the data's image size (``data.image_size``); a fixed-size family (ViT ...) is built for it, others
            ignore it. ``None``: timm's default size for those.

    Raises:
        UnknownBackboneError: for a name neither registered nor known to timm, with close matches.
        ConfigError: for an image size a fixed-size family cannot take (not a multiple of its patch size).

    Example:
        >>> build_model("tiny", num_outputs=14).num_outputs
        14
        >>> build_model("vit_tiny_patch16_224", num_outputs=2, img_size=32)(torch.zeros(1, 1, 32, 32)).shape
        torch.Size([1, 2])
    """
    info = backbone_info(backbone)
    cuts = groups if groups is not None else info.group_cuts
    default = fixed_input_size(info.timm_name)
    fixed = None if default is None else (img_size or default)
    return Classifier(info.create(in_chans, img_size), num_outputs, backbone, in_chans, dropout, cuts, fixed)
