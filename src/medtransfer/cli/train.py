"""``medtransfer train | evaluate | predict | lr-find``."""

from __future__ import annotations

from pathlib import Path

import typer
from rich.console import Console

from medtransfer.cli import app
from medtransfer.cli.options import (
    DATA,
    DEVICE,
    DRY_RUN,
    FORCE,
    FORMAT,
    LABELS,
    PATIENT_COL,
    SET,
    TASK,
    check_out_file,
    config_overrides,
    csv_list,
)
from medtransfer.config import load_config
from medtransfer.errors import TrainingFailed, UserError

console = Console()
SHOW_BATCH = typer.Option(
    None, "--show-batch", help="Write a grid of augmented training images with their labels to this PNG (no training)."
)


@app.command("train")
def train(
    config: Path = typer.Argument(..., help="Train config (YAML); see docs/config.md."),
    out: Path = typer.Option(None, "--out", "-o", help="Run folder to write (new or empty; or --resume)."),
    data: str | None = DATA,
    format: str | None = FORMAT,
    labels: str | None = LABELS,
    patient_column: str | None = PATIENT_COL,
    task: str | None = TASK,
    device: str | None = DEVICE,
    set_: list[str] = SET,
    resume: bool = typer.Option(False, "--resume", help="Continue the run in --out from its checkpoint."),
    dry_run: bool = DRY_RUN,
    show_batch: Path | None = SHOW_BATCH,
    force: bool = FORCE,
) -> None:
    """Train one model: one source, one transfer strategy, one training-set size."""
    from medtransfer.pipelines.base import pipeline_for  # deferred: it imports torch (`medtransfer --help` stays fast)

    cfg = load_config(config, config_overrides(set_, data, format, labels, patient_column, task, device))
    pipe = pipeline_for(cfg.task)
    if dry_run or show_batch is not None:
        _plan_only(pipe, cfg, out, dry_run, show_batch, force)
        return
    if out is None:
        raise UserError("--out is required: the run folder to write (or --dry-run to only print the plan)")
    try:
        m = pipe.train(cfg, out, resume=resume)
    except TrainingFailed as e:
        raise TrainingFailed(f"training failed: {e} (recorded in {out / 'status.json'})") from None
    for line in pipe.summary(m, "train", out):
        console.print(line, soft_wrap=True, highlight=False)
    console.print(f"{m['epochs_run']} epochs, best {m['best_epoch'] + 1}, {m['seconds']:.0f} s → {out}")


def _plan_only(pipe, cfg, out: Path | None, dry_run: bool, show_batch: Path | None, force: bool) -> None:
    """``--dry-run`` / ``--show-batch``: resolve and describe the run, write nothing but the requested PNG."""
    if show_batch is not None:
        check_out_file(show_batch, force, "--show-batch")
    plan = pipe.plan_run(cfg, out, timed=dry_run)
    if dry_run:
        console.print(plan.text(), soft_wrap=True, highlight=False)
    if show_batch is not None:
        n = pipe.write_batch_grid(cfg, plan, show_batch)
        console.print(f"{n} augmented training images with their labels → {show_batch}")


