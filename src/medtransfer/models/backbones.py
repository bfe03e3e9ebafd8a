"""Registered backbones and the :class:`Classifier` that wraps one with a dropout + linear head.

Every backbone is a timm model (or, for ``tiny``, a small module that follows timm's conventions), created
with ``num_classes=0`` so that it returns pooled features.

Layer groups (for discriminative learning rates and gradual unfreezing) are three, as the published recipes split
them: early layers | late layers | head. A group starts at a *cut*, a parameter-name prefix:

* ResNet (fastai's splitter): ``conv1 … layer2 | layer3, layer4 | head`` (cut ``layer3``);
* DenseNet (Romero et al.'s ``features[:7] | features[7:]``, fastai's too): ``… denseblock2 | transition2 … norm5 |
  head`` (cut ``features.transition2``);
* any other backbone: timm's coarse ``group_matcher`` stages, the first half (stem and early stages, rounded up)
  | the rest | head;
* ``model.groups`` (a list of cuts) overrides the rule, e.g. ``[layer1, layer2, layer3, layer4]`` for ResNet's six.

Example:
    >>> model = build_model("tiny", num_outputs=3, in_chans=1)
    >>> model(torch.zeros(2, 1, 32, 32)).shape
    torch.Size([2, 3])
    >>> model.layer_group_names()
    ['stem.0+stem.1+stages.0', 'stages.1+stages.2', 'head']
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from medtransfer.errors import ConfigError
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
    group_cuts: tuple[str, ...] | None = None  # where layer groups 2, 3, … start; None = the half-of-stages rule

    def create(self, in_chans: int = 1) -> nn.Module:
        """Build the backbone with random weights, returning pooled features (``num_classes=0``)."""
        if self.factory is not None:
            return self.factory(num_classes=0, in_chans=in_chans)
        import timm  # imported here so that importing this module stays cheap

        return timm.create_model(self.timm_name, pretrained=False, num_classes=0, in_chans=in_chans)


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


# --------------------------------------------------------------------------- classifier
class Classifier(nn.Module):
    """A backbone returning pooled features, followed by ``head = Sequential(Dropout, Linear)``.

    Attributes:
        backbone_name: the registered backbone name.
        in_chans: input channels (1 for X-ray/CT).
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
    ) -> None:
        super().__init__()
        self.backbone = backbone
        self.head = nn.Sequential(nn.Dropout(dropout), nn.Linear(backbone.num_features, num_outputs))
        self.backbone_name = backbone_name
        self.in_chans = in_chans
        self.num_outputs = num_outputs
        self.normalization = scratch_normalization(in_chans)
        # where the backbone's layer groups start (parameter-name prefixes); None = the half-of-stages rule
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
        cuts = self.group_cuts if self.group_cuts is not None else _half_of_stages(self.backbone)
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


def _half_of_stages(backbone: nn.Module) -> tuple[str, ...]:
    """The default cut: the first parameter of the coarse timm stage that starts the second half of the stages
    (the stem counts as a stage; the first half is rounded up), e.g. ``layer3`` of a ResNet's five."""
    from timm.models import group_parameters

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
) -> Classifier:
    """Build a :class:`Classifier` with random weights (nothing is loaded or downloaded).

    Args:
        backbone: a registered backbone name (see ``BACKBONES.names()``).
        num_outputs: number of logits (1 for binary, K for multi-class / multi-label).
        in_chans: input channels (1 for grayscale X-ray/CT).
        dropout: dropout probability before the linear head.
        groups: cuts (parameter-name prefixes) where layer groups 2, 3, … start (``model.groups``); ``None`` = the
            backbone's rule (see the module docstring).

    Raises:
        UnknownNameError: for an unregistered backbone, with close matches.

    Example:
        >>> build_model("tiny", num_outputs=14).num_outputs
        14
    """
    info = BACKBONES.get(backbone)
    cuts = groups if groups is not None else info.group_cuts
    return Classifier(info.create(in_chans), num_outputs, backbone, in_chans, dropout, cuts)
