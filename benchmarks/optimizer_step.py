"""AdamW step time for a backbone's parameters: default (per-tensor) vs foreach vs fused kernel, side by side.

    .venv/bin/python benchmarks/optimizer_step.py [--model resnet18] [--threads 1] [--steps 20]

Why: on a CPU, training a small-image model spends a large share of each step in the optimizer; the trainer
uses the fused kernel (``training/device.make_optimizer``). Prints seconds per step and the ratios to default.
"""

from __future__ import annotations

import argparse
import time

import torch


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", default="resnet18")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--steps", type=int, default=20)
    args = p.parse_args()
    import timm

    torch.set_num_threads(args.threads)
    model = timm.create_model(args.model, num_classes=1, in_chans=1)
    for param in model.parameters():
        param.grad = torch.randn_like(param)
    times = {}
    for name, kw in (("default", {}), ("foreach", {"foreach": True}), ("fused", {"fused": True})):
        opt = torch.optim.AdamW(model.parameters(), lr=1e-3, **kw)
        for _ in range(3):  # warm-up: state allocation
            opt.step()
        start = time.perf_counter()
        for _ in range(args.steps):
            opt.step()
        times[name] = (time.perf_counter() - start) / args.steps
    n = sum(q.numel() for q in model.parameters())
    print(f"{args.model}: {n / 1e6:.1f} M parameters, {args.threads} thread(s), torch {torch.__version__}")
    for name, t in times.items():
        print(f"  {name:8s} {t * 1e3:8.1f} ms/step   default/{name} = {times['default'] / t:.1f}x")


if __name__ == "__main__":
    main()
