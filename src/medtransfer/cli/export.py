"""``medtransfer export RUN --format onnx|torchscript --out FILE``."""

from __future__ import annotations

from pathlib import Path

import typer
from rich.console import Console

from medtransfer.cli import app
from medtransfer.cli.options import FORCE, check_out_file
from medtransfer.errors import UserError

console = Console()


@app.command("export")
def export(
    run: Path = typer.Argument(..., help="A run folder written by `medtransfer train` (or a study's trial folder)."),
    format: str = typer.Option(..., "--format", "-f", help="onnx | torchscript."),
    out: Path = typer.Option(
        ..., "--out", "-o", help="The file to write; its sidecar is FILE.json beside it (--force replaces both)."
    ),
    force: bool = FORCE,
) -> None:
    """A trained classification or regression run as one ONNX or TorchScript file with its preprocessing: it takes
    uint8 images (N, 1 or 3, H, W) at any size and returns what `predict` writes (probabilities, or values for a
    regression), without test-time augmentation. FILE.json says the input, output, labels and threshold."""
    from medtransfer.training.export import FORMATS, export_run, sidecar_path  # deferred: torch; keeps --help fast

    if format not in FORMATS:  # checked here too: before a model is loaded or a path is looked at
        raise UserError(f"--format must be one of {list(FORMATS)}, got '{format}'")
    check_out_file(out, force)
    check_out_file(sidecar_path(out), force, what="the sidecar of --out,")
    side = export_run(run, out, format, force=force)
    size = side["image_size"]
    resize = f"resized to {size}x{size} ({side['resize']})" if size else "at native size"
    console.print(
        f"{format} → {out} (sidecar {sidecar_path(out).name}): {side['input']['name']} uint8 (N, 1|3, H, W) "
        f"{resize} → {side['output']['name']} {side['output']['columns']}",
        soft_wrap=True,
        highlight=False,
    )
