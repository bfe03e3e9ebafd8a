"""``medtransfer pretrain``: build a source model (supervised or SimCLR) and its ``source.yaml`` card."""

from __future__ import annotations

from pathlib import Path

import typer
from rich.console import Console

from medtransfer.cli import app
from medtransfer.config import PretrainConfig, load_config
from medtransfer.errors import TrainingFailed

console = Console()


@app.command("pretrain")
def pretrain(
    config: Path = typer.Argument(..., help="Pretrain config (YAML): a train config plus a `pretrain:` section."),
    out: Path = typer.Option(..., "--out", "-o", help="Source-model folder to write."),
    set_: list[str] = typer.Option(None, "--set", help="Override a config key: --set pretrain.method=simclr."),
    resume: bool = typer.Option(False, "--resume", help="Continue the run in --out from its checkpoint."),
) -> None:
    """Pretrain a source model: supervised on labelled images, or SimCLR on images without labels."""
    from medtransfer.pretrain.build import pretrain_run  # deferred: torch; keeps `medtransfer --help` fast

    cfg = load_config(config, set_ or [], cls=PretrainConfig)
    try:
        card = pretrain_run(cfg, out, resume=resume)
    except TrainingFailed as e:
        raise TrainingFailed(f"pretraining failed: {e} (recorded in {out / 'status.json'})") from None
    m = card["metrics"]
    shown = {
        "test AUC": m.get("auc"),
        "linear-probe AUC": (m.get("probe") or {}).get("auc"),
        "final NT-Xent": m.get("final_loss"),
    }
    text = ", ".join(f"{k} {v:.4f}" for k, v in shown.items() if isinstance(v, float))
    head = f"source '{card['name']}' ({card['method']}, {card['backbone']}) → {out}"
    console.print(head + (f"; {text}" if text else ""))
    console.print(f"use it with: --set model.source={out}")
