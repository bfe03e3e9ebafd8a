"""``medtransfer data inspect`` and ``medtransfer data split``."""

from __future__ import annotations

import time
from pathlib import Path

import typer
from rich.console import Console
from rich.table import Table

from medtransfer.cli import app
from medtransfer.cli.options import DATA, FORCE, FORMAT, LABELS, PATIENT_COL, TASK, check_out_file, one_dataset
from medtransfer.errors import UserError
from medtransfer.io import atomic_write

data_app = typer.Typer(help="Inspect datasets and plan patient-grouped splits.", no_args_is_help=True)
app.add_typer(data_app, name="data")
console = Console()

CLASSES = typer.Option(None, "--classes", help="Class filter, comma-separated (e.g. CXR for MedNIST).")
IMAGE_COL = typer.Option(None, "--image-column", help="Folder+CSV: column with the image file names.")
POSITIONAL = typer.Argument(None, help="The dataset (the same as --data): a file or folder, or synthetic:SITE,...")
ALLOW_OUTSIDE = typer.Option(
    False, "--allow-outside", help="Folder+CSV: the CSV may name image files outside its folder (data.allow_outside)."
)
CHANNELS = typer.Option(
    None, "--channels", help="Read every image with 1 or 3 channels (data.channels); default: what most images have."
)


def _csv(value: str | None) -> tuple[str, ...] | None:
    return tuple(v.strip() for v in value.split(",") if v.strip()) if value else None


def _load(path, format, labels, classes, image_column, patient_column, task, allow_outside=False, channels=None):
    # deferred: numpy and pandas, which `medtransfer --help` must not load
    from medtransfer.data.sources.base import SourceOptions, load_dataset
    from medtransfer.tasks.base import task_kind

    if task is not None:
        task_kind(task)  # a misspelt --task fails here, with close matches
    if channels not in (None, 1, 3):
        raise UserError(f"--channels must be 1 or 3, got {channels}")

    options = SourceOptions(_csv(labels), _csv(classes), image_column, patient_column, task, allow_outside, channels)
    return load_dataset(path, format, options)


@data_app.command("inspect")
def inspect(
    path: str | None = POSITIONAL,
    data: str | None = DATA,
    format: str | None = FORMAT,
    labels: str | None = LABELS,
    classes: str | None = CLASSES,
    image_column: str | None = IMAGE_COL,
    patient_column: str | None = PATIENT_COL,
    task: str | None = TASK,
    allow_outside: bool = ALLOW_OUTSIDE,
    channels: int | None = CHANNELS,
    check_all: bool = typer.Option(False, "--check-all", help="Decode every image for sizes and modes, not a sample."),
    duplicates: Path | None = typer.Option(
        None, "--duplicates", help="Also write every duplicate group to this CSV (group, kind, image_id, label)."
    ),
    force: bool = FORCE,
) -> None:
    """Counts, label names and prevalence, patients, image sizes and dtypes, duplicate images, problems found."""
    # deferred: numpy, pandas and scipy; keeps `medtransfer --help` fast
    from medtransfer.data.inspect import duplicate_lines, duplicate_table, inspect_dataset, size_lines, top

    path = one_dataset(path, data)
    if duplicates is not None:
        duplicates = check_out_file(duplicates, force, "--duplicates")
    ds = _load(path, format, labels, classes, image_column, patient_column, task, allow_outside, channels)
    rep = inspect_dataset(ds, sample=None if check_all else 32)
    patients = f"patients={rep.n_patients}" + ("" if rep.patient_ids else " (no patient ids: one per image)")
    console.print(
        f"[bold]{rep.name}[/bold]  task={rep.task}  images={rep.n_images}  {patients}  channels={rep.channels}",
        soft_wrap=True,
    )
    for w in rep.warnings:  # before the details, where nobody scrolls past them
        console.print(f"[bold yellow]warning:[/bold yellow] {w}", soft_wrap=True)
    if rep.source_splits:
        console.print("splits in the file: " + ", ".join(f"{k}={v}" for k, v in rep.source_splits.items()))
    if rep.label_rows:
        table = Table(*rep.label_header)
        for row in rep.label_rows:
            table.add_row(*row)
        console.print(table)
    else:
        console.print("no labels (unlabelled images)")
    for line in size_lines(rep.sizes, rep.n_read):
        console.print(line, soft_wrap=True)
    console.print("dtype: " + top(rep.dtypes), soft_wrap=True)
    if rep.colour_modes:  # the same words training logs when it decodes the images
        console.print("colour modes: " + top(rep.colour_modes), soft_wrap=True)
        console.print(rep.conversion, soft_wrap=True)
    for line in duplicate_lines(rep):
        console.print(line, soft_wrap=True, markup=False)
    if rep.unreadable:
        console.print(f"[red]unreadable images ({len(rep.unreadable)}):[/red]")
        for _, why in rep.unreadable:
            console.print(f"  - {why}", soft_wrap=True, markup=False)
    if rep.problems:
        console.print("[yellow]problems:[/yellow]")
        for p in rep.problems:
            console.print(f"  - {p}", soft_wrap=True, markup=False)
    else:
        console.print("problems: none found")
    if rep.unreadable:  # a check that found broken files fails, so scripts can rely on the exit code
        shown = "; ".join(where for where, _ in rep.unreadable[:10])
        more = f" and {len(rep.unreadable) - 10} more" if len(rep.unreadable) > 10 else ""
        raise UserError(
            f"{len(rep.unreadable)} of {rep.n_read + len(rep.unreadable)} images read cannot be decoded: "
            f"{shown}{more}; replace the files or delete their rows (each is listed above with its reason)"
        )
    if duplicates is not None:
        atomic_write(duplicates, lambda tmp: duplicate_table(rep).to_csv(tmp, index=False))
        console.print(f"wrote {duplicates}: {len(rep.duplicates or [])} duplicate group(s)")


