"""``medtransfer study`` (the whole comparison, resumable) and ``medtransfer report`` (rebuild its report)."""

from __future__ import annotations

import json
from pathlib import Path

import typer
from rich.console import Console

from medtransfer.cli import app
from medtransfer.cli.options import DATA, DEVICE, DRY_RUN, FORMAT, LABELS, PATIENT_COL, SET, TASK, config_overrides

console = Console()


def _executor_names() -> str:
    """The registered executors, for ``--help`` (the built-in ones, and any an imported extension added)."""
    from medtransfer.studies.executors import EXECUTORS

    return " | ".join(EXECUTORS.names())


@app.command("study")
def study(
    config: Path = typer.Argument(
        ..., help="Study config (YAML): a train config plus a `study:` section. With --repair: the study folder."
    ),
    out: Path = typer.Option(None, "--out", "-o", help="Study folder (ledger, splits, trials, report)."),
    resume: bool = typer.Option(False, "--resume", help="Continue the study in --out: run only what is not done."),
    workers: int = typer.Option(None, "--workers", "-k", help="Trials at once in worker processes (study.workers)."),
    retry_failed: bool = typer.Option(False, "--retry-failed", help="With --resume: run failed trials again."),
    executor: str = typer.Option(None, "--executor", help=f"How trials run: {_executor_names()} (study.executor)."),
    address: str = typer.Option(
        None,
        "--address",
        help="With --executor ray: the cluster, e.g. auto or ray://head:10001 (study.executors.ray.address).",
    ),
    data: str | None = DATA,
    format: str | None = FORMAT,
    labels: str | None = LABELS,
    patient_column: str | None = PATIENT_COL,
    task: str | None = TASK,
    device: str | None = DEVICE,
    set_: list[str] = SET,
    repair: bool = typer.Option(
        False, "--repair", help="Rebuild a damaged ledger (study.sqlite) of the study folder from its trial folders."
    ),
    dry_run: bool = DRY_RUN,
) -> None:
    """Run every source × strategy × N × seed (and the baselines) on paired subsets, then write the report."""
    from medtransfer.config import load_config
    from medtransfer.errors import UserError, WorkFailed
    from medtransfer.studies.config import StudyConfig
    from medtransfer.studies.runner import run_study

    if repair:
        from medtransfer.studies.repair import repair_study

        if out is not None or resume or set_:
            raise UserError("--repair takes only the study folder: medtransfer study DIR --repair")
        r = repair_study(config)
        kept = f"; the damaged ledger is kept as {r['kept']}" if r["kept"] else ""
        console.print(
            f"rebuilt {config / 'study.sqlite'} from {r['trials']} trials: {r['done']} done, {r['failed']} failed, "
            f"{r['pending']} to run{kept}"
        )
        console.print(f"continue with: medtransfer study {config / 'config.yaml'} --out {config} --resume")
        return
    if out is None and not dry_run:
        raise UserError("--out is required: the study folder to write (or to --resume); --dry-run prints the plan")

    # The options are config overrides (quoted: an address must stay a string), applied after --set so they win.
    flags = [f"study.executor={json.dumps(executor)}"] if executor else []
    flags += [f"study.executors.ray.address={json.dumps(address)}"] if address else []
    overrides = config_overrides([*(set_ or []), *flags], data, format, labels, patient_column, task, device)
    cfg = load_config(config, overrides, cls=StudyConfig)
    if dry_run:
        from medtransfer.studies.dryrun import dry_run_study

        console.print(dry_run_study(cfg, out, resume=resume, workers=workers), soft_wrap=True, highlight=False)
        return
    counts = run_study(cfg, out, resume=resume, workers=workers, retry_failed=retry_failed)
    _print_summary(out, counts)
    if counts.get("failed"):  # the report is written; the exit code tells a script that the work did not all succeed
        raise WorkFailed(f"{counts['failed']} trial(s) of the study failed; reasons in {out / 'report.md'}")


@app.command("report")
def report(
    study_dir: Path = typer.Argument(..., help="A study folder written by `medtransfer study`."),
    notes: Path | None = typer.Option(
        None, "--notes", help="A markdown file for the report's Discussion (instead of study.notes)."
    ),
    pair: list[str] = typer.Option(
        None,
        "--pair",
        help="ARM:REFERENCE (repeatable): compare two arms at every N (paired t across seeds, DeLong per seed) "
        "into pairs.csv, e.g. --pair cxr-ssl/romero:cxr-ssl/finetune.",
    ),
) -> None:
    """Rebuild results.csv, summary.csv, report.md and report.html from a study's ledger."""
    from medtransfer.errors import UserError
    from medtransfer.studies.ledger import open_existing
    from medtransfer.studies.report import compare_arms, is_results_folder, report_study

    if notes is not None and not notes.is_file():
        raise UserError(f"--notes {notes}: no such file")
    pairs = []
    for item in pair or []:
        arm, sep, ref = item.rpartition(":")
        if not sep or not arm or not ref:
            raise UserError(f"--pair {item!r}: write ARM:REFERENCE, e.g. cxr-ssl/romero:cxr-ssl/finetune")
        pairs.append((arm, ref))
    if is_results_folder(Path(study_dir)):
        import pandas as pd  # a committed results folder (docs/results/*): its counts from results.csv

        counts = pd.read_csv(Path(study_dir) / "results.csv")["status"].value_counts().to_dict()
    else:
        with open_existing(study_dir) as ledger:
            counts = ledger.counts()
    table = compare_arms(study_dir, pairs) if pairs else None  # a misspelt arm fails before the report is rewritten
    report_study(study_dir, notes=notes)
    _print_summary(study_dir, counts)
    if table is not None:
        console.print(_format_pairs(table), soft_wrap=True)
        console.print(f"pairs: {Path(study_dir) / 'pairs.csv'}")


def _format_pairs(table) -> str:
    lines = ["arm vs reference | N | AUC arm | AUC ref | mean Δ | paired t p | DeLong better/worse/seeds"]
    for r in table.itertuples():
        lines.append(
            f"{r.arm} vs {r.reference} | {r.n_label} | {r.auc_arm:.3f} | {r.auc_ref:.3f} | {r.mean_diff:+.3f} | "
            f"{r.paired_t_p:.3g} | {r.delong_better}/{r.delong_worse}/{r.delong_seeds}"
        )
    return "\n".join(lines)


def _print_summary(out: Path, counts: dict[str, int]) -> None:
    import pandas as pd

    from medtransfer.reporting.report import format_summary_table

    summary = out / "summary.csv"
    if summary.is_file():
        console.print(format_summary_table(pd.read_csv(summary)))
    line = ", ".join(f"{k} {v}" for k, v in counts.items() if v)
    console.print(f"trials: {line}")
    findings = out / "findings.txt"
    if findings.is_file():
        from rich.markup import escape

        console.print("[bold]Findings[/bold] (every test in findings.csv)")
        console.print(escape(findings.read_text(encoding="utf-8").rstrip()), soft_wrap=True)
    if counts.get("failed"):
        console.print(f"[yellow]{counts['failed']} trial(s) failed: reasons in {out / 'report.md'}[/yellow]")
    if counts.get("pending") or counts.get("running"):
        console.print(f"unfinished: medtransfer study CONFIG --out {out} --resume")
    console.print(f"report: {out / 'report.html'}")
