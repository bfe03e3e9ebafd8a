"""Self-supervised pretraining (SimCLR, Chen et al. 2020) on images without labels, run by ``training.loop.fit``.

Two :class:`~medtransfer.data.transforms.ContrastiveAugment` views of every image go through the backbone and a
projection MLP; the NT-Xent loss pulls the two views of an image together and pushes the other ``2B - 2`` views of
the batch away. Only the backbone is kept. SimCLR is three small pieces the training loop runs like any task:

* :class:`ContrastiveViews`, the augmentation of a :class:`~medtransfer.training.batches.Batches`: a batch is
  ``x`` of shape ``(B, 2, C, H, W)``, both views of each image. ``train.grad_accum`` cuts batches along the first
  axis, so the two views of an image always share a micro-batch (NT-Xent needs them together; the negatives are
  then the micro-batch's other views);
* :class:`SimCLRNet`, backbone + projection head: ``net(x)`` is the projections, ``(B, 2, D)``;
* :class:`ContrastiveTask`: ``loss(z, y)`` is :func:`nt_xent` of ``z[:, 0]`` and ``z[:, 1]`` (``y`` is empty).

The loop brings the rest: epochs seeded by ``(seed, epoch)``, ``checkpoint.pt`` every epoch (``--resume``), a
non-finite loss raising :class:`TrainingFailed`, bf16 on CUDA, ``grad_accum``, the progress bar. Without validation
data its best epoch is the one with the lowest training loss; the source model is the last epoch's backbone.

MONAI's ``ContrastiveLoss`` computes the same NT-Xent, but importing MONAI costs ~15 s on a busy CPU, more than
the loss is worth; :func:`nt_xent` is tested against a hand computation.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from medtransfer.config import TransferConfig
from medtransfer.data.transforms import ContrastiveAugment
from medtransfer.errors import TrainingFailed
from medtransfer.training.batches import Batches
from medtransfer.training.device import make_optimizer
from medtransfer.training.loop import fit_model
from medtransfer.transfer.strategies import Scratch


def nt_xent(z1: torch.Tensor, z2: torch.Tensor, temperature: float = 0.1) -> torch.Tensor:
    """NT-Xent: mean over the ``2B`` views of ``-log softmax`` of the positive's cosine similarity / T.

    ``z1[i]`` and ``z2[i]`` are the two views of image ``i``; each view's candidates are the other ``2B - 1``
    views (itself excluded).

    Example:
        >>> z = torch.eye(2)
        >>> round(float(nt_xent(z, z, temperature=1.0)), 4)
        0.5514
    """
    z = F.normalize(torch.cat([z1, z2]).float(), dim=1)
    n = z1.shape[0]
    sim = (z @ z.T) / temperature
    sim = sim.masked_fill(torch.eye(2 * n, dtype=torch.bool, device=z.device), float("-inf"))
    positive = torch.cat([torch.arange(n, 2 * n), torch.arange(0, n)]).to(z.device)
    return F.cross_entropy(sim, positive)


def projection_head(in_features: int, out_features: int) -> nn.Module:
    """SimCLR's MLP: Linear → BN → ReLU → Linear (discarded after pretraining)."""
    return nn.Sequential(
        nn.Linear(in_features, in_features),
        nn.BatchNorm1d(in_features),
        nn.ReLU(inplace=True),
        nn.Linear(in_features, out_features),
    )


@dataclass(frozen=True)
class ContrastiveViews:
    """A :class:`Batches` augmentation: two independent views of every image, stacked on a new axis 1.

    Example:
        >>> ContrastiveViews()(torch.rand(4, 1, 32, 32), torch.Generator().manual_seed(0)).shape
        torch.Size([4, 2, 1, 32, 32])
    """

    augment: ContrastiveAugment = field(default_factory=ContrastiveAugment)

    def __call__(self, x: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        return torch.stack([self.augment(x, generator), self.augment(x, generator)], dim=1)


class SimCLRNet(nn.Module):
    """Backbone (pooled features) + projection head; ``(B, 2, C, H, W)`` view pairs → projections ``(B, 2, D)``.

    One layer group (everything trains), so the ``scratch`` strategy drives it in the training loop.
    """

    def __init__(self, backbone: nn.Module, projection: nn.Module) -> None:
        super().__init__()
        self.backbone, self.projection = backbone, projection

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # one forward over all 2B views: BatchNorm statistics span both views, as in SimCLR
        z = self.projection(self.backbone(x.flatten(0, 1)))
        return z.view(x.shape[0], x.shape[1], -1)

    def layer_groups(self) -> list[list[nn.Parameter]]:
        return [list(self.parameters())]


@dataclass(frozen=True)
class ContrastiveTask:
    """The loop's task for SimCLR: NT-Xent between the projections of each image's two views; no labels."""

    temperature: float = 0.1

    def loss(self, z: torch.Tensor, y=None) -> torch.Tensor:
        return nt_xent(z[:, 0], z[:, 1], temperature=self.temperature)


def simclr_fit(
    model, images: np.ndarray, indices: np.ndarray, cfg, out_dir: Path, device, progress: bool = True
) -> dict:
    """Train ``model.backbone`` with SimCLR on ``images[indices]``; returns ``{"history", "epochs_run"}``.

    ``cfg`` is a :class:`~medtransfer.config.PretrainConfig`. Runs :func:`~medtransfer.training.loop.fit`, which
    writes ``checkpoint.pt`` after every epoch and resumes from it when present. AdamW over backbone and
    projection head at ``train.lr`` with a per-step cosine decay to 0 over the run.
    """
    t, p = cfg.train, cfg.pretrain
    if len(indices) < 2:
        raise TrainingFailed("SimCLR needs at least 2 images")
    device = torch.device(device)
    net = SimCLRNet(model.backbone, projection_head(model.backbone.num_features, p.projection_dim)).to(device)
    norm = model.normalization  # the views are augmented on [0, 1] images, then normalised as the model expects
    batches = Batches(
        images,
        np.zeros((len(images), 0), dtype=np.float32),  # no labels
        indices,
        min(t.batch_size, len(indices)),
        norm["mean"],
        norm["std"],
        device,
        augment=ContrastiveViews(ContrastiveAugment(hflip=t.hflip)),
        shuffle=True,
        drop_last=True,
    )
    optimizer = make_optimizer(net.parameters(), t, device)
    scheduler = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=max(t.epochs * len(batches), 1))
    strategy = Scratch(TransferConfig(strategy="scratch"), t)
    task = ContrastiveTask(p.temperature)
    state = fit_model(net, task, strategy, optimizer, scheduler, batches, None, t, cfg.seed, out_dir, progress)
    return {"history": state.history, "epochs_run": state.epoch}
