"""Compare transfer strategies on a nested training subset of size N over several seeds.

Usage (the numbers in issue [2/6]'s note came from this command):

    .venv/bin/python examples/small_n_compare.py examples/pneumonia_n50.yaml --out runs/n50 \
        --set data.path=$MEDTRANSFER_DATA/pneumoniamnist/pneumoniamnist_trainval.npz \
        --strategies finetune,recipe --seeds 0,1,2,3,4

Every (strategy, seed) pair is a normal `medtransfer train` run folder under --out; finished runs are
skipped, so the script can be re-run after an interruption. The full study command (issue [4/6]) replaces it.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np

from medtransfer.config import load_config, replace
from medtransfer.logs import setup_logging
from medtransfer.training.run import train_run


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("config")
    p.add_argument("--out", required=True)
    p.add_argument("--set", action="append", default=[], dest="overrides")
    p.add_argument("--strategies", default="finetune,recipe")
    p.add_argument("--seeds", default="0,1,2,3,4")
    args = p.parse_args()
    setup_logging()
    base = load_config(args.config, args.overrides)
    rows = []
    for strategy in args.strategies.split(","):
        for seed in [int(s) for s in args.seeds.split(",")]:
            run = Path(args.out) / f"{strategy}-seed{seed}"
            if (run / "metrics.json").is_file():
                m = json.loads((run / "metrics.json").read_text())
            else:
                cfg = replace(base, seed=seed, **{"transfer.strategy": strategy})
                m = train_run(cfg, run, resume=(run / "checkpoint.pt").exists(), progress=False)
            rows.append((strategy, seed, m["val"]["auc"], m["auc"], m["seconds"]))
            print(f"{strategy:>10} seed {seed}: val AUC {m['val']['auc']:.4f}  test AUC {m['auc']:.4f}  "
                  f"({m['seconds']:.0f} s)", flush=True)
    print("\nstrategy     val AUC mean ± sd     test AUC mean ± sd")
    for strategy in args.strategies.split(","):
        v = np.array([r[2] for r in rows if r[0] == strategy])
        t = np.array([r[3] for r in rows if r[0] == strategy])
        print(f"{strategy:>10}   {v.mean():.4f} ± {v.std(ddof=1):.4f}      {t.mean():.4f} ± {t.std(ddof=1):.4f}"
              f"   (n={len(v)} seeds)")


if __name__ == "__main__":
    main()
