"""``medtransfer sources list``, ``sources build``, ``sources import`` and ``sources rank``."""

from __future__ import annotations

from pathlib import Path

import typer
from rich.console import Console
from rich.table import Table

from medtransfer.cli import app
from medtransfer.cli.options import DEVICE, FORMAT, SET, csv_list
from medtransfer.errors import TrainingFailed, UserError

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
    # deferred: the catalogue imports torch (through the model weights); keeps `medtransfer --help` fast
    from medtransfer.models.catalogue import BUILD_HINT, list_sources
    from medtransfer.models.catalogue import sources_dir as resolve_dir
    from medtransfer.pretrain.source_build import partial_builds

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
        if e.remedy:
            console.print(f"to make {e.name} available: {e.remedy}", soft_wrap=True, highlight=False, markup=False)
    for name in partial_builds(root):
        console.print(
            f"interrupted build of {name}: rerun its `medtransfer sources build ... --name {name}` with --resume",
            soft_wrap=True,
            highlight=False,
            markup=False,
        )
    if not root.is_dir():
        console.print(
            f"no catalogue folder {root} yet: `{BUILD_HINT}{f' --sources-dir {root}' if sources_dir else ''}` adds "
            f"one (or `medtransfer pretrain CONFIG --out {root}/NAME`)",
            soft_wrap=True,
            highlight=False,
            markup=False,
        )


@sources_app.command("rank")
def rank(
    data: str | None = typer.Option(
        None, "--data", "--target", help="The target: a dataset (path or synthetic:...) or its train config (YAML)."
    ),
    sources: str | None = typer.Option(None, "--sources", help="Comma-separated names or folders (default: all)."),
    sources_dir: Path | None = SOURCES_DIR,
    backbone: str | None = typer.Option(None, "--backbone", help="Backbone of scratch/imagenet (default: config's)."),
    probe: bool = typer.Option(True, "--probe/--no-probe", help="Also a 3-fold logistic-regression probe AUC."),
    device: str | None = DEVICE,
) -> None:
    """Rank sources by transferability to the target (LogME on frozen features; higher is better)."""
    from medtransfer.pretrain.rank import rank_sources  # deferred: torch; keeps `medtransfer --help` fast

    if not data:
        raise UserError("no target given: pass --data PATH (a dataset or its train config)")
    target = data
    names = [s.strip() for s in sources.split(",") if s.strip()] if sources is not None else None
    rows = rank_sources(target, names, sources_dir, backbone=backbone, probe=probe, device=device or "auto")
    table = Table("rank", "source", "LogME", "probe AUC", "seconds", title=f"transferability to {target}")
    for i, r in enumerate(rows, 1):
        auc = f"{r.probe_auc:.4f}" if r.probe_auc == r.probe_auc else "-"
        table.add_row(str(i), r.name, f"{r.logme:.4f}", auc, f"{r.seconds:.1f}")
    console.print(table)