@app.command("evaluate")
def evaluate(
    run: Path = typer.Argument(..., help="A run folder written by `medtransfer train`."),
    data: str = typer.Option(..., "--data", help="Dataset to evaluate on."),
    out: Path = typer.Option(..., "--out", "-o", help="metrics.json to write (a file; --force replaces it)."),
    format: str | None = FORMAT,
    split: str | None = typer.Option(
        None,
        "--split",
        help="train | val | test | all. Default: the run's test split when --data is the run's own data "
        "(`all` scores every image, training images included, with a warning); all images of other data.",
    ),
    labels: str | None = LABELS,
    patient_column: str | None = PATIENT_COL,
    split_file: Path | None = typer.Option(
        None,
        "--split-file",
        help="Take --split from this split CSV (image_id, split) instead of the run's own, e.g. a study's "
        "splits/base.csv to score a source model on the study's test set.",
    ),
    tta: int | None = typer.Option(
        None, "--tta", help="Test-time augmented views averaged with the plain image (default: the run's eval.tta)."
    ),
    device: str | None = DEVICE,
    force: bool = FORCE,
    allow_outside: bool = typer.Option(
        False, "--allow-outside", help="Folder+CSV: the CSV may name image files outside its folder."
    ),
) -> None:
    """AUC per label and macro with bootstrap 95% CI on any dataset with the run's labels (segmentation runs:
    Dice per class and mean with bootstrap CI, and HD95, on any MSD or NIfTI folder with the run's classes)."""
    from medtransfer.pipelines.base import pipeline_of_run  # deferred: it imports torch

    if split_file is not None and split in (None, "all"):  # checked here, before a model or a dataset is loaded
        raise UserError("--split-file needs --split (train | val | test): which of its splits to evaluate")
    check_out_file(out, force)
    pipe = pipeline_of_run(run)
    m = pipe.evaluate(
        run,
        data,
        out,
        format=format,
        split=split,
        labels=list(csv_list(labels)) if labels else None,
        patient_column=patient_column,
        split_file=split_file,
        tta=tta,
        allow_outside=allow_outside,
        device=device or "auto",
    )
    for line in pipe.summary(m, "evaluate", out):
        console.print(line, soft_wrap=True, highlight=False)


@app.command("predict")
def predict(
    run: Path = typer.Argument(..., help="A run folder written by `medtransfer train`."),
    data: str = typer.Option(
        ..., "--data", help="Images to score: a plain folder of images (no CSV needed), a folder+CSV, or a file."
    ),
    out: Path = typer.Option(..., "--out", "-o", help="predictions.csv to write (a file; --force replaces it)."),
    format: str | None = FORMAT,
    labels: str | None = LABELS,
    tta: int | None = typer.Option(
        None, "--tta", help="Test-time augmented views averaged with the plain image (default: the run's eval.tta)."
    ),
    device: str | None = DEVICE,
    force: bool = FORCE,
    allow_outside: bool = typer.Option(
        False, "--allow-outside", help="Folder+CSV: the CSV may name image files outside its folder."
    ),
) -> None:
    """Per-image probabilities (or values, for a regression run) as CSV (image_id, patient_id, prob_<label> ...)."""
    from medtransfer.training.inference import predict_run  # deferred: it imports torch

    check_out_file(out, force)
    table = predict_run(
        run,
        data,
        out,
        format=format,
        tta=tta,
        allow_outside=allow_outside,
        labels=list(csv_list(labels)) if labels else None,
        device=device or "auto",
    )
    console.print(f"{len(table)} predictions → {out}")


@app.command("lr-find")
def lr_find(
    config: Path = typer.Argument(..., help="Train config (YAML)."),
    data: str | None = DATA,
    format: str | None = FORMAT,
    labels: str | None = LABELS,
    patient_column: str | None = PATIENT_COL,
    task: str | None = TASK,
    device: str | None = DEVICE,
    set_: list[str] = SET,
    num_iter: int = typer.Option(100, "--iters", help="Number of steps of the range test."),
    plot: Path | None = typer.Option(
        None, "--plot", help="Write the loss-vs-LR curve with the suggestion to this PNG."
    ),
    force: bool = FORCE,
) -> None:
    """Learning-rate range test (Leslie Smith); prints a suggested train.lr (and plots the curve with --plot)."""
    from medtransfer.training.lr_finder import suggest_lr  # deferred: it imports torch

    if plot is not None:
        check_out_file(plot, force, "--plot")
    cfg = load_config(config, config_overrides(set_, data, format, labels, patient_column, task, device))
    lr = suggest_lr(cfg, num_iter=num_iter, plot=plot)
    console.print(f"suggested train.lr: {lr:.2e}   (use --set train.lr={lr:.1e})")
    if plot is not None:
        console.print(f"loss against learning rate → {plot}")
