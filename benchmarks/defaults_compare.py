"""``medtransfer train`` with its defaults against the plain loop of ``plain_baseline.py``, side by side.

For each case it runs ``medtransfer train CONFIG --out OUT/<name>/ours --set ...`` (unless that run is finished
already), then the plain loop on the same run folder (same images, split, N, size, epochs, seed), and prints one
table: test metric with its 95 % CI for both, the training-mean MAE (regression) and ours / plain.

Example (2-core CPU, about 10 min per case):
    python benchmarks/defaults_compare.py --out runs/defaults --case hc18_all \\
        --set data.path=../shared/data/hc18 --set data.labels=[hc_px] --set data.image_size=64 \\
        --set model.source=scratch --set transfer.strategy=scratch
"""

from __future__ import annotations

import argparse
import json
import math
import subprocess
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import plain_baseline  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]


def ours(config: str, out: Path, overrides: list[str]) -> dict:
    if not (out / "metrics.json").exists():
        exe = Path(sys.executable).with_name("medtransfer")
        cmd = [str(exe), "train", config, "--out", str(out), *[a for s in overrides for a in ("--set", s)]]
        print("$", " ".join(cmd), flush=True)
        subprocess.run(cmd, check=True, cwd=ROOT)
    return json.loads((out / "metrics.json").read_text())


def row(name: str, a: dict, b: dict, command: str) -> dict:
    metric = a.get("metric")
    lower = metric == "mae"
    ratio = a["score"] / b["score"] if b.get("score") else math.nan
    return {
        "case": name,
        "command": command,
        "n_train": a.get("n_train"),
        "metric": metric,
        "ours": a["score"],
        "ours_ci": a.get("score_ci"),
        "plain": b["score"],
        "plain_ci": b.get("score_ci"),
        "training_mean": b.get("constant_test") if lower else None,
        "ratio": ratio,  # ours / plain: < 1 is better for an MAE, > 1 for an AUC
        "ours_accuracy": a.get("accuracy"),
        "plain_accuracy": b.get("accuracy"),
        "ours_best_epoch": a.get("best_epoch"),
    }


def fmt(v: float, ci) -> str:
    return f"{v:.3f} [{ci[0]:.3f}, {ci[1]:.3f}]" if ci else f"{v:.3f}"


def main(argv: list[str] | None = None) -> list[dict]:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--out", type=Path, required=True, help="folder for the runs (<out>/<case>/ours, plain.json)")
    p.add_argument("--case", required=True, help="a name for this comparison")
    p.add_argument("--config", default="examples/folder_train.yaml")
    p.add_argument("--set", dest="overrides", action="append", default=[], help="a --set for medtransfer train")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--json", type=Path, help="append the table row here (a JSON list)")
    args = p.parse_args(argv)
    run = args.out / args.case / "ours"
    a = ours(args.config, run, args.overrides)
    plain_json = args.out / args.case / "plain.json"
    if plain_json.exists():
        b = json.loads(plain_json.read_text())
    else:
        b = plain_baseline.main(["--run", str(run), "--threads", str(args.threads), "--json", str(plain_json)])
    command = f"medtransfer train {args.config} " + " ".join(f"--set {s}" for s in args.overrides)
    r = row(args.case, a, b, command)
    print(f"\n| case | N | {r['metric']} ours | plain | training mean | ours/plain |")
    print("|---|---|---|---|---|---|")
    mean = f"{r['training_mean']:.3f}" if r["training_mean"] is not None else "-"
    ours_s, plain_s = fmt(r["ours"], r["ours_ci"]), fmt(r["plain"], r["plain_ci"])
    print(f"| {r['case']} | {r['n_train']} | {ours_s} | {plain_s} | {mean} | {r['ratio']:.3f} |")
    if args.json:
        rows = json.loads(args.json.read_text()) if args.json.exists() else []
        args.json.write_text(json.dumps([*[x for x in rows if x["case"] != r["case"]], r], indent=2, default=str))
    return [r]


if __name__ == "__main__":
    main(sys.argv[1:])
