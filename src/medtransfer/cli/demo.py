"""``medtransfer demo``: a small study on synthetic phantoms, end to end (no data or internet needed)."""

from __future__ import annotations

from pathlib import Path

import typer

from medtransfer.cli import app
from medtransfer.config import load_config
from medtransfer.studies.config import StudyConfig


@app.command("demo")
def demo(
    out: Path = typer.Option(Path("runs/demo"), "--out", "-o", help="Output folder (sources/ and study/)."),
    set_: list[str] = typer.Option(None, "--set", help="Override a key of examples/demo_study.yaml."),
    config: Path = typer.Option(None, "--config", help="Another demo study config (default examples/demo_study.yaml)."),
    sources_only: bool = typer.Option(
        False, "--sources-only", help="Only pretrain the two phantom sources into OUT/sources (for another study)."
    ),
) -> None:
    """Pretrain a same-site (chest) and an other-site (hand) phantom source, then compare them with scratch:
    finetune vs recipe at N = 20 and 100 over 3 seeds, with the radiomics baseline; print the summary and what it
    shows (DeLong per seed at the smallest N)."""
    # deferred: imported at the top, cli.study would add its commands before `demo` and reorder `medtransfer --help`
    from medtransfer.cli.study import _print_summary, console
    from medtransfer.studies.demo import build_demo_sources, demo_config, demo_takeaways, run_demo  # deferred: torch

    if sources_only:
        cfg = load_config(config or demo_config(), set_ or [], cls=StudyConfig)
        folder = build_demo_sources(out, cfg)
        console.print(f"sources: {folder} (use them with --set study.sources_dir={folder})")
        return

    counts = run_demo(out, set_ or [], config=config)
    _print_summary(out / "study", counts)
    console.print("\n[bold]What the demo shows[/bold]")
    for sentence in demo_takeaways(out / "study"):
        console.print(f"• {sentence}")
