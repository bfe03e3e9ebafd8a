"""Training throughput in images per second: a plain PyTorch loop, medtransfer's trainer, the compute-only ceiling.

Three measurements per model, side by side in one process on the same PNG files:

(a) ``reference``: the loop of the PyTorch tutorials. fp32, default memory format, a ``torch.utils.data.DataLoader``
    with ``--workers`` processes that decode every PNG with PIL at every step and augment it with torchvision
    (random resized crop, rotation/translation, brightness/contrast: the same family as medtransfer's
    :class:`~medtransfer.data.transforms.RadiographAugment`), ``ToTensor`` and ``Normalize``; ``loss.item()`` each
    step for the running loss, as the tutorials do.
(b) ``medtransfer``: the same files through the trainer: decoded once into the uint8 cache (its build time is
    reported separately), :class:`~medtransfer.training.batches.Batches` and
    :func:`~medtransfer.training.loop.train_model_epoch`, set up as ``training/run.py`` does (channels_last, fused
    AdamW and bf16 autocast on CUDA, augmentation on the device). Steady state: a warm-up epoch, then a timed one.
(c) ``compute``: the ceiling for (b): the same model set up the same way, one batch already on the device,
    forward + backward + clip + optimizer step in a loop. No data work at all.

Goals: b ≥ 3 × a and b ≥ 0.9 × c on a GPU. On a CPU the same code runs (``--smoke``) but absolute numbers say
little about a GPU, and only the ratios are printed as indicative.

Example:
    python benchmarks/throughput.py --smoke --json /tmp/throughput-smoke.json       # CPU, < 1 minute
    python benchmarks/throughput.py --device cuda --models densenet121 resnet50 --size 224 --batch 64 \\
        --steps 50 --workers 8 --json throughput-h100.json
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import os
import platform
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from medtransfer.config import TrainConfig, TransferConfig
from medtransfer.data.cache import cached_images
from medtransfer.data.sources.base import SourceOptions, load_dataset
from medtransfer.data.sources.synthetic import load_synthetic
from medtransfer.data.transforms import RadiographAugment
from medtransfer.models.backbones import build_model
from medtransfer.training.batches import Batches
from medtransfer.training.device import cudnn_autotune, make_optimizer, maybe_compile
from medtransfer.training.loop import forward_backward, train_model_epoch
from medtransfer.training.schedules import build_scheduler
from medtransfer.training.tasks import make_task
from medtransfer.transfer.strategies import build_strategy

log = logging.getLogger("medtransfer.benchmarks.throughput")

GOAL_VS_REFERENCE = 3.0  # b / a
GOAL_VS_COMPUTE = 0.9  # b / c


@dataclass(frozen=True)
class Settings:
    """What one benchmark run measures; ``--smoke`` fills in small CPU values for anything not given."""

    device: torch.device
    models: list[str]
    size: int  # training resolution
    png_size: int  # resolution of the PNG files on disk
    batch: int
    warmup: int  # steps before timing starts
    steps: int  # timed steps
    workers: int  # DataLoader workers of the reference loop
    compile: bool
    threads: int | None  # intra-op CPU threads of this process; None = torch's default


FULL = {"models": ["densenet121", "resnet50"], "size": 224, "batch": 64, "warmup": 10, "steps": 50}
# one thread: on a shared CPU, OpenMP threads that wait for busy cores make step times swing tenfold
SMOKE = {
    "models": ["resnet18"], "size": 64, "batch": 8, "warmup": 1, "steps": 3, "workers": 1, "device": "cpu",
    "threads": 1,
}  # fmt: skip


def parse_args(argv: list[str] | None) -> tuple[Settings, Path | None, Path | None]:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--device", help="auto (CUDA when available), cpu, cuda, cuda:1 (default auto; --smoke: cpu)")
    p.add_argument("--models", nargs="+", help=f"registered backbones (default {FULL['models']})")
    p.add_argument("--size", type=int, help=f"training image size in pixels (default {FULL['size']})")
    p.add_argument("--png-size", type=int, help="size of the PNG files on disk (default: --size)")
    p.add_argument("--batch", type=int, help=f"images per optimizer step (default {FULL['batch']})")
    p.add_argument("--steps", type=int, help=f"timed steps per measurement (default {FULL['steps']})")
    p.add_argument("--warmup", type=int, help=f"untimed steps first (default {FULL['warmup']})")
    p.add_argument("--workers", type=int, help="DataLoader workers of the reference loop (default: CPUs, at most 8)")
    p.add_argument("--threads", type=int, help="intra-op CPU threads of the timing process (--smoke: 1)")
    p.add_argument("--compile", action="store_true", help="torch.compile the model in (b) and (c)")
    p.add_argument("--smoke", action="store_true", help="tiny CPU run: resnet18, 64 px, batch 8, 3 steps")
    p.add_argument("--json", type=Path, help="write the settings and results to this file")
    p.add_argument("--workdir", type=Path, help="folder for the PNG files and the cache (default: a temporary one)")
    a = p.parse_args(argv)
    base = {**FULL, "workers": min(8, os.cpu_count() or 1), "device": "auto", "threads": None}
    base.update(SMOKE if a.smoke else {})

    def pick(name: str):
        value = getattr(a, name)
        return base[name] if value is None else value

    device = pick("device")
    if device == "auto":
        device = "cuda" if torch.cuda.is_available() else "cpu"
    size = pick("size")
    settings = Settings(
        device=torch.device(device),
        models=list(pick("models")),
        size=size,
        png_size=a.png_size or size,
        batch=pick("batch"),
        warmup=max(1, pick("warmup")),
        steps=max(1, pick("steps")),
        workers=max(0, pick("workers")),
        compile=a.compile,
        threads=pick("threads"),
    )
    return settings, a.json, a.workdir


# --------------------------------------------------------------------------- data
def write_pngs(folder: Path, n: int, size: int) -> Path:
    """``n`` chest phantoms as 8-bit grey PNG files plus ``labels.csv`` (``file,label,patient_id``)."""
    from PIL import Image

    images = folder / "images"
    images.mkdir(parents=True, exist_ok=True)
    ds = load_synthetic(f"synthetic:chest,n={n},size={size},seed=0")
    rows = ["file,label,patient_id"]
    for i in range(n):
        name = f"images/img_{i:05d}.png"
        Image.fromarray(ds.load(i)[0]).save(folder / name)
        rows.append(f"{name},{int(ds.labels[i, 0])},{ds.meta['patient_id'].iloc[i]}")
    (folder / "labels.csv").write_text("\n".join(rows) + "\n")
    return folder


class PngFolder(torch.utils.data.Dataset):
    """The reference dataset: a list of PNG paths, decoded with PIL and transformed at every access."""

    def __init__(self, folder: Path, transform: Callable) -> None:
        lines = (folder / "labels.csv").read_text().splitlines()[1:]
        self.items = [(folder / f, float(label)) for f, label, _ in (line.split(",") for line in lines)]
        self.transform = transform

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, torch.Tensor]:
        from PIL import Image

        path, label = self.items[i]
        with Image.open(path) as img:
            x = self.transform(img.convert("L"))
        return x, torch.tensor([label])


# --------------------------------------------------------------------------- timing
def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _model(name: str, s: Settings, trainer_setup: bool) -> torch.nn.Module:
    torch.manual_seed(0)
    model = build_model(name, num_outputs=1, in_chans=1, dropout=0.2)
    if not trainer_setup:
        return model.to(s.device)
    model.to(s.device, memory_format=torch.channels_last)  # as training/run.py does
    if s.compile:
        maybe_compile(model, s.device)
    return model


def measure_reference(name: str, folder: Path, s: Settings) -> float:
    """(a) images/s of the plain loop: fp32, DataLoader + PIL + torchvision transforms, ``loss.item()`` each step."""
    from torchvision import transforms as T

    model = _model(name, s, trainer_setup=False)
    norm = model.normalization
    transform = T.Compose(
        [
            T.RandomResizedCrop(s.size, scale=(0.75, 1.0), ratio=(0.85, 1.18)),
            T.RandomAffine(degrees=10, translate=(0.06, 0.06)),
            T.ColorJitter(brightness=0.15, contrast=0.15),
            T.ToTensor(),
            T.Normalize(norm["mean"], norm["std"]),
        ]
    )
    data = PngFolder(folder, transform)
    total = s.batch * (s.warmup + s.steps)
    loader = torch.utils.data.DataLoader(
        data,
        batch_size=s.batch,
        sampler=torch.utils.data.RandomSampler(data, num_samples=total, generator=torch.Generator().manual_seed(0)),
        num_workers=s.workers,
        pin_memory=s.device.type == "cuda",
        drop_last=True,
    )
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3, weight_decay=1e-4)
    criterion = torch.nn.BCEWithLogitsLoss()
    model.train()
    running, t0 = 0.0, None
    for step, (x, y) in enumerate(loader):
        if step == s.warmup:
            _sync(s.device)
            t0 = time.perf_counter()
        x, y = x.to(s.device), y.to(s.device)
        optimizer.zero_grad()
        loss = criterion(model(x), y)
        loss.backward()
        optimizer.step()
        running += loss.item()
    _sync(s.device)
    return s.batch * s.steps / (time.perf_counter() - t0)


def build_cache(folder: Path, s: Settings, cache_dir: Path):
    """The one-time step of (b): read the folder through medtransfer's data layer and decode it into the cache."""
    t0 = time.perf_counter()
    ds = load_dataset(folder, "folder", SourceOptions())
    images = cached_images(ds, s.size, cache_dir, progress=False)
    return ds, images, time.perf_counter() - t0


