"""The data layer's per-image steps as tensor operations, for a model exported with its preprocessing.

Training and ``predict`` read an image, bring it to the run's channels (:func:`medtransfer.data.colour.conform`) and
to its image size (:func:`medtransfer.data.cache.resize_uint8`) in numpy and PIL, once, into the uint8 cache. An
exported graph (``medtransfer export``) must do the same to a raw 8-bit image, bit for bit, with shapes known only
when it runs. The modules here do, on a ``(N, C, H, W)`` batch of 8-bit values held in float64 (exact integers):

* :class:`ConformChannels`: a 1-channel model takes grey or RGB (PIL's ``convert('L')`` luma, its fixed-point
  rounding included); a 3-channel model takes RGB or grey (copied to 3 channels);
* :class:`ResizeUint8`: PIL's bilinear resize of ``resize_uint8`` (``interpolate``; ``pad``: shrink to fit, keeping
  the aspect ratio, centred on a zero canvas). PIL resamples in two passes with 22-bit fixed-point coefficients and
  an 8-bit image between the passes; the module builds the same coefficients from the input's shape and does both
  passes as matrix products in float64, where every sum is an exact integer, rounding as PIL rounds. Pillow 13
  runs the vertical pass first when the height shrinks by more than twice what the width does
  (python-pillow/Pillow#9549), which changes the rounding between the passes; :func:`pillow_vertical_first`
  asks the installed Pillow which order it uses.

Example:
    >>> x = torch.randint(0, 256, (2, 1, 50, 30), dtype=torch.uint8)
    >>> y = ResizeUint8(32, "interpolate")(x.double())
    >>> from medtransfer.data.cache import resize_uint8
    >>> bool((y[0].numpy() == resize_uint8(x[0].numpy(), 32)).all())
    True
"""

from __future__ import annotations

import functools

import numpy as np
import torch
from PIL import Image
from torch import nn

from medtransfer.data.cache import RESIZE_MODES

PRECISION_BITS = 22  # Pillow's fixed-point coefficients for 8-bit images (libImaging/Resample.c)
_LUMA = (19595.0, 38470.0, 7471.0)  # PIL's convert('L') weights in 1/65536 (libImaging/Convert.c, L24)


