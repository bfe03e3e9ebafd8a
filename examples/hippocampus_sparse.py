"""Make the sparsely annotated source and the target of the hippocampus study (issue [5/6]) from MSD Task04.

    python examples/hippocampus_sparse.py $MEDTRANSFER_DATA/msd_hippocampus runs/hippocampus_files

Writes into OUT (the data folder is only read):
* ``source_cases.txt``: 150 volumes for pretraining; ``source_annotated.csv``: each keeps one structure only
  (alternately Anterior / Posterior), the other is marked not annotated (a sparsely annotated set);
* ``target_cases.txt``: the other 50 volumes, both structures annotated (the new task with few volumes).
The choice is a seeded permutation of the case ids (``--seed``), so it is the same on every machine.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import pandas as pd

from medtransfer.segmentation.data import load_msd


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("data")
    p.add_argument("out")
    p.add_argument("--source", type=int, default=150)
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args()
    ds = load_msd(args.data)
    ids = sorted(c.id for c in ds.cases)
    order = np.random.default_rng(args.seed).permutation(len(ids))
    source = [ids[i] for i in order[: args.source]]
    target = [ids[i] for i in order[args.source :]]
    structures = ds.class_names[1:]
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "source_cases.txt").write_text("\n".join(source) + "\n")
    (out / "target_cases.txt").write_text("\n".join(target) + "\n")
    keep = [structures[i % len(structures)] for i in range(len(source))]
    pd.DataFrame({"case": source, "annotated": keep}).to_csv(out / "source_annotated.csv", index=False)
    print(f"{len(source)} source volumes (one of {structures} each), {len(target)} target volumes → {out}")


if __name__ == "__main__":
    main()
