"""Checkpoints: plain tensors and numbers only, written atomically, read back with ``weights_only=True``.

A training checkpoint holds the model, optimizer, scheduler and strategy state plus the loop's own state
(epoch, best score, history) so that a resumed run continues exactly where it stopped. Final weights are
written as safetensors (``model.safetensors``), the format other tools read.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from safetensors import safe_open
from safetensors.torch import load_file, save_file

from medtransfer.errors import UserError
from medtransfer.io import atomic_write


def save_checkpoint(path: str | Path, payload: dict[str, Any]) -> Path:
    return atomic_write(path, lambda tmp: torch.save(payload, tmp))


def load_checkpoint(path: str | Path) -> dict[str, Any]:
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # an unsafe or corrupt pickle must never be executed
        raise UserError(f"cannot read checkpoint {path}: {str(e).splitlines()[0]}; delete it to start over") from None


def save_weights(path: str | Path, model: torch.nn.Module, metadata: dict[str, str] | None = None) -> Path:
    state = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
    return atomic_write(path, lambda tmp: save_file(state, str(tmp), metadata=metadata))


def load_weights_file(path: str | Path, model: torch.nn.Module) -> None:
    """Load our own safetensors weights (exact keys) into ``model``."""
    model.load_state_dict(load_file(str(path)))


def run_task(run_dir: str | Path) -> str | None:
    """The task a finished run folder's ``model.safetensors`` records (``None`` when it records none); a folder
    without the file, or a damaged file, is refused with one line naming it."""
    weights = Path(run_dir) / "model.safetensors"
    if not weights.is_file():
        raise UserError(f"{run_dir} has no model.safetensors; is it a finished `medtransfer train` run folder?")
    try:
        with safe_open(str(weights), "pt") as f:
            return (f.metadata() or {}).get("task")
    except Exception as e:  # noqa: BLE001 - a damaged file; say which
        raise UserError(f"cannot read {weights}: {' '.join(str(e).split())}") from None
