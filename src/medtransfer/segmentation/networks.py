"""Registered 3D segmentation networks (MONAI ``BasicUNet``) with the layer-group interface of the strategies.

A built :class:`SegUNet` has the modules of MONAI's ``BasicUNet`` under their own names (``conv_0``, ``down_1``..
``down_4``, ``upcat_4``..``upcat_1``, ``final_conv``), so its state dict is interchangeable with a ``BasicUNet``'s.
It exposes what :mod:`medtransfer.transfer.strategies` uses: ``layer_groups()`` ordered input → output with the
head last, and ``head`` (the final 1×1×1 convolution); plus ``encoder_groups``, the number of leading groups that
form the encoder, so that a decoder-only fine-tuning can freeze them.

Example:
    >>> model = build_seg_network("tiny_unet", in_channels=1, n_classes=3)
    >>> model.layer_group_names()
    ['conv_0', 'down_1', 'down_2', 'down_3', 'down_4', 'upcat_4', 'upcat_3', 'upcat_2', 'upcat_1', 'final_conv']
    >>> model.encoder_groups, model(torch.zeros(1, 1, 16, 16, 16)).shape
    (5, torch.Size([1, 3, 16, 16, 16]))
"""

from __future__ import annotations

import inspect
import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, ClassVar

import torch
from torch import nn

from medtransfer.errors import ConfigError
from medtransfer.registry import Registry

log = logging.getLogger(__name__)


class SegUNet(nn.Module):
    """MONAI ``BasicUNet`` (3D) with ``layer_groups()``, ``encoder_groups`` and ``head``.

    Input sizes: four 2× poolings, so sides that are multiples of 16 avoid padding in the decoder; with instance
    normalisation (BasicUNet's default) the bottleneck needs more than one voxel, i.e. a patch of at least 32 voxels
    along one axis (16×16×16 fails; the hippocampus patch 32×48×32 gives a 2×3×2 bottleneck).

    Attributes:
        network_name: the registered name.
        in_channels, n_classes, features: as built.
    """

    encoder_names: ClassVar[tuple[str, ...]] = ("conv_0", "down_1", "down_2", "down_3", "down_4")
    decoder_names: ClassVar[tuple[str, ...]] = ("upcat_4", "upcat_3", "upcat_2", "upcat_1")
    head_name: ClassVar[str] = "final_conv"
    encoder_groups: ClassVar[int] = len(encoder_names)

    def __init__(
        self, in_channels: int, n_classes: int, features: Sequence[int], network_name: str = "", **options: Any
    ) -> None:
        super().__init__()
        from monai.networks.nets import BasicUNet  # deferred: monai takes seconds to import; only when a net is built

        unet = BasicUNet(
            spatial_dims=3, in_channels=in_channels, out_channels=n_classes, features=tuple(features), **options
        )
        # BasicUNet's modules are adopted under their own names (no "unet." prefix) so that state dicts match
        # MONAI's, and its forward is reused as is: it only reads these attributes.
        for name, module in unet.named_children():
            self.add_module(name, module)
        self._unet_forward = type(unet).forward
        self.network_name = network_name
        self.in_channels = in_channels
        self.n_classes = n_classes
        self.features = tuple(features)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self._unet_forward(self, x)

    @property
    def head(self) -> nn.Module:
        """The final 1×1×1 convolution (one output channel per class)."""
        return getattr(self, self.head_name)

    def layer_group_names(self) -> list[str]:
        """Module names of :meth:`layer_groups`, input → output."""
        return [*self.encoder_names, *self.decoder_names, self.head_name]

    def layer_groups(self) -> list[list[nn.Parameter]]:
        """Parameters grouped by module: encoder (5), decoder (4), head; every parameter in exactly one group.

        Example:
            >>> groups = build_seg_network("tiny_unet", 1, 2).layer_groups()
            >>> len(groups), len(groups[-1])  # head: weight and bias
            (10, 2)
        """
        return [list(getattr(self, name).parameters()) for name in self.layer_group_names()]


@dataclass(frozen=True)
class SegNetworkInfo:
    """A registered network: default ``features`` (six widths, BasicUNet's) and other BasicUNet options."""

    name: str
    description: str
    features: tuple[int, ...]
    options: Mapping[str, Any] = field(default_factory=dict)

    def create(self, in_channels: int, n_classes: int, **kw: Any) -> SegUNet:
        from monai.networks.nets import BasicUNet  # deferred: monai is heavy (see SegUNet)

        allowed = set(inspect.signature(BasicUNet.__init__).parameters) - {"self", "spatial_dims"}
        allowed -= {"in_channels", "out_channels"}
        unknown = sorted(set(kw) - allowed)
        if unknown:
            raise ConfigError(
                f"unknown option {unknown} for segmentation network '{self.name}'; available: {sorted(allowed)}"
            )
        options = {**self.options, **kw}
        features = tuple(int(f) for f in options.pop("features", self.features))
        if len(features) != 6:
            raise ConfigError(f"segmentation network '{self.name}' needs six features, got {list(features)}")
        return SegUNet(in_channels, n_classes, features, network_name=self.name, **options)


