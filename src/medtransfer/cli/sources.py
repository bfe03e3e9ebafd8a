"""``medtransfer sources list`` and ``medtransfer sources rank``."""

from __future__ import annotations

from pathlib import Path

import typer
from rich.console import Console
from rich.table import Table

from medtransfer.cli import app

sources_app = typer.Typer(help="The source-model catalogue and transferability ranking.", no_args_is_help=True)
app.add_typer(sources_app, name="sources")
console = Console()

SOURCES_DIR = typer.Option(
    None, "--sources-dir", help="Catalogue folder (default: $MEDTRANSFER_SOURCES or ~/.cache/medtransfer/sources)."
)


def _cell(value) -> str:
    return "-" if value in (None, "") else str(value)


@sources_app.command("list")
def list_(sources_dir: Path | None = SOURCES_DIR) -> None:
    """Built-in sources and every source-model folder in the catalogue, with site, modality, method, backbone."""
    from medtransfer.pretrain.catalogue import list_sources
    from medtransfer.pretrain.catalogue import sources_dir as resolve_dir

    root = resolve_dir(sources_dir)
    entries = list_sources(root)
    table = Table("name", "method", "backbone", "modality", "site", "images", "status", title=f"sources ({root})")
    for e in entries:
        status = "ok" if e.available else "[yellow]not available offline[/yellow]"
        status = "[red]unusable[/red]" if e.error else status
        table.add_row(
            e.name,
            _cell(e.method),
            _cell(e.backbone or ("-" if e.error else "any")),
            _cell(e.modality),
            _cell(e.site),
            _cell(e.n_images),
            status,
        )
    console.print(table)
    for e in entries:
        if e.error:
            console.print(f"[red]unusable[/red] {e.name}: {e.error}", soft_wrap=True, highlight=False)
    if not root.is_dir():
        console.print(f"no catalogue folder {root} yet: `medtransfer pretrain CONFIG --out {root}/NAME` adds one")


@sources_app.command("rank")
def rank(
    target: str = typer.Option(..., "--target", help="Target train config (YAML) or dataset (path or synthetic:...)."),
    sources: str | None = typer.Option(None, "--sources", help="Comma-separated names or folders (default: all)."),
    sources_dir: Path | None = SOURCES_DIR,
    backbone: str | None = typer.Option(None, "--backbone", help="Backbone of scratch/imagenet (default: config's)."),
    probe: bool = typer.Option(True, "--probe/--no-probe", help="Also a 3-fold logistic-regression probe AUC."),
    device: str = typer.Option("cpu", "--device", help="Device for the feature pass."),
) -> None:
    """Rank sources by transferability to the target (LogME on frozen features; higher is better)."""
    from medtransfer.pretrain.rank import rank_sources

    names = [s.strip() for s in sources.split(",") if s.strip()] if sources is not None else None
    rows = rank_sources(target, names, sources_dir, backbone=backbone, probe=probe, device=device)
    table = Table("rank", "source", "LogME", "probe AUC", "seconds", title=f"transferability to {target}")
    for i, r in enumerate(rows, 1):
        auc = f"{r.probe_auc:.4f}" if r.probe_auc == r.probe_auc else "-"
        table.add_row(str(i), r.name, f"{r.logme:.4f}", auc, f"{r.seconds:.1f}")
    console.print(table)
