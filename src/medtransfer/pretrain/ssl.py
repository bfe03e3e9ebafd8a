"""Self-supervised pretraining (SimCLR, Chen et al. 2020) on images without labels.

Two :class:`~medtransfer.data.transforms.ContrastiveAugment` views of every image go through the backbone
(``Classifier.features``) and a projection MLP; the NT-Xent loss pulls the two views of an image together and
pushes the other ``2B - 2`` views of the batch away. Only the backbone is kept. The epoch loop mirrors
``training/loop.py``: epochs seeded by ``(seed, epoch)``, a checkpoint every epoch (``--resume``), a non-finite
loss raises :class:`TrainingFailed`, a rich progress bar.

MONAI's ``ContrastiveLoss`` computes the same NT-Xent, but importing MONAI costs ~15 s on a busy CPU, more than
the loss is worth; :func:`nt_xent` is tested against a hand computation.
"""

from __future__ import annotations

import logging
import math
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from medtransfer.data.transforms import ContrastiveAugment, normalize
from medtransfer.errors import TrainingFailed
from medtransfer.training.batches import Batches
from medtransfer.training.checkpoint import load_checkpoint, save_checkpoint
from medtransfer.training.device import make_optimizer
from medtransfer.training.loop import SYNC_EVERY, _progress

log = logging.getLogger(__name__)


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


def simclr_fit(
    model, images: np.ndarray, indices: np.ndarray, cfg, out_dir: Path, device, progress: bool = True
) -> dict:
    """Train ``model.backbone`` with SimCLR on ``images[indices]``; returns ``{"history", "epochs_run"}``.

    ``cfg`` is a :class:`~medtransfer.config.PretrainConfig`. Writes ``checkpoint.pt`` after every epoch and
    resumes from it when present.
    """
    t, p = cfg.train, cfg.pretrain
    if len(indices) < 2:
        raise TrainingFailed("SimCLR needs at least 2 images")
    proj = projection_head(model.backbone.num_features, p.projection_dim).to(device)
    params = [*model.backbone.parameters(), *proj.parameters()]
    optimizer = make_optimizer(params, t, torch.device(device))
    labels = np.zeros((len(images), 0), dtype=np.float32)
    # [0, 1] images (mean 0, std 1): the views are augmented first, then normalised as the model expects
    batches = Batches(
        images, labels, indices, min(t.batch_size, len(indices)), [0.0], [1.0], device, shuffle=True, drop_last=True
    )
    scheduler = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=max(t.epochs * len(batches), 1))
    augment = ContrastiveAugment(hflip=t.hflip)
    norm = model.normalization
    ckpt_path = out_dir / "checkpoint.pt"
    start, history = 0, []
    if ckpt_path.exists():
        ckpt = load_checkpoint(ckpt_path)
        model.load_state_dict(ckpt["model"])
        proj.load_state_dict(ckpt["projection"])
        optimizer.load_state_dict(ckpt["optimizer"])
        scheduler.load_state_dict(ckpt["scheduler"])
        start, history = int(ckpt["state"]["epoch"]), list(ckpt["state"]["history"])
        log.info("resumed from %s at epoch %d", ckpt_path, start)
    with _progress(progress) as bar:
        job = bar.add_task("simclr", total=t.epochs * len(batches), completed=start * len(batches), info="")
        for epoch in range(start, t.epochs):
            seed = int(np.random.SeedSequence([cfg.seed, epoch, 11]).generate_state(1)[0])
            torch.manual_seed(seed)
            g = torch.Generator().manual_seed(seed)
            model.train()
            proj.train()
            t0 = time.perf_counter()
            total = torch.zeros((), dtype=torch.float64, device=device)  # summed on the device: no per-step sync
            for step, (x, _) in enumerate(batches.epoch(cfg.seed, epoch)):
                views = torch.cat([augment(x, g), augment(x, g)])
                z = proj(model.features(normalize(views, norm["mean"], norm["std"])))
                loss = nt_xent(*z.chunk(2), temperature=p.temperature)
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                if t.grad_clip:
                    torch.nn.utils.clip_grad_norm_(params, t.grad_clip)
                optimizer.step()
                scheduler.step()
                total += loss.detach()
                if step % SYNC_EVERY == 0 or step == len(batches) - 1:  # the only host syncs, as in training.loop
                    running = total.item() / (step + 1)
                    if not math.isfinite(running):
                        raise TrainingFailed(
                            f"SimCLR loss became {running} by epoch {epoch + 1}, step {step + 1}; "
                            "lower train.lr or raise pretrain.temperature"
                        )
                    bar.update(job, advance=1, info=f"epoch {epoch + 1}/{t.epochs} loss {running:.4f}")
                else:
                    bar.update(job, advance=1)
            mean = total.item() / max(len(batches), 1)
            history.append(
                {
                    "epoch": epoch,
                    "train_loss": mean,
                    "lr": optimizer.param_groups[0]["lr"],
                    "seconds": time.perf_counter() - t0,
                }
            )
            save_checkpoint(
                ckpt_path,
                {
                    "model": model.state_dict(),
                    "projection": proj.state_dict(),
                    "optimizer": optimizer.state_dict(),
                    "scheduler": scheduler.state_dict(),
                    "state": {"epoch": epoch + 1, "history": history},
                },
            )
            log.info("epoch %d/%d  NT-Xent %.4f", epoch + 1, t.epochs, mean)
    if history and not math.isfinite(history[-1]["train_loss"]):
        raise TrainingFailed("SimCLR ended with a non-finite loss")
    return {"history": history, "epochs_run": len(history)}