def measure_medtransfer(name: str, ds, images: np.ndarray, s: Settings) -> float:
    """(b) steady-state images/s of ``train_model_epoch`` over the cache: one warm-up epoch, then one timed epoch."""
    cfg = TrainConfig(batch_size=s.batch, epochs=1, compile=s.compile)
    model = _model(name, s, trainer_setup=True)
    strategy = build_strategy(TransferConfig(strategy="finetune"), cfg)
    strategy.on_train_start(model)
    strategy.on_epoch_start(0, model)
    optimizer = make_optimizer(strategy.param_groups(model), cfg, s.device)
    scheduler = build_scheduler("constant", optimizer, s.warmup + s.steps, s.steps, cfg)
    task = make_task("binary", ds.labels)
    norm = model.normalization

    def batches(n_steps: int) -> Batches:
        return Batches(
            images, ds.labels, np.arange(s.batch * n_steps), s.batch, norm["mean"], norm["std"], s.device,
            augment=RadiographAugment(), shuffle=True, drop_last=True,
        )  # fmt: skip

    warm, timed = batches(s.warmup), batches(s.steps)
    train_model_epoch(model, task, strategy, optimizer, scheduler, warm, cfg, 0, 0, lambda info: None)
    _sync(s.device)
    t0 = time.perf_counter()
    train_model_epoch(model, task, strategy, optimizer, scheduler, timed, cfg, 0, 1, lambda info: None)
    _sync(s.device)
    return s.batch * len(timed) / (time.perf_counter() - t0)


