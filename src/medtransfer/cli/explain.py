"""``medtransfer explain``: saliency maps (Grad-CAM, Grad-CAM++, occlusion) of a trained run on chosen images."""

from __future__ import annotations

from pathlib import Path

import typer
from rich.console import Console

from medtransfer.cli import app
from medtransfer.cli.options import DATA, DEVICE, FORMAT, LABELS, csv_list

console = Console()


@app.command("explain")
def explain(
    run: Path = typer.Argument(..., help="A run folder written by `medtransfer train` (2-D images)."),
    out: Path = typer.Option(..., "--out", "-o", help="Folder to write: one PNG per image, index.csv, index.html."),
    data: str | None = DATA,
    n: int = typer.Option(16, "--n", help="How many images."),
    method: str = typer.Option("gradcam", "--method", help="gradcam | gradcampp | occlusion."),
    split: str | None = typer.Option(
        None,
        "--split",
        help="train | val | test | all, as `evaluate`. Default: the run's test split on its own data (the default "
        "--data); all images of other data.",
    ),
    seed: int = typer.Option(0, "--seed", help="Breaks ties between equal scores (and draws --select random)."),
    select: str = typer.Option(
        "confident",
        "--select",
        help="confident: the most confidently correct and most confidently wrong images (regression: the smallest "
        "and largest errors); random: n images drawn with --seed.",
    ),
    layer: str | None = typer.Option(
        None, "--layer", help="Grad-CAM target module, e.g. backbone.layer3 (default: found from the model)."
    ),
    format: str | None = FORMAT,
    labels: str | None = LABELS,
    device: str | None = DEVICE,
    force: bool = typer.Option(False, "--force", help="Replace an existing --out folder."),
) -> None:
    """Where the model looks: each chosen image beside its saliency map (binary: the positive class; multiclass:
    the predicted class; multilabel: the image's top label; regression: the predicted value)."""
    from medtransfer.training.explain import explain_run  # deferred: torch; keeps `medtransfer --help` fast

    done = explain_run(
        run,
        out,
        data=data,
        n=n,
        method=method,
        split=split,
        seed=seed,
        select=select,
        format=format,
        labels=list(csv_list(labels)) if labels else None,
        layer=layer,
        device=device or "auto",
        force=force,
    )
    if done.note:
        console.print(done.note, soft_wrap=True, highlight=False)
    where = f" at {done.layer}" if done.layer else ""
    console.print(
        f"{len(done.index)} maps ({done.method}{where}) of {done.n_scored} scored images → {out}/index.html",
        soft_wrap=True,
        highlight=False,
    )
