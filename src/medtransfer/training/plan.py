"""What a run will do, before it runs: ``medtransfer train CONFIG --dry-run`` and ``--show-batch``.

:func:`plan_run` resolves everything a run resolves before its folder is made (the ``--out`` rules, names, the
data with its detected format and task, the split, the source and its card, the strategy's settings) and times a
few optimizer steps on one batch decoded in memory, so the estimate reflects this machine, this model and this
image size. Nothing is written: not the run folder, not the image cache (the sample is decoded without it).
"""

from __future__ import annotations

import dataclasses
import math
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from medtransfer.config import Config
from medtransfer.data.cache import cache_key, default_cache_dir, resize_uint8, to_uint8
from medtransfer.data.dataset import ImageDataset
from medtransfer.data.sources.base import detect_format
from medtransfer.data.splits import Split
from medtransfer.data.transforms import RadiographAugment
from medtransfer.io import atomic_write
from medtransfer.models.weights import create_model, resolve_weights
from medtransfer.tasks.base import task_kind
from medtransfer.training.batches import Batches
from medtransfer.training.fitting import step_budget
from medtransfer.training.run import (
    Prepared,
    check_out,
    check_task,
    load_data,
    pick_device,
    preflight,
    resolve_split,
)
from medtransfer.training.tasks import make_task
from medtransfer.transfer.strategies import build_strategy

TIMED_STEPS = 3  # optimizer steps timed after one warm-up step


@dataclass
class StepTiming:
    """Seconds per optimizer step and per evaluated image, measured on one batch; decode seconds per image."""

    step_s: float
    eval_image_s: float
    decode_image_s: float
    batch: int
    device: str