@sources_app.command("build")
def build(
    data: str = typer.Option(
        ..., "--data", "--from", help="The archive: a plain image folder, a folder+CSV (labels ignored) or any format."
    ),
    name: str = typer.Option(..., "--name", help="The source's name: `model.source=NAME` once built."),
    sources_dir: Path | None = SOURCES_DIR,
    out: Path | None = typer.Option(
        None, "--out", "-o", help="Build into this new folder instead of the catalogue's NAME folder."
    ),
    supervised: bool = typer.Option(
        False, "--supervised", help="Train on the archive's labels (default: self-supervised SimCLR, no labels)."
    ),
    labels: str | None = typer.Option(None, "--labels", help="--supervised: the label column(s), comma-separated."),
    format: str | None = FORMAT,
    backbone: str | None = typer.Option(None, "--backbone", help="Backbone (default: the recipe's, resnet18)."),
    image_size: int | None = typer.Option(
        None, "--image-size", help="Training resolution in pixels (default: the recipe's, 64)."
    ),
    modality: str | None = typer.Option(None, "--modality", help="For the card: e.g. x-ray, ct, mri."),
    site: str | None = typer.Option(None, "--site", help="For the card: the anatomical site, e.g. chest."),
    description: str | None = typer.Option(None, "--description", help="For the card: what the images are."),
    set_: list[str] = SET,
    resume: bool = typer.Option(
        False, "--resume", help="Continue an interrupted build of NAME; a finished one is kept (nothing to do)."
    ),
    device: str | None = DEVICE,
) -> None:
    """Build a source model from your own images into the catalogue: SimCLR (or --supervised) with the measured
    defaults (docs/config.md, "medtransfer sources build"). Everything is checked before anything is written."""
    # deferred: torch; keeps `medtransfer --help` fast
    from medtransfer.pretrain.source_build import build_config, build_source, check_name, default_target, partial_folder

    check_name(name)
    target = Path(out).expanduser() if out is not None else default_target(name, sources_dir)
    cfg = build_config(
        data,
        name,
        supervised=supervised,
        labels=csv_list(labels),
        format=format,
        backbone=backbone,
        image_size=image_size,
        modality=modality,
        site=site,
        description=description,
        device=device,
        overrides=set_ or [],
    )
    try:
        built = build_source(cfg, target, resume=resume)
    except TrainingFailed as e:
        raise TrainingFailed(
            f"building '{name}' failed: {e}; what was done is in {partial_folder(target)}: fix the cause and rerun "
            "with --resume, or delete that folder"
        ) from None
    card = built.card
    if built.status == "exists":
        console.print(f"source '{name}' is already built: {built.folder} (nothing to do)")
    else:
        m = card.get("metrics") or {}
        shown = {
            "test AUC": m.get("auc"),
            "linear-probe AUC": (m.get("probe") or {}).get("auc"),
            "final NT-Xent": m.get("final_loss"),
        }
        text = ", ".join(f"{k} {v:.4f}" for k, v in shown.items() if isinstance(v, float))
        head = f"source '{card['name']}' ({card['method']}, {card['backbone']}) → {built.folder}"
        console.print(head + (f"; {text}" if text else ""), soft_wrap=True, highlight=False)
    use = name if out is None and sources_dir is None else str(built.folder)
    console.print(f"use it with: --set model.source={use} --set model.backbone={card['backbone']}", highlight=False)


@sources_app.command("import")
def import_(
    path: str = typer.Argument(
        ...,
        help="A timm checkpoint (.safetensors, or a .pth/.bin state dict) or a timm Hugging Face folder "
        "(config.json + model.safetensors, as timm's save_for_hf writes it).",
    ),
    name: str = typer.Option(..., "--name", help="The source's name: `model.source=NAME` once imported."),
    backbone: str | None = typer.Option(
        None, "--backbone", help="The timm architecture (default: the folder's config.json); needed for a bare file."
    ),
    sources_dir: Path | None = SOURCES_DIR,
    modality: str | None = typer.Option(None, "--modality", help="For the card: e.g. x-ray, ct, mri."),
    site: str | None = typer.Option(None, "--site", help="For the card: the anatomical site, e.g. chest."),
    description: str | None = typer.Option(None, "--description", help="For the card: what the weights are."),
    force: bool = typer.Option(False, "--force", help="Replace an existing source of that name."),
) -> None:
    """Import an encoder you already have (a DINOv2 or RAD-DINO ViT, a ConvNeXt ... saved by timm) into the catalogue:
    the weights are checked to load into the architecture first; nothing is written if they do not."""
    from medtransfer.pretrain.source_import import import_source  # deferred: torch and timm; keeps `--help` fast

    done = import_source(path, name, backbone, sources_dir, force, modality, site, description)
    card = done.card
    console.print(
        f"source '{name}' (imported, {card['backbone']}, {card['in_chans']} channels, input {card['input_size']}) → "
        f"{done.folder}; sha256 {card['origin']['sha256'][:12]}…",
        soft_wrap=True,
        highlight=False,
        markup=False,
    )
    report = done.report
    checked = f"checked: all {report.loaded} backbone tensors load into {card['backbone']}"
    checked += "; its classifier is not kept" if card["origin"]["classifier"].startswith("dropped") else ""
    checked += f"; {len(report.unexpected)} other tensors ignored" if report.unexpected else ""
    console.print(checked, soft_wrap=True, highlight=False, markup=False)
    use = name if sources_dir is None else str(done.folder)
    console.print(
        f"use it with: --set model.source={use} --set model.backbone={card['backbone']}",
        soft_wrap=True,
        highlight=False,
        markup=False,
    )
