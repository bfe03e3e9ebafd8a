"""A plain reference loop on the images, split and settings of one ``medtransfer train`` run.

It answers "does medtransfer's trainer learn as well as the loop of the PyTorch tutorials?" on the same data:

* data: the run's resolved ``config.yaml`` (path, labels, image size, seed), its ``split.csv`` (the same train /
  val / test images, the same nested subset of ``train.n_train``) and the same decoded uint8 images;
* model: timm ``resnet18`` (random weights; ``--source FILE`` loads a state dict, nothing is downloaded), one
  linear output per target or class;
* training: AdamW (lr 1e-3, weight decay 1e-2), cosine LR over all steps, the run's batch size and epochs;
  light augmentation (random affine: rotation ±10°, translation ±5 %, no scaling, so a length in pixels keeps its
  value); inputs standardised with the training images' mean and sd; regression: L1 on the standardised target;
  classification: cross-entropy (multiclass) or BCE (binary, multi-label);
* evaluation: the weights of the last epoch (no checkpoint selection), scored by the task kind's own metric code
  (:mod:`medtransfer.evaluation` through :meth:`TaskKind.summarize`: MAE or AUC with the same bootstrap CI).

Example:
    medtransfer train examples/folder_train.yaml --out runs/hc --set data.path=../shared/data/hc18 ...
    python benchmarks/plain_baseline.py --run runs/hc --json runs/hc/plain.json
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from medtransfer.config import Config, load_config
from medtransfer.data.cache import cached_images
from medtransfer.data.splits import load_split
from medtransfer.evaluation.metrics import to_jsonable
from medtransfer.tasks.base import task_kind
from medtransfer.training.run import load_data


def affine_augment(x: torch.Tensor, g: torch.Generator, degrees: float = 10.0, translate: float = 0.05):
    """A random rotation (±``degrees``) and translation (± ``translate`` of the size) per image; no scaling."""
    b = x.shape[0]
    angle = (torch.rand(b, generator=g) * 2 - 1) * math.radians(degrees)
    shift = (torch.rand(b, 2, generator=g) * 2 - 1) * translate * 2  # affine_grid coordinates span [-1, 1]
    cos, sin = torch.cos(angle), torch.sin(angle)
    theta = torch.stack([torch.stack([cos, -sin, shift[:, 0]], 1), torch.stack([sin, cos, shift[:, 1]], 1)], 1)
    grid = F.affine_grid(theta, list(x.shape), align_corners=False)
    return F.grid_sample(x, grid, padding_mode="border", align_corners=False)


def run_plain(run_dir: Path, source: str | None = None, threads: int = 2) -> dict:
    torch.set_num_threads(threads)
    cfg: Config = load_config(run_dir / "config.yaml")
    done = json.loads((run_dir / "metrics.json").read_text()) if (run_dir / "metrics.json").exists() else {}
    ds = load_data(cfg)
    kind = task_kind(cfg.task or done.get("task") or ds.task)
    split = load_split(run_dir / "split.csv", ds)
    images = cached_images(ds, cfg.data.image_size, cfg.data.cache_dir, progress=False, resize=cfg.data.resize)
    train_idx, val_idx, test_idx = split.train_subset(cfg.train.n_train), split.indices("val"), split.indices("test")
    labels = ds.labels.astype(np.float32)

    def batch(idx: np.ndarray) -> torch.Tensor:
        return torch.from_numpy(np.asarray(images[np.sort(idx)][np.argsort(np.argsort(idx))])).float() / 255

    x_train = batch(train_idx)
    mean, sd = x_train.mean().item(), x_train.std().item()
    regression = kind.name == "regression"
    y_train = labels[train_idx]
    center, scale = np.nanmean(y_train, 0), np.nanstd(y_train, 0)
    k = labels.shape[1]

    torch.manual_seed(cfg.seed)
    import timm

    model = timm.create_model("resnet18", pretrained=False, num_classes=k, in_chans=ds.channels)
    if source:
        state = torch.load(source, map_location="cpu", weights_only=True)
        state = {n: w for n, w in state.items() if not n.startswith("fc.")}
        print("loaded", source, model.load_state_dict(state, strict=False))
    model.to(memory_format=torch.channels_last)  # speed only (about 2x for CPU convolutions); the maths is the same
    epochs, bs = cfg.train.epochs, cfg.train.batch_size
    steps_per_epoch = max(1, len(train_idx) // bs)
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3, weight_decay=1e-2)
    scheduler = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=epochs * steps_per_epoch)

    def loss_fn(out: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        if regression:
            z = (y - torch.from_numpy(center)) / torch.from_numpy(scale)
            known = torch.isfinite(z)
            return F.l1_loss(out[known], z[known])
        if kind.one_hot:
            return F.cross_entropy(out, y.argmax(1))
        return F.binary_cross_entropy_with_logits(out, y)

    @torch.no_grad()
    def outputs(idx: np.ndarray) -> np.ndarray:
        model.eval()
        out = torch.cat([model((batch(idx[i : i + 256]) - mean) / sd) for i in range(0, len(idx), 256)])
        if regression:
            return out.numpy() * scale + center
        return (out.softmax(1) if kind.one_hot else out.sigmoid()).numpy()

    t0, history = time.perf_counter(), []
    g = torch.Generator().manual_seed(cfg.seed)
    for epoch in range(epochs):
        model.train()
        order = train_idx[torch.randperm(len(train_idx), generator=g).numpy()]
        losses = []
        for s in range(steps_per_epoch):
            idx = order[s * bs : (s + 1) * bs]
            x = ((affine_augment(batch(idx), g) - mean) / sd).contiguous(memory_format=torch.channels_last)
            loss = loss_fn(model(x), torch.from_numpy(labels[idx]))
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            scheduler.step()
            losses.append(loss.item())
        val = kind.validation_score(labels[val_idx], outputs(val_idx))
        history.append({"epoch": epoch, "train_loss": float(np.mean(losses)), f"val_{kind.metric}": val})
        print(f"epoch {epoch + 1}/{epochs}  loss {np.mean(losses):.4f}  val {kind.metric_label} {val:.4f}", flush=True)

    def score(idx: np.ndarray) -> dict:
        pids = ds.meta["patient_id"].to_numpy()[idx]
        return kind.summarize(labels[idx], outputs(idx), list(ds.label_names), patient_ids=pids, seed=cfg.seed)

    test = score(test_idx) if len(test_idx) else {}
    return {
        **test,
        "val": score(val_idx),
        "task": kind.name,
        "n_train": len(train_idx),
        "epochs": epochs,
        "batch_size": bs,
        "image_size": cfg.data.image_size,
        "constant_test": kind.constant_score(labels[train_idx], labels[test_idx]) if len(test_idx) else math.nan,
        "history": history,
        "seconds": time.perf_counter() - t0,
        "threads": threads,
    }


def main(argv: list[str] | None = None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--run", type=Path, required=True, help="a finished `medtransfer train` run folder")
    p.add_argument("--source", help="a timm resnet18 state dict to start from (default: random weights)")
    p.add_argument("--threads", type=int, default=2, help="torch intra-op threads (default 2)")
    p.add_argument("--json", type=Path, help="write the metrics here")
    args = p.parse_args(argv)
    result = run_plain(args.run, args.source, args.threads)
    ci = result.get("score_ci") or [math.nan, math.nan]
    print(f"plain loop: test {result.get('metric')} {result.get('score', math.nan):.4f} [{ci[0]:.4f}, {ci[1]:.4f}]")
    if args.json:
        args.json.write_text(json.dumps(to_jsonable(result), indent=2))
    return result


if __name__ == "__main__":
    main(sys.argv[1:])