@dataclass
class RunPlan:
    cfg: Config
    ds: ImageDataset
    split: Split
    format: str
    task: str
    task_detected: bool
    source: str
    strategy: dict[str, Any]
    out: Path | None
    cached: bool
    timing: StepTiming | None = None
    sample: np.ndarray | None = None  # uint8 (B, C, S, S): the decoded training images of the timed batch
    sample_idx: np.ndarray | None = None
    notes: list[str] = field(default_factory=list)

    @property
    def n_train(self) -> int:
        return len(self.split.train_subset(self.cfg.train.n_train))

    def steps_per_epoch(self, n_train: int | None = None) -> int:
        """Optimizer steps per epoch at ``n_train`` images (default: the run's), ``train.max_steps`` applied."""
        t = self.cfg.train
        n = self.n_train if n_train is None else n_train
        full = max(1, n // t.batch_size) if n > t.batch_size else 1
        return step_budget(t.epochs, t.max_steps, full) or full

    def estimate_s(self, n_train: int | None = None) -> float | None:
        """Seconds for the run (or the same run at another ``n_train``): decoding the cache when it is not built,
        the optimizer steps, validation every ``val_every`` epochs and the final scoring with ``eval.tta``."""
        if self.timing is None:
            return None
        t, cfg = self.timing, self.cfg
        steps = cfg.train.epochs * self.steps_per_epoch(n_train)
        counts = self.split.counts()
        validations = math.ceil(cfg.train.epochs / cfg.train.val_every) + 1
        evaluated = counts["val"] * validations + (counts["test"] or counts["val"]) * (1 + cfg.eval.tta)
        return steps * t.step_s + evaluated * t.eval_image_s

    def decode_s(self) -> float:
        return 0.0 if self.cached or self.timing is None else len(self.ds) * self.timing.decode_image_s

    def text(self) -> str:
        cfg, counts = self.cfg, self.split.counts()
        how = "detected" if self.task_detected else "from the config"
        lines = [
            f"data      {cfg.data.path}  (format {self.format}{'' if cfg.data.format else ', detected'}): "
            f"{len(self.ds)} images, {self.ds.meta['patient_id'].nunique()} patients, {self.ds.channels} channel(s)",
            f"task      {self.task} ({how}); labels {list(self.ds.label_names)[:8]}"
            + (" …" if len(self.ds.label_names) > 8 else ""),
            f"split     train {counts['train']}, val {counts['val']}, test {counts['test']}"
            + (f" (from {cfg.data.split_file})" if cfg.data.split_file else f" (made with seed {cfg.seed})"),
            f"training  n_train {self.n_train} of {counts['train']}; {cfg.train.epochs} epochs × "
            f"{self.steps_per_epoch()} steps of {cfg.train.batch_size} images at {cfg.data.image_size} px",
            f"model     {cfg.model.backbone} from {self.source}",
            "strategy  " + ", ".join(f"{k}={v}" for k, v in self.strategy.items()),
            f"images    {'cached' if self.cached else 'not cached yet: decoded once, then reused'}"
            f" ({cfg.data.cache_dir or default_cache_dir()})",
        ]
        if self.timing is not None:
            t = self.timing
            lines.append(
                f"timing    {t.step_s * 1000:.0f} ms per step of {t.batch} images on {t.device} "
                f"(measured: {TIMED_STEPS} steps after a warm-up), {t.eval_image_s * 1000:.1f} ms per scored image"
            )
            est = self.estimate_s() or 0.0
            decode = f" + {duration(self.decode_s())} to decode the images once" if self.decode_s() >= 1 else ""
            lines.append(f"estimate  {duration(est)}{decode}")
        lines.append(f"output    {self.out if self.out else '(no --out given)'}: nothing was written (dry run)")
        lines += [f"note      {n}" for n in self.notes]
        return "\n".join(lines)


def duration(seconds: float) -> str:
    if seconds < 90:
        return f"~{seconds:.0f} s"
    if seconds < 5400:
        return f"~{seconds / 60:.0f} min"
    return f"~{seconds / 3600:.1f} h"


def plan_run(cfg: Config, out: str | Path | None = None, timed: bool = True) -> RunPlan:
    """Resolve ``cfg`` as ``train`` would, without writing anything; with ``timed`` also measure a few steps."""
    if out is not None:
        check_out(Path(out), resume=False)
    preflight(cfg)
    ds = load_data(cfg)
    fmt = cfg.data.format or detect_format(cfg.data.path)
    split = resolve_split(cfg, ds, keep_hashes=False)  # the images are hashed for duplicates, nothing is kept
    check_task(cfg, Prepared(ds, split, np.empty(0)))
    kind = cfg.task or ds.task
    spec = resolve_weights(cfg.model.source, cfg.model.backbone)
    source = cfg.model.source if spec.kind == "scratch" else f"{cfg.model.source} ({spec.description or spec.kind})"
    strategy = build_strategy(cfg.transfer, cfg.train).settings()
    cached = (
        Path(cfg.data.cache_dir or default_cache_dir()) / f"{cache_key(ds, cfg.data.image_size, cfg.data.resize)}.npy"
    ).is_file()
    plan = RunPlan(cfg, ds, split, fmt, kind, cfg.task is None, source, strategy, Path(out) if out else None, cached)
    plan.sample_idx = split.train_subset(cfg.train.n_train)[: cfg.train.batch_size]
    t0 = time.perf_counter()
    plan.sample = np.stack(
        [resize_uint8(to_uint8(ds.load(int(i))), cfg.data.image_size, cfg.data.resize) for i in plan.sample_idx]
    )
    decode = (time.perf_counter() - t0) / max(1, len(plan.sample_idx))
    if timed:
        plan.timing = time_steps(cfg, plan, decode)
    return plan


def _sample_batches(cfg: Config, plan: RunPlan, model, device, augment: bool) -> Batches:
    t = cfg.train
    labels = plan.ds.labels[plan.sample_idx].astype(np.float32)
    norm = model.normalization
    aug = RadiographAugment.for_training(t.hflip, t.zoom, task_kind(plan.task)) if (augment and t.augment) else None
    n = len(plan.sample_idx)
    return Batches(plan.sample, labels, np.arange(n), n, norm["mean"], norm["std"], device, augment=aug, shuffle=True)


def time_steps(cfg: Config, plan: RunPlan, decode_image_s: float) -> StepTiming:
    """Seconds per optimizer step (forward, backward, step: all layers training, the costliest phase of any
    strategy) and per scored image, on the sample batch with the run's model, source weights and device."""
    torch.manual_seed(cfg.seed)
    device = pick_device(cfg.train.device)
    train_idx = plan.split.train_subset(cfg.train.n_train)
    task = make_task(plan.task, plan.ds.labels[train_idx], cfg.train.pos_weight, cfg.train.loss).to(device)
    model_cfg = dataclasses.replace(cfg.model, in_chans=plan.ds.channels)
    model, _ = create_model(model_cfg, task.num_outputs, list(plan.ds.label_names), cfg.data.image_size)
    model.to(device, memory_format=torch.channels_last)
    optimizer = torch.optim.AdamW(model.parameters(), lr=cfg.train.lr)
    batches = _sample_batches(cfg, plan, model, device, augment=True)

    def sync() -> None:
        if device.type == "cuda":
            torch.cuda.synchronize(device)

    model.train()
    seconds = []
    for step in range(TIMED_STEPS + 1):
        x, y = next(iter(batches.epoch(cfg.seed, step)))
        sync()
        t0 = time.perf_counter()
        optimizer.zero_grad(set_to_none=True)
        task.loss(model(x), y).backward()
        optimizer.step()
        sync()
        seconds.append(time.perf_counter() - t0)
    model.eval()
    with torch.no_grad():
        x, _ = next(iter(_sample_batches(cfg, plan, model, device, augment=False).epoch(cfg.seed, 0)))
        sync()
        t0 = time.perf_counter()
        model(x)
        sync()
        fwd = (time.perf_counter() - t0) / len(x)
    return StepTiming(float(np.median(seconds[1:])), fwd, decode_image_s, len(plan.sample_idx), str(device))


def write_batch_grid(cfg: Config, plan: RunPlan, path: str | Path, n: int = 16) -> int:
    """fastai's ``show_batch``: up to ``n`` training images as the model sees them (augmented, before
    normalisation) with their labels, in a grid; PNG written atomically. Returns how many were drawn."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    k = min(n, len(plan.sample_idx))
    t = cfg.train
    aug = RadiographAugment.for_training(t.hflip, t.zoom, task_kind(plan.task)) if t.augment else None
    x = torch.from_numpy(np.ascontiguousarray(plan.sample[:k])).float().div_(255.0)
    if aug is not None:
        x = aug(x, torch.Generator().manual_seed(cfg.seed))
    kind = task_kind(plan.task)
    names = list(plan.ds.label_names)
    cols = min(4, k)
    rows = math.ceil(k / cols)
    fig, axes = plt.subplots(rows, cols, figsize=(2.2 * cols, 2.4 * rows), dpi=110, squeeze=False)
    for ax in axes.flat:
        ax.axis("off")
    for j in range(k):
        img = x[j].clamp(0, 1).numpy()
        ax = axes.flat[j]
        if img.shape[0] == 1:
            ax.imshow(img[0], cmap="gray", vmin=0, vmax=1)
        else:
            ax.imshow(np.moveaxis(img[:3], 0, -1))
        ax.set_title(kind.label_text(names, plan.ds.labels[plan.sample_idx[j]])[:40], fontsize=7)
    aug_text = "augmented as in training" if aug is not None else "no augmentation (train.augment: false)"
    fig.suptitle(f"{k} training images at {cfg.data.image_size} px, {aug_text}", fontsize=9)
    fig.tight_layout()
    atomic_write(path, lambda tmp: fig.savefig(tmp, format="png"))
    plt.close(fig)
    return k