SEG_NETWORKS = Registry[SegNetworkInfo]("segmentation network")
for _info in (
    SegNetworkInfo(
        "basic_unet", "MONAI BasicUNet 3D, features (16,16,32,64,128,16), 1.4M params", (16, 16, 32, 64, 128, 16)
    ),
    SegNetworkInfo("tiny_unet", "MONAI BasicUNet 3D, features (4,4,8,8,16,4), for tests", (4, 4, 8, 8, 16, 4)),
):
    SEG_NETWORKS.register(_info.name, _info)


def build_seg_network(name: str, in_channels: int, n_classes: int, **kw: Any) -> SegUNet:
    """Build a registered network with random weights; ``kw`` overrides BasicUNet options (``features``, ``norm``,
    ``act``, ``dropout``, ``upsample``, ...).

    Raises:
        UnknownNameError: an unregistered name, with close matches.
        ConfigError: an option BasicUNet does not have.

    Example:
        >>> build_seg_network("basic_unet", in_channels=1, n_classes=3, features=(8, 8, 16, 32, 64, 8)).features
        (8, 8, 16, 32, 64, 8)
    """
    return SEG_NETWORKS.get(name).create(in_channels, n_classes, **kw)


def _head_prefix(model: nn.Module) -> str:
    head = getattr(model, "head", None)
    for name, module in model.named_modules():
        if module is head and name:
            return name + "."
    raise TypeError(f"{type(model).__name__} has no `head` submodule")


def _norm(name: str) -> str:
    return name.strip().casefold()


def transfer_head(
    source_state: Mapping[str, torch.Tensor],
    source_classes: Sequence[str],
    model: nn.Module,
    target_classes: Sequence[str],
) -> dict[str, str]:
    """Re-initialise ``model.head`` and copy the output channels of the classes named in both label sets.

    Names match case-insensitively (``background`` included); the other target channels keep their fresh
    initialisation. ``source_state`` is the source model's state dict (its head under the same key as the
    model's). Load the rest of the body separately; this only handles the head, whose size depends on the classes.

    Returns:
        Target class name → the source class name its channel was copied from.

    Example:
        >>> src = build_seg_network("tiny_unet", 1, 3)
        >>> tgt = build_seg_network("tiny_unet", 1, 2)
        >>> transfer_head(src.state_dict(), ["background", "Anterior", "Posterior"], tgt, ["background", "posterior"])
        {'background': 'background', 'posterior': 'Posterior'}
    """
    prefix = _head_prefix(model)
    head = model.head
    for module in head.modules():
        if callable(getattr(module, "reset_parameters", None)):
            module.reset_parameters()
    target = head.state_dict()
    mapped: dict[str, str] = {}
    by_name = {_norm(n): i for i, n in enumerate(source_classes)}
    if len(by_name) != len(source_classes):
        raise ValueError(f"source class names repeat (case-insensitively): {list(source_classes)}")
    for key, tensor in target.items():
        if prefix + key not in source_state:
            raise KeyError(f"source state has no '{prefix + key}' (the head of {type(model).__name__})")
        src = source_state[prefix + key]
        if src.shape[0] != len(source_classes):
            raise ValueError(
                f"source head '{prefix + key}' has {src.shape[0]} channels for {len(source_classes)} classes"
            )
        if tensor.shape[0] != len(target_classes) or src.shape[1:] != tensor.shape[1:]:
            raise ValueError(
                f"head '{prefix + key}': source {tuple(src.shape)} does not fit target {tuple(tensor.shape)} "
                f"with {len(target_classes)} classes"
            )
    with torch.no_grad():
        for t, name in enumerate(target_classes):
            s = by_name.get(_norm(name))
            if s is None:
                continue
            for key, tensor in target.items():
                tensor[t].copy_(source_state[prefix + key][s])
            mapped[name] = source_classes[s]
    head.load_state_dict(target)
    unmapped = [n for n in target_classes if n not in mapped]
    log.info("head transfer: %d classes copied %s, %d re-initialised %s", len(mapped), mapped, len(unmapped), unmapped)
    return mapped
