"""Where a model looks: saliency maps of one output of a trained classifier, with MONAI's implementations.

Three methods, registered by name in :data:`METHODS`:

* ``gradcam``: Grad-CAM (Selvaraju et al. 2017, ``monai.visualize.GradCAM``): the target layer's feature maps
  weighted by the mean gradient of the output, ReLU, upsampled to the image;
* ``gradcampp``: Grad-CAM++ (Chattopadhyay et al. 2018, ``monai.visualize.GradCAMpp``);
* ``occlusion``: occlusion sensitivity (``monai.visualize.OcclusionSensitivity``): how much the output's score
  drops when a Gaussian-weighted patch of a quarter of the image side is blanked (set to the normalisation mean),
  at every position; no target layer, so it works for any backbone, transformers included.

The target layer of the Grad-CAM methods is found from the model, not from a list of backbone names
(:func:`target_layers`): one forward pass with hooks on every module of the backbone, then the last of timm's
stage outputs (``feature_info``) that is a channels-first 4-D map with a spatial size above 1 at this input size;
a backbone without ``feature_info`` (``tiny``) takes the last module with such an output, unless token sequences
(3-D outputs, a transformer) follow it. A layer whose backward hook fails is skipped for the one before it.

Maps are computed on a copy of the model with every in-place activation turned off (DenseNet's and ResNet's
``ReLU(inplace=True)`` would otherwise overwrite the tensor the backward hook holds), in float32, in eval mode.

Example:
    >>> model = build_model("tiny", num_outputs=1)
    >>> explainer = Explainer(model, torch.zeros(1, 1, 32, 32))
    >>> explainer.layer
    'backbone.stages'
    >>> explainer.saliency(torch.rand(2, 1, 32, 32), targets=[0, 0], method="gradcam")[0].shape
    (32, 32)
"""

from __future__ import annotations

import copy
import warnings
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from medtransfer.errors import UserError
from medtransfer.registry import Registry, suggest


@dataclass(frozen=True)
class Method:
    """A saliency method: its name in the report, whether it needs a target layer, its paper."""

    name: str
    title: str
    needs_layer: bool
    reference: str


METHODS = Registry[Method]("explain method")
for _m in (
    Method("gradcam", "Grad-CAM", True, "Selvaraju et al. 2017"),
    Method("gradcampp", "Grad-CAM++", True, "Chattopadhyay et al. 2018"),
    Method("occlusion", "occlusion sensitivity", False, "Zeiler & Fergus 2014"),
):
    METHODS.register(_m.name, _m)


def _no_inplace(model: nn.Module) -> nn.Module:
    """A float32 eval-mode copy of ``model`` whose modules compute nothing in place."""
    model = copy.deepcopy(model).float().eval()
    for module in model.modules():
        if getattr(module, "inplace", False):
            module.inplace = False
    return model


def _trace(model: nn.Module, x: torch.Tensor) -> list[tuple[str, tuple[int, ...]]]:
    """``(module name, output shape)`` of every module under ``backbone`` in the order they return."""
    fired: list[tuple[str, tuple[int, ...]]] = []
    handles = []
    for name, module in model.named_modules():
        if name.startswith("backbone."):

            def hook(_m, _inp, out, name=name):
                if isinstance(out, torch.Tensor):
                    fired.append((name, tuple(out.shape)))

            handles.append(module.register_forward_hook(hook))
    try:
        with torch.no_grad():
            model(x)
    finally:
        for h in handles:
            h.remove()
    return fired


def target_layers(model: nn.Module, x: torch.Tensor) -> list[str]:
    """Candidate Grad-CAM layers of a :class:`~medtransfer.models.backbones.Classifier` for inputs shaped like
    ``x``, best first (see the module docstring for the rule); empty when it has none (a transformer, or an image
    so small that every map is 1×1).

    Example:
        >>> target_layers(build_model("resnet18", 1), torch.zeros(1, 1, 64, 64))[0]
        'backbone.layer4'
    """
    fired = _trace(model, x)

    def spatial(shape: tuple[int, ...]) -> bool:
        return len(shape) == 4 and min(shape[2:]) > 1

    info = getattr(model.backbone, "feature_info", None)
    stages = None
    if info is not None:
        try:
            stages = {f"backbone.{f['module']}": int(f["num_chs"]) for f in info}
        except (TypeError, KeyError):
            stages = None
    if stages:
        # a stage output counts when it is channels-first (Swin's stages are channels-last: B, H, W, C)
        found = [name for name, shape in fired if name in stages and spatial(shape) and shape[1] == stages[name]]
    else:
        last_tokens = max((i for i, (_, shape) in enumerate(fired) if len(shape) == 3), default=-1)
        found = [name for i, (name, shape) in enumerate(fired) if spatial(shape) and i > last_tokens]
    return list(reversed(list(dict.fromkeys(found))))


def _backward_works(model: nn.Module, layer: str, x: torch.Tensor) -> bool:
    """Whether a full backward hook on ``layer`` receives a gradient (what MONAI's Grad-CAM relies on)."""
    module = dict(model.named_modules())[layer]
    got: list[torch.Tensor] = []
    handle = module.register_full_backward_hook(lambda _m, _gi, go: got.append(go[0]))
    try:
        model.zero_grad()
        with torch.enable_grad():
            model(x.detach().clone().requires_grad_(True))[:, 0].sum().backward()
    except RuntimeError:
        return False
    finally:
        handle.remove()
        model.zero_grad()
    return bool(got) and got[0] is not None


