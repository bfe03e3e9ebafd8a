"""``medtransfer train | evaluate | predict | lr-find``."""

from __future__ import annotations

from pathlib import Path

import typer
from rich.console import Console

from medtransfer.cli import app

console = Console()
SET = typer.Option(None, "--set", help="Override a config key: --set train.epochs=5 (repeatable).")


def _fmt_ci(m: dict) -> str:
    """``AUC 0.9412 (95% CI …, n=…)``: the metrics' primary score (``metric``/``score``/``score_ci``; AUC in
    files written before those keys existed)."""
    from medtransfer.tasks.base import metric_label

    metric = m.get("metric", "auc")
    label = metric_label(metric)
    value = m.get("score", m.get(metric, float("nan")))
    lo, hi = m.get("score_ci") or m.get(f"{metric}_ci") or (float("nan"), float("nan"))
    return f"{label} {value:.4f} (95% CI {lo:.4f}–{hi:.4f}, n={m['n']})"


@app.command("train")
def train(
    config: Path = typer.Argument(..., help="Train config (YAML); see docs/config.md."),
    out: Path = typer.Option(..., "--out", "-o", help="Run folder to write."),
    set_: list[str] = SET,
    resume: bool = typer.Option(False, "--resume", help="Continue the run in --out from its checkpoint."),
) -> None:
    """Train one model: one source, one transfer strategy, one training-set size."""
    from medtransfer.config import load_config
    from medtransfer.errors import TrainingFailed, UserError
    from medtransfer.tasks.base import task_kind
    from medtransfer.training.run import train_run

    cfg = load_config(config, set_ or [])
    if cfg.task and task_kind(cfg.task).volumetric:
        from medtransfer.segmentation.train import train_segmentation

        try:
            m = train_segmentation(cfg, out, resume=resume)
        except TrainingFailed as e:
            raise UserError(f"training failed: {e} (recorded in {out / 'status.json'})") from None
        lo, hi = m["dice_ci"]
        console.print(f"{m['split']} Dice {m['dice']:.4f} (95% CI {lo:.4f}–{hi:.4f}, n={m['n']} volumes)")
        console.print(f"{m['epochs_run']} epochs, best {m['best_epoch'] + 1}, {m['seconds']:.0f} s → {out}")
        return
    try:
        m = train_run(cfg, out, resume=resume)
    except TrainingFailed as e:
        raise UserError(f"training failed: {e} (recorded in {out / 'status.json'})") from None
    console.print(f"validation {_fmt_ci(m['val'])}")
    if m.get("split") == "test":
        console.print(f"test       {_fmt_ci(m)}")
    console.print(f"{m['epochs_run']} epochs, best {m['best_epoch'] + 1}, {m['seconds']:.0f} s → {out}")


@app.command("evaluate")
def evaluate(
    run: Path = typer.Argument(..., help="A run folder written by `medtransfer train`."),
    data: str = typer.Option(..., "--data", help="Dataset to evaluate on."),
    out: Path = typer.Option(..., "--out", "-o", help="metrics.json to write."),
    format: str | None = typer.Option(None, "--format", "-f"),
    split: str | None = typer.Option(None, "--split", help="train | val | test (default: all images)."),
    labels: str | None = typer.Option(None, "--labels", help="Label columns of the data, comma-separated."),
    split_file: Path | None = typer.Option(
        None,
        "--split-file",
        help="Take --split from this split CSV (image_id, split) instead of the run's own, e.g. a study's "
        "splits/base.csv to score a source model on the study's test set.",
    ),
    tta: int | None = typer.Option(
        None, "--tta", help="Test-time augmented views averaged with the plain image (default: the run's eval.tta)."
    ),
    allow_outside: bool = typer.Option(
        False, "--allow-outside", help="Folder+CSV: the CSV may name image files outside its folder."
    ),
) -> None:
    """AUC per label and macro with bootstrap 95% CI on any dataset with the run's labels (segmentation runs:
    Dice per class and mean with bootstrap CI, and HD95, on any MSD or NIfTI folder with the run's classes)."""
    from medtransfer.errors import UserError
    from medtransfer.segmentation.train import evaluate_segmentation, is_segmentation_run
    from medtransfer.training.inference import evaluate_run

    if split_file is not None and split is None:  # checked here, before a model or a dataset is loaded
        raise UserError("--split-file needs --split (train | val | test): which of its splits to evaluate")
    if is_segmentation_run(run):
        m = evaluate_segmentation(run, data, out, format=format, split=split, split_file=split_file)
        lo, hi = m["dice_ci"]
        console.print(f"Dice {m['dice']:.4f} (95% CI {lo:.4f}–{hi:.4f}, n={m['n']} volumes) → {out}")
        return

    lab = [x.strip() for x in labels.split(",")] if labels else None
    m = evaluate_run(
        run,
        data,
        out,
        format=format,
        split=split,
        labels=lab,
        split_file=split_file,
        tta=tta,
        allow_outside=allow_outside,
    )
    console.print(f"{_fmt_ci(m)} → {out}")
    if m.get("calibration"):
        bins = m["calibration"]["ece_bins"]
        console.print(f"Brier {m['brier']:.4f}, ECE {m['ece']:.4f} ({bins} equal-width probability bins)")


@app.command("predict")
def predict(
    run: Path = typer.Argument(..., help="A run folder written by `medtransfer train`."),
    data: str = typer.Option(..., "--data", help="Images to score."),
    out: Path = typer.Option(..., "--out", "-o", help="predictions.csv to write."),
    format: str | None = typer.Option(None, "--format", "-f"),
    tta: int | None = typer.Option(
        None, "--tta", help="Test-time augmented views averaged with the plain image (default: the run's eval.tta)."
    ),
    allow_outside: bool = typer.Option(
        False, "--allow-outside", help="Folder+CSV: the CSV may name image files outside its folder."
    ),
) -> None:
    """Per-image probabilities as CSV (image_id, patient_id, prob_<label> ...)."""
    from medtransfer.training.inference import predict_run

    table = predict_run(run, data, out, format=format, tta=tta, allow_outside=allow_outside)
    console.print(f"{len(table)} predictions → {out}")


@app.command("lr-find")
def lr_find(
    config: Path = typer.Argument(..., help="Train config (YAML)."),
    set_: list[str] = SET,
    num_iter: int = typer.Option(100, "--iters", help="Number of steps of the range test."),
) -> None:
    """Learning-rate range test (Leslie Smith); prints a suggested train.lr."""
    from medtransfer.config import load_config
    from medtransfer.training.run import suggest_lr

    cfg = load_config(config, set_ or [])
    lr = suggest_lr(cfg, num_iter=num_iter)
    console.print(f"suggested train.lr: {lr:.2e}   (use --set train.lr={lr:.1e})")
