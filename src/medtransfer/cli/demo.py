"""``medtransfer demo``: the end-to-end demonstration on synthetic phantoms (no data needed)."""

from __future__ import annotations

from pathlib import Path

import typer

from medtransfer.cli import app


@app.command("demo")
def demo(out: Path = typer.Option(Path("runs/demo"), "--out", "-o", help="Output folder.")) -> None:
    """Inspect and split a synthetic chest-phantom dataset (grows into a full study in a later release)."""
    from medtransfer.cli.data import inspect, split

    spec = "synthetic:chest,n=600,visibility=0.5,seed=0"
    out.mkdir(parents=True, exist_ok=True)
    typer.echo(f"$ medtransfer data inspect {spec}")
    inspect(spec, None, None, None, None, None, None, False)
    typer.echo(f"$ medtransfer data split {spec} --out {out / 'split.csv'}")
    split(spec, out / "split.csv", None, 0, "0.7,0.1,0.2", True, None, None, None, None, None)