class Explainer:
    """Saliency maps of one model: a hook-safe copy of it, the target layer, and MONAI's method objects.

    Args:
        model: a :class:`~medtransfer.models.backbones.Classifier` (not modified: maps are taken on a copy).
        example: one normalised input batch of the size the maps will be taken at (for the layer search).
        layer: the Grad-CAM target layer's module name (``backbone.layer3``); ``None``: found by :func:`target_layers`.
        activate: logits → scores (the run's task: sigmoid, softmax, identity for regression), for occlusion.
        absolute: occlusion counts a change of the output in either direction (regression: a region that moves the
            predicted value); otherwise only a drop of the score.
    """

    def __init__(
        self,
        model: nn.Module,
        example: torch.Tensor,
        layer: str | None = None,
        activate: Callable[[torch.Tensor], torch.Tensor] | None = None,
        absolute: bool = False,
    ) -> None:
        self.model = _no_inplace(model).to(example.device)
        self.example = example.float()
        self.activate = activate or (lambda z: z)
        self.absolute = absolute
        self._layer = layer
        self._searched = layer is not None
        self._cams: dict[str, object] = {}
        if layer is not None:
            names = [n for n, _ in self.model.named_modules() if n]
            if layer not in names:
                close = suggest(layer, names)
                hint = f"; did you mean {close[0]!r}?" if close else ""
                raise UserError(
                    f"--layer {layer!r} is not a module of the model{hint} (names as in model.named_modules())"
                )
            if not _backward_works(self.model, layer, self.example):
                raise UserError(
                    f"--layer {layer!r} passes no gradient back (a backward hook on it fails); name another"
                )

    @property
    def layer(self) -> str | None:
        """The Grad-CAM target layer (searched on first use); ``None`` when the model has none."""
        if not self._searched:
            self._searched = True
            for name in target_layers(self.model, self.example):
                if _backward_works(self.model, name, self.example):
                    self._layer = name
                    break
        return self._layer

    def _cam(self, method: str):
        if method not in self._cams:
            from monai.visualize import GradCAM, GradCAMpp

            if self.layer is None:
                size = "×".join(str(s) for s in self.example.shape[2:])
                raise UserError(
                    f"{METHODS.get(method).title} needs a 4-D feature map and this model has none with a spatial size "
                    f"above 1 at {size} px (a transformer's tokens, or images too small for its strides); use "
                    "--method occlusion, or name a layer with --layer"
                )
            cls = GradCAMpp if method == "gradcampp" else GradCAM
            # MONAI's default post-processing maps (min, max) to (1, 0); the raw map is scaled here instead
            self._cams[method] = cls(self.model, self.layer, postprocessing=lambda m: m)
        return self._cams[method]

    def saliency(self, x: torch.Tensor, targets: list[int], method: str) -> list[np.ndarray]:
        """The map of output ``targets[i]`` for each normalised image ``x[i]`` (``x``: B, C, H, W): (H, W) arrays in
        [0, 1], 1 where the method finds the most evidence; all zeros where it finds none (Grad-CAM's ReLU removed
        everything). Grad-CAM runs once per distinct target (the maps of a batch are independent: eval-mode
        BatchNorm, per-image weights); Grad-CAM++ and occlusion once per image."""
        METHODS.get(method)
        x = x.float().to(self.example.device)
        raw: list[np.ndarray | None] = [None] * len(x)
        with warnings.catch_warnings(), torch.enable_grad():  # Grad-CAM needs gradients even under no_grad
            # MONAI indexes with lists, which torch deprecates; nothing the user can act on
            warnings.filterwarnings("ignore", message="Using a non-tuple sequence", category=UserWarning)
            if method == "occlusion":
                for i, k in enumerate(targets):
                    raw[i] = self._occlusion(x[i : i + 1], int(k))
            else:
                cam = self._cam(method)
                # MONAI's Grad-CAM++ multiplies by exp(score) of shape (B,), which broadcasts against the last axis
                # of the gradients: right for one image only
                groups = [[i] for i in range(len(x))] if method == "gradcampp" else None
                if groups is None:
                    groups = [[i for i, t in enumerate(targets) if int(t) == k] for k in sorted(set(map(int, targets)))]
                for rows in groups:
                    maps = cam(x[rows], class_idx=int(targets[rows[0]]))[:, 0].detach().float().cpu().numpy()
                    for i, m in zip(rows, maps, strict=True):
                        raw[i] = m
        return [_unit_max(m) for m in raw]

    def _occlusion(self, x: torch.Tensor, target: int) -> np.ndarray:
        from monai.visualize import OcclusionSensitivity

        side = min(x.shape[2:])
        mask = max(3, side // 4)
        occ = OcclusionSensitivity(self.model, mask_size=mask, n_batch=32, verbose=False, activate=self.activate)
        with torch.no_grad():
            base = self.activate(self.model(x))[0, target].item()
            occluded, _ = occ(x)
        change = base - occluded[0, target].detach().float().cpu().numpy()
        return np.abs(change) if self.absolute else np.clip(change, 0, None)


def _unit_max(raw: np.ndarray | None) -> np.ndarray:
    """``raw`` scaled so that its maximum is 1 (all zeros when it has no positive value)."""
    raw = np.nan_to_num(np.asarray(raw, dtype=np.float64))
    top = float(raw.max()) if raw.size else 0.0
    return (raw / top).astype(np.float32) if top > 0 else np.zeros_like(raw, dtype=np.float32)


def check_method(method: str) -> str:
    """``method`` when it is a registered saliency method; a did-you-mean :class:`UserError` otherwise."""
    METHODS.get(method)
    return method