class ConformChannels(nn.Module):
    """``(N, 1 or 3, H, W)`` 8-bit values → ``(N, channels, H, W)`` as :func:`medtransfer.data.colour.conform` does.

    Any other channel count fails when the graph runs (the readers drop alpha and expand palettes before this step).
    """

    def __init__(self, channels: int) -> None:
        super().__init__()
        if channels not in (1, 3):
            raise ValueError(f"channels must be 1 or 3, got {channels}")
        self.channels = channels
        # broadcasting against (1, 3, 1, 1) copies a grey image to 3 channels and keeps an RGB one: no branch
        self.register_buffer("three", torch.ones(1, 3, 1, 1, dtype=torch.float64), persistent=False)
        self.register_buffer("luma", torch.tensor(_LUMA, dtype=torch.float64).view(1, 3, 1, 1), persistent=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        rgb = x * self.three
        if self.channels == 3:
            return rgb
        # grey copied to RGB gives back the grey value: the weights sum to 65536
        return torch.floor(((rgb * self.luma).sum(dim=1, keepdim=True) + 32768.0) / 65536.0)


class ResizeUint8(nn.Module):
    """:func:`medtransfer.data.cache.resize_uint8` on a ``(N, C, H, W)`` float64 batch of 8-bit values, any H×W.

    ``vertical_first``: the pass order of the Pillow to match (``None``: the installed one's,
    :func:`pillow_vertical_first`).
    """

    def __init__(self, size: int, mode: str = "interpolate", vertical_first: bool | None = None) -> None:
        super().__init__()
        if mode not in RESIZE_MODES:
            raise ValueError(f"resize mode must be one of {list(RESIZE_MODES)}, got {mode!r}")
        self.size, self.mode = int(size), mode
        self.vertical_first = pillow_vertical_first() if vertical_first is None else bool(vertical_first)
        self.register_buffer("rows", torch.arange(self.size, dtype=torch.float64), persistent=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # the input's height and width as tensors, so a traced graph keeps them symbolic (x.shape would freeze them);
        # of shape (1,), not 0-dim: the TorchScript-based ONNX exporter computes 0-dim float64 tensors in float32
        h = torch.ones_like(x[0, 0, :, 0]).sum(dim=0, keepdim=True)
        w = torch.ones_like(x[0, 0, 0, :]).sum(dim=0, keepdim=True)
        s = float(self.size)
        if self.mode == "pad":
            scale = torch.clamp(s / torch.maximum(h, w), max=1.0)
            oh = torch.clamp(torch.round(h * scale), min=1.0)  # round half to even, as Python's round
            ow = torch.clamp(torch.round(w * scale), min=1.0)
        else:
            oh, ow = torch.full_like(h, s), torch.full_like(w, s)
        kh = _coefficients(x[0, 0, :, 0], h, oh, self.rows - torch.floor((s - oh) / 2))  # (S, H)
        kw = _coefficients(x[0, 0, 0, :], w, ow, self.rows - torch.floor((s - ow) / 2))  # (S, W)
        return _resample(x, kh, kw, (oh < h) & (h - oh > 2.0 * (w - ow)) if self.vertical_first else None)


def _coefficients(line: torch.Tensor, n_in: torch.Tensor, n_out: torch.Tensor, rows: torch.Tensor) -> torch.Tensor:
    """PIL's fixed-point bilinear coefficients resampling ``n_in`` pixels to ``n_out`` (``precompute_coeffs`` and
    ``normalize_coeffs_8bpc``): output pixel ``rows[r]`` in row ``r`` of a ``(len(rows), n_in)`` matrix, zero where
    ``rows[r]`` is outside ``0 .. n_out - 1`` (the zero canvas of ``pad``). A pixel outside PIL's window has weight 0
    here too, so the dense rows hold PIL's windows. ``line``: any tensor of ``n_in`` float64 values (its length is
    what the graph reads)."""
    j = torch.cumsum(torch.ones_like(line), 0) - 1.0  # 0 .. n_in - 1
    scale = n_in / n_out
    support = torch.clamp(scale, min=1.0)  # bilinear: support 1, widened by the scale when shrinking
    center = (rows + 0.5) * scale
    weight = torch.clamp(1.0 - torch.abs((j[None, :] - center[:, None] + 0.5) / support), min=0.0)
    weight = weight / torch.clamp(weight.sum(dim=1, keepdim=True), min=1e-300)
    fixed = torch.floor(weight * 2.0**PRECISION_BITS + 0.5)
    inside = (rows >= 0) & (rows < n_out)
    return torch.where(inside[:, None], fixed, torch.zeros_like(fixed))


def _resample(x: torch.Tensor, kh: torch.Tensor, kw: torch.Tensor, vertical_first: torch.Tensor | None) -> torch.Tensor:
    """Both passes with an 8-bit image between them: horizontal first, or vertical first where ``vertical_first``
    (a boolean scalar tensor; ``None``: never). Both orders are computed and one kept, so the graph has no branch."""
    horizontal = _round8(torch.matmul(kh, _round8(torch.matmul(x, kw.t()))))
    if vertical_first is None:
        return horizontal
    vertical = _round8(torch.matmul(_round8(torch.matmul(kh, x)), kw.t()))
    return torch.where(vertical_first, vertical, horizontal)


def _round8(acc: torch.Tensor) -> torch.Tensor:
    """PIL's ``clip8``: a fixed-point sum back to an 8-bit value, rounding half up."""
    return torch.clamp(torch.floor((acc + 2.0 ** (PRECISION_BITS - 1)) / 2.0**PRECISION_BITS), 0.0, 255.0)


@functools.cache
def pillow_vertical_first() -> bool:
    """Whether the installed Pillow resizes vertically first when the height shrinks by more than twice what the
    width does (Pillow 13 does; earlier versions always start with the horizontal pass). Answered by resizing one
    image where the two orders round differently.

    Example:
        >>> isinstance(pillow_vertical_first(), bool)
        True
    """
    img = np.random.default_rng(0).integers(0, 256, (40, 40), dtype=np.uint8)
    ref = torch.from_numpy(np.asarray(Image.fromarray(img).resize((36, 4), Image.BILINEAR)).astype(np.float64))
    x = torch.from_numpy(img).double()
    n = torch.tensor(40.0, dtype=torch.float64)
    kh = _coefficients(x[:, 0], n, torch.tensor(4.0, dtype=torch.float64), torch.arange(4, dtype=torch.float64))
    kw = _coefficients(x[0], n, torch.tensor(36.0, dtype=torch.float64), torch.arange(36, dtype=torch.float64))
    return bool(torch.equal(_resample(x, kh, kw, torch.tensor(True)), ref))