def measure_compute(name: str, s: Settings) -> float:
    """(c) images/s with the batch already on the device: forward + backward + clip + step, nothing else."""
    cfg = TrainConfig(batch_size=s.batch, epochs=1, compile=s.compile)
    model = _model(name, s, trainer_setup=True)
    optimizer = make_optimizer(model.parameters(), cfg, s.device)
    task = make_task("binary", np.zeros((2, 1), np.float32))
    g = torch.Generator().manual_seed(0)
    x = torch.randn(s.batch, 1, s.size, s.size, generator=g).to(s.device).contiguous(memory_format=torch.channels_last)
    y = (torch.rand(s.batch, 1, generator=g) < 0.5).float().to(s.device)
    params = list(model.parameters())
    model.train()
    with cudnn_autotune(s.device.type == "cuda"):
        for step in range(s.warmup + s.steps):
            if step == s.warmup:
                _sync(s.device)
                t0 = time.perf_counter()
            optimizer.zero_grad(set_to_none=True)
            forward_backward(model, task, x, y)
            torch.nn.utils.clip_grad_norm_(params, cfg.grad_clip)
            optimizer.step()
        _sync(s.device)
    return s.batch * s.steps / (time.perf_counter() - t0)


# --------------------------------------------------------------------------- report
def device_name(device: torch.device) -> str:
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    return f"CPU {platform.processor() or platform.machine()} ({torch.get_num_threads()} intra-op threads)"