@data_app.command("split")
def split(
    path: str | None = POSITIONAL,
    data: str | None = DATA,
    out: Path = typer.Option(
        ..., "--out", "-o", help="The split CSV to write (a file; use it with --set data.split_file=FILE)."
    ),
    force: bool = FORCE,
    format: str | None = FORMAT,
    seed: int = typer.Option(0, "--seed", help="Random seed of the split."),
    fractions: str = typer.Option("0.7,0.1,0.2", "--fractions", help="train,val,test fractions."),
    source_splits: bool = typer.Option(
        True, "--source-splits/--no-source-splits", help="Keep train/val/test that come with the file."
    ),
    labels: str | None = LABELS,
    classes: str | None = CLASSES,
    image_column: str | None = IMAGE_COL,
    patient_column: str | None = PATIENT_COL,
    task: str | None = TASK,
    allow_outside: bool = ALLOW_OUTSIDE,
    channels: int | None = CHANNELS,
    dedupe: bool = typer.Option(
        True, "--dedupe/--no-dedupe", help="Keep each group of duplicate images in one split (data.dedupe)."
    ),
) -> None:
    """Patient-grouped, label-stratified train/val/test split with nested learning-curve subsets; duplicate images
    (exact and near copies) stay in one split."""
    from medtransfer.data.splits import make_split  # deferred: numpy, pandas and scipy; keeps `--help` fast

    t0 = time.perf_counter()
    path = one_dataset(path, data)
    check_out_file(out, force)
    try:
        fr = [float(x) for x in fractions.split(",")]
    except ValueError:
        raise UserError(f"--fractions must be three numbers like 0.7,0.1,0.2, got '{fractions}'") from None
    ds = _load(path, format, labels, classes, image_column, patient_column, task, allow_outside, channels)
    result = make_split(ds, fr, seed=seed, use_source_splits=source_splits, dedupe=dedupe)
    result.save(out)
    table = Table("split", "images", "fraction", "patients", *[f"{n} +" for n in ds.label_names[:6]])
    for name in ("train", "val", "test"):
        rows = result.table["split"] == name
        idx = rows.to_numpy().nonzero()[0]
        prev = [
            f"{float((ds.labels[idx, k] == 1).mean()):.1%}" if len(idx) else "-" for k in range(min(6, ds.num_labels))
        ]
        table.add_row(
            name, str(len(idx)), f"{len(idx) / len(ds):.1%}", str(result.table.loc[rows, "patient_id"].nunique()), *prev
        )
    console.print(table)
    for line in _audit_lines(result.audit):
        console.print(line, soft_wrap=True)
    console.print(f"nested subsets: {[c[4:] for c in result.table.columns if c.startswith('in_n')]}")
    console.print(f"wrote {out} in {time.perf_counter() - t0:.1f} s; train on it with --set data.split_file={out}")


def _audit_lines(audit: dict) -> list[str]:
    """What the split's audit checked, in words that claim no more than that; warnings first."""
    from medtransfer.data.inspect import NO_PATIENT_IDS  # deferred: see inspect

    patients = audit.get("patient_ids", True)
    lines = [] if patients else [f"[bold yellow]warning:[/bold yellow] {NO_PATIENT_IDS}"]
    kept = "no patient in two splits; " if patients else ""
    if not audit.get("dedupe"):
        return [*lines, f"audited: {kept}duplicate images not looked for (--no-dedupe)"]
    groups, images, across = audit.get("groups", 0), audit.get("images", 0), audit.get("across_source_splits", 0)
    if not groups:
        return [*lines, f"audited: {kept}no duplicate images found"]
    joined = f", {audit.get('joined', 0)} of them joining several patients" if patients else ""
    where = f"{groups - across} in one split, {across} across the file's own splits" if across else "each in one split"
    return [*lines, f"audited: {kept}{groups} duplicate group(s) ({images} images{joined}): {where}"]
