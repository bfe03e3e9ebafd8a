"""Batch transforms on tensors, the same code on CPU and GPU.

:class:`RadiographAugment` draws every random parameter first from an explicit ``torch.Generator`` and then
applies one deterministic affine warp (random resized crop + small rotation + translation, optional
horizontal flip) with ``grid_sample``, followed by brightness/contrast. Drawing from a seeded generator makes
an epoch's augmentations reproducible and a resumed run identical to an uninterrupted one.

Horizontal flip is off by default: laterality matters in chest films (the heart is on the left).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F


@dataclass(frozen=True)
class RadiographAugment:
    """Augmentations suited to radiographs, applied to a float batch ``(B, C, H, W)`` in [0, 1].

    Example:
        >>> aug = RadiographAugment()
        >>> g = torch.Generator().manual_seed(0)
        >>> aug(torch.rand(4, 1, 32, 32), g).shape
        torch.Size([4, 1, 32, 32])
    """

    scale: tuple[float, float] = (0.75, 1.0)  # area fraction kept by the random resized crop
    ratio: tuple[float, float] = (0.85, 1.18)  # aspect ratio of the crop
    degrees: float = 10.0
    translate: float = 0.06  # fraction of the image size
    brightness: float = 0.15
    contrast: float = 0.15
    hflip: bool = False

    @classmethod
    def for_training(cls, hflip: bool = False, zoom: bool | None = True, kind=None) -> RadiographAugment:
        """The augmentation of ``train.hflip`` / ``train.zoom``; ``zoom=False`` keeps every length in the image (no
        random-resized-crop scaling or aspect change): a target measured in pixels (a circumference, a size) must not
        change with the augmentation. ``zoom=None`` is the default of the task kind ``kind`` (its ``zoom``
        attribute: false for regression), true without one.

        Example:
            >>> from medtransfer.tasks.base import task_kind
            >>> RadiographAugment.for_training(zoom=None, kind=task_kind("regression")).scale
            (1.0, 1.0)
        """
        if zoom is None:
            zoom = getattr(kind, "zoom", True)
        return cls(hflip=hflip) if zoom else cls(hflip=hflip, scale=(1.0, 1.0), ratio=(1.0, 1.0))

    def __call__(self, x: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        b = x.shape[0]

        def u(lo: float, hi: float) -> torch.Tensor:
            return lo + (hi - lo) * torch.rand(b, generator=generator, device=generator.device)

        area = u(*self.scale)
        log_r = u(math.log(self.ratio[0]), math.log(self.ratio[1]))
        aspect = torch.exp(log_r)
        sx = torch.sqrt(area * aspect).clamp(max=1.0)  # crop width / image width
        sy = torch.sqrt(area / aspect).clamp(max=1.0)
        angle = u(-self.degrees, self.degrees) * math.pi / 180
        # the crop centre may move within the image, plus a small translation
        tx = (1 - sx) * u(-1, 1) + u(-self.translate, self.translate) * 2
        ty = (1 - sy) * u(-1, 1) + u(-self.translate, self.translate) * 2
        flip = (torch.rand(b, generator=generator, device=generator.device) < 0.5) if self.hflip else None
        bright = u(-self.brightness, self.brightness)
        contrast = u(1 - self.contrast, 1 + self.contrast)

        params = [t.to(x.device) for t in (sx, sy, angle, tx, ty, bright, contrast)]
        sx, sy, angle, tx, ty, bright, contrast = params
        cos, sin = torch.cos(angle), torch.sin(angle)
        theta = torch.stack(
            [
                torch.stack([cos * sx, -sin * sy, tx], dim=1),
                torch.stack([sin * sx, cos * sy, ty], dim=1),
            ],
            dim=1,
        )
        if flip is not None:
            theta[:, :, 0] = torch.where(flip.to(x.device)[:, None], -theta[:, :, 0], theta[:, :, 0])
        grid = F.affine_grid(theta.to(x.dtype), list(x.shape), align_corners=False)
        out = F.grid_sample(x, grid, mode="bilinear", padding_mode="border", align_corners=False)
        mean = out.mean(dim=(1, 2, 3), keepdim=True)
        out = (out - mean) * contrast.view(-1, 1, 1, 1).to(x.dtype) + mean + bright.view(-1, 1, 1, 1).to(x.dtype)
        return out.clamp_(0.0, 1.0)


def normalize(x: torch.Tensor, mean: list[float], std: list[float]) -> torch.Tensor:
    """``(x - mean) / std`` per channel; mean/std travel with the weights (see models.weights)."""
    m = torch.as_tensor(mean, dtype=x.dtype, device=x.device).view(1, -1, 1, 1)
    s = torch.as_tensor(std, dtype=x.dtype, device=x.device).view(1, -1, 1, 1)
    return (x - m) / s


@dataclass(frozen=True)
class ContrastiveAugment:
    """Stronger radiograph-safe views for self-supervised pretraining (SimCLR), on ``(B, C, H, W)`` in [0, 1].

    A wider random resized crop and rotation (:class:`RadiographAugment`), then per image gamma, gaussian blur
    (with probability ``blur_p``) and gaussian noise. No colour jitter (1-channel films), no flip by default.
    Every parameter is drawn from ``generator`` first.

    Example:
        >>> g = torch.Generator().manual_seed(0)
        >>> ContrastiveAugment()(torch.rand(4, 1, 32, 32), g).shape
        torch.Size([4, 1, 32, 32])
    """

    scale: tuple[float, float] = (0.35, 1.0)
    degrees: float = 10.0
    brightness: float = 0.3
    contrast: float = 0.3
    gamma: tuple[float, float] = (0.7, 1.4)
    blur_p: float = 0.5
    blur_sigma: tuple[float, float] = (0.1, 1.5)  # pixels
    noise_std: tuple[float, float] = (0.0, 0.04)
    hflip: bool = False

    def __call__(self, x: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        b = x.shape[0]
        x = RadiographAugment(
            scale=self.scale, degrees=self.degrees, brightness=self.brightness, contrast=self.contrast, hflip=self.hflip
        )(x, generator)

        def u(lo: float, hi: float) -> torch.Tensor:
            return (lo + (hi - lo) * torch.rand(b, generator=generator, device=generator.device)).to(x.device, x.dtype)

        log_gamma = u(math.log(self.gamma[0]), math.log(self.gamma[1]))
        blur = u(0, 1) < self.blur_p
        sigma = u(*self.blur_sigma)
        noise_std = u(*self.noise_std)
        noise = torch.randn(x.shape, generator=generator, device=generator.device).to(x.device, x.dtype)
        x = x.clamp(min=1e-6) ** torch.exp(log_gamma).view(-1, 1, 1, 1)
        radius = max(1, math.ceil(3 * self.blur_sigma[1]))
        t = torch.arange(-radius, radius + 1, device=x.device, dtype=x.dtype)
        kernel = torch.exp(-0.5 * (t[None] / sigma[:, None]) ** 2)
        kernel = kernel / kernel.sum(dim=1, keepdim=True)  # (B, k) one 1-D kernel per image
        c = x.shape[1]
        k = kernel.repeat_interleave(c, dim=0)  # (B*C, k)
        flat = F.pad(x.reshape(1, b * c, *x.shape[2:]), (radius,) * 4, mode="replicate")
        flat = F.conv2d(flat, k[:, None, None, :], groups=b * c)
        flat = F.conv2d(flat, k[:, None, :, None], groups=b * c).reshape(x.shape)
        x = torch.where(blur.view(-1, 1, 1, 1), flat, x)
        return (x + noise * noise_std.view(-1, 1, 1, 1)).clamp_(0.0, 1.0)