def ratio(a: float, b: float) -> float:
    return a / b if b > 0 else math.nan


def table(result: dict) -> str:
    head = f"{'model':<14}{'(a) reference':>15}{'(b) medtransfer':>17}{'(c) compute':>13}{'b/a':>8}{'b/c':>8}"
    lines = [head, "-" * len(head)]
    for name, r in result["models"].items():
        lines.append(
            f"{name:<14}{r['reference_img_s']:>15.1f}{r['medtransfer_img_s']:>17.1f}{r['compute_img_s']:>13.1f}"
            f"{r['b_over_a']:>8.2f}{r['b_over_c']:>8.2f}"
        )
    lines.append(f"images/s; goals: b/a >= {GOAL_VS_REFERENCE:.1f}, b/c >= {GOAL_VS_COMPUTE:.2f}")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> dict:
    """Run the benchmark, print the table, optionally write JSON; returns the result mapping.

    Example:
        >>> main(["--smoke"])["models"]["resnet18"]["b_over_a"] > 0  # doctest: +SKIP
        True
    """
    s, json_out, workdir = parse_args(argv)
    threads = torch.get_num_threads()
    if s.threads is not None:
        torch.set_num_threads(s.threads)
    try:
        if workdir is not None:
            return _run(s, json_out, workdir)
        with tempfile.TemporaryDirectory(prefix="medtransfer-throughput-") as tmp:
            return _run(s, json_out, Path(tmp))
    finally:
        torch.set_num_threads(threads)  # a caller's process keeps its own setting


def _run(s: Settings, json_out: Path | None, workdir: Path) -> dict:
    n_images = s.batch * max(s.steps, s.warmup)
    result: dict = {
        "device": device_name(s.device),
        "device_type": s.device.type,
        "torch": torch.__version__,
        "cuda": torch.version.cuda if s.device.type == "cuda" else None,
        "batch": s.batch,
        "size": s.size,
        "png_size": s.png_size,
        "warmup_steps": s.warmup,
        "measure_steps": s.steps,
        "workers": s.workers,
        "threads": torch.get_num_threads(),
        "compile": s.compile,
        "n_images": n_images,
        "goals": {"b_over_a": GOAL_VS_REFERENCE, "b_over_c": GOAL_VS_COMPUTE},
        "models": {},
    }
    folder = write_pngs(workdir / "pngs", n_images, s.png_size)
    ds, images, cache_s = build_cache(folder, s, workdir / "cache")
    result["cache_build_s"] = cache_s
    result["cache_build_img_s"] = n_images / cache_s
    log.info("cache: %d PNG files decoded into the uint8 cache in %.2f s", n_images, cache_s)
    for name in s.models:
        log.info("%s: (a) reference loop", name)
        a = measure_reference(name, folder, s)
        log.info("%s: (b) medtransfer trainer", name)
        b = measure_medtransfer(name, ds, images, s)
        log.info("%s: (c) compute only", name)
        c = measure_compute(name, s)
        result["models"][name] = {
            "reference_img_s": a,
            "medtransfer_img_s": b,
            "compute_img_s": c,
            "b_over_a": ratio(b, a),
            "b_over_c": ratio(b, c),
        }
        if s.device.type == "cuda":
            torch.cuda.empty_cache()
    print(
        f"device {result['device']}  torch {result['torch']}  batch {s.batch}  size {s.size} px "
        f"(PNG {s.png_size} px)  warm-up {s.warmup} + measured {s.steps} steps  workers {s.workers}"
        f"{'  compile' if s.compile else ''}"
    )
    print(f"cache build (one time): {cache_s:.2f} s for {n_images} images")
    print(table(result))
    if s.device.type != "cuda":
        print("CPU run: absolute times say nothing about a GPU; the ratios are indicative only.")
    if json_out is not None:
        json_out.parent.mkdir(parents=True, exist_ok=True)
        json_out.write_text(json.dumps(result, indent=2))
    return result


if __name__ == "__main__":
    from medtransfer.logs import setup_logging

    setup_logging()
    main(sys.argv[1:])
