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

console = Console()
SHOW_BATCH = typer.Option(
    None, "--show-batch", help="Write a grid of augmented training images with their labels to this PNG (no training)."
)


def _fmt_ci(m: dict) -> str:
    """``AUC 0.9412 (95% CI …, n=…)``: the metrics' primary score (``metric``/``score``/``score_ci``; AUC in
    files written before those keys existed)."""
    from medtransfer.tasks.base import metric_label

    metric = m.get("metric", "auc")
    label = metric_label(metric)
    value = m.get("score", m.get(metric, float("nan")))
    lo, hi = m.get("score_ci") or m.get(f"{metric}_ci") or (float("nan"), float("nan"))
    return f"{label} {value:.4f} (95% CI {lo:.4f}–{hi:.4f}, n={m['n']})"


def _print_operating_point(m: dict) -> None:
    """Sensitivity, specificity, PPV, NPV, F1 at the validation threshold, and sensitivity at specificity 0.90/0.95."""
    from medtransfer.evaluation.operating import describe

    for line in describe(m):
        console.print(line, soft_wrap=True, highlight=False)


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
    from medtransfer.config import load_config
    from medtransfer.errors import TrainingFailed, UserError
    from medtransfer.tasks.base import task_kind
    from medtransfer.training.run import train_run

    cfg = load_config(config, config_overrides(set_, data, format, labels, patient_column, task, device))
    if dry_run or show_batch is not None:
        _plan_only(cfg, out, dry_run, show_batch, force)
        return
    if out is None:
        raise UserError("--out is required: the run folder to write (or --dry-run to only print the plan)")
    if cfg.task and task_kind(cfg.task).volumetric:
        from medtransfer.segmentation.train import train_segmentation

        try:
            m = train_segmentation(cfg, out, resume=resume)
        except TrainingFailed as e:
            raise TrainingFailed(f"training failed: {e} (recorded in {out / 'status.json'})") from None
        lo, hi = m["dice_ci"]
        console.print(f"{m['split']} Dice {m['dice']:.4f} (95% CI {lo:.4f}–{hi:.4f}, n={m['n']} volumes)")
        console.print(f"{m['epochs_run']} epochs, best {m['best_epoch'] + 1}, {m['seconds']:.0f} s → {out}")
        return
    try:
        m = train_run(cfg, out, resume=resume)
    except TrainingFailed as e:
        raise TrainingFailed(f"training failed: {e} (recorded in {out / 'status.json'})") from None
    console.print(f"validation {_fmt_ci(m['val'])}")
    if m.get("split") == "test":
        console.print(f"test       {_fmt_ci(m)}")
        _print_operating_point(m)
    console.print(f"{m['epochs_run']} epochs, best {m['best_epoch'] + 1}, {m['seconds']:.0f} s → {out}")


def _plan_only(cfg, out: Path | None, dry_run: bool, show_batch: Path | None, force: bool) -> None:
    """``--dry-run`` / ``--show-batch``: resolve and describe the run, write nothing but the requested PNG."""
    from medtransfer.training.plan import plan_run, write_batch_grid

    if show_batch is not None:
        check_out_file(show_batch, force, "--show-batch")
    plan = plan_run(cfg, out, timed=dry_run)
    if dry_run:
        console.print(plan.text(), soft_wrap=True, highlight=False)
    if show_batch is not None:
        n = write_batch_grid(cfg, plan, show_batch)
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
    from medtransfer.errors import UserError
    from medtransfer.segmentation.train import evaluate_segmentation, is_segmentation_run
    from medtransfer.training.inference import evaluate_run

    if split_file is not None and split in (None, "all"):  # checked here, before a model or a dataset is loaded
        raise UserError("--split-file needs --split (train | val | test): which of its splits to evaluate")
    check_out_file(out, force)
    if is_segmentation_run(run):
        m = evaluate_segmentation(run, data, out, format=format, split=split, split_file=split_file)
        if m.get("split_note"):
            console.print(m["split_note"], soft_wrap=True, highlight=False)
        lo, hi = m["dice_ci"]
        console.print(f"Dice {m['dice']:.4f} (95% CI {lo:.4f}–{hi:.4f}, n={m['n']} volumes) → {out}")
        return

    m = evaluate_run(
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
    if m.get("split_note"):
        console.print(m["split_note"], soft_wrap=True, highlight=False)
    console.print(f"{_fmt_ci(m)} → {out}")
    _print_operating_point(m)
    if m.get("calibration"):
        bins = m["calibration"]["ece_bins"]
        console.print(f"Brier {m['brier']:.4f}, ECE {m['ece']:.4f} ({bins} equal-width probability bins)")


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
    from medtransfer.training.inference import predict_run

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
    from medtransfer.config import load_config
    from medtransfer.training.run import suggest_lr

    if plot is not None:
        check_out_file(plot, force, "--plot")
    cfg = load_config(config, config_overrides(set_, data, format, labels, patient_column, task, device))
    lr = suggest_lr(cfg, num_iter=num_iter, plot=plot)
    console.print(f"suggested train.lr: {lr:.2e}   (use --set train.lr={lr:.1e})")
    if plot is not None:
        console.print(f"loss against learning rate → {plot}")
