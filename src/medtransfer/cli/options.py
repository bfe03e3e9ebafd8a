"""The options every command spells the same way, and the one ``--out`` rule.

* The dataset is ``--data PATH`` wherever a command reads one (``data inspect`` / ``data split`` also take it as
  their positional argument, the older spelling). On ``train``, ``study`` and ``lr-find`` it sets ``data.path``.
* The CSV options ``--format``, ``--labels``, ``--patient-column``, ``--task`` mean the same everywhere (on a
  config command they set ``data.format``, ``data.labels``, ``data.patient_column``, ``task``).
* ``--device`` (``auto`` by default: CUDA when there is one) everywhere a model runs.
* ``--out`` is a file where the command writes one file (``data split``, ``evaluate``, ``predict``, ``lr-find
  --plot``, ``--show-batch``) and a folder otherwise (``train``, ``study``, ``pretrain``, ``sources build``). An
  existing file is never replaced without ``--force``; folders follow the run/study rules (new, empty, or
  ``--resume``).
"""

from __future__ import annotations

import json
from pathlib import Path

import typer

from medtransfer.errors import UserError

DATA = typer.Option(None, "--data", help="The dataset: a file or folder (or synthetic:SITE,...).")
FORMAT = typer.Option(None, "--format", "-f", help="Data format (auto-detected when unambiguous).")
LABELS = typer.Option(None, "--labels", help="Label column(s) or names to keep, comma-separated.")
PATIENT_COL = typer.Option(None, "--patient-column", help="Folder+CSV: column with patient ids.")
TASK = typer.Option(None, "--task", help="Force binary | multiclass | multilabel | regression (default: detected).")
DEVICE = typer.Option(None, "--device", help="auto (CUDA when available; the default), cpu, cuda, cuda:N or mps.")
FORCE = typer.Option(False, "--force", help="Replace an existing output file.")
SET = typer.Option(None, "--set", help="Override a config key: --set train.epochs=5 (repeatable).")
DRY_RUN = typer.Option(False, "--dry-run", help="Resolve everything and print the plan; write nothing.")


def csv_list(value: str | None) -> tuple[str, ...] | None:
    """``"a, b"`` → ``("a", "b")``; ``None`` stays ``None``."""
    return tuple(v.strip() for v in value.split(",") if v.strip()) if value else None


def one_dataset(positional: str | None, data: str | None) -> str:
    """The dataset of a command that takes it positionally or as ``--data`` (the same thing spelled two ways)."""
    if positional and data and positional != data:
        raise UserError(f"two datasets given ({positional} and --data {data}); give one")
    path = data or positional
    if not path:
        raise UserError("no dataset given: pass --data PATH")
    return path


def config_overrides(
    sets: list[str] | None,
    data: str | None = None,
    format: str | None = None,
    labels: str | None = None,
    patient_column: str | None = None,
    task: str | None = None,
    device: str | None = None,
) -> list[str]:
    """``--set`` overrides plus the dataset options as config keys, the options last (they win over ``--set``);
    values are written as JSON so a path stays a string."""
    extra = {
        "data.path": data,
        "data.format": format,
        "data.labels": list(csv_list(labels)) if labels else None,
        "data.patient_column": patient_column,
        "task": task,
        "train.device": device,
    }
    return [*(sets or []), *(f"{k}={json.dumps(v)}" for k, v in extra.items() if v is not None)]


def check_out_file(out: Path, force: bool, what: str = "--out") -> Path:
    """The file rule of ``--out``: a file (not a folder), not replaced without ``--force``. Checked before any work
    starts."""
    out = Path(out).expanduser()
    if out.is_dir():
        raise UserError(f"{what} {out} is a folder; this command writes one file: name the file, e.g. {out}/out.csv")
    if out.exists() and not force:
        raise UserError(f"{what} {out} exists; pass --force to replace it, or choose another name")
    return out  # a missing parent folder is made when the file is written (atomically, at the end)
