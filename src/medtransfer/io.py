"""Atomic file writes: a crash never leaves a half-written output behind."""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Callable
from pathlib import Path

from medtransfer.errors import ConfigError


def atomic_write(path: str | Path, write: Callable[[Path], None]) -> Path:
    """Call ``write(tmp_path)`` then rename the temporary file onto ``path`` (same folder, so rename is atomic)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    tmp_path = Path(tmp)
    try:
        write(tmp_path)
        os.replace(tmp_path, path)
    except BaseException:
        tmp_path.unlink(missing_ok=True)
        raise
    return path


def atomic_write_text(path: str | Path, text: str) -> Path:
    return atomic_write(path, lambda p: p.write_text(text))


# The marker file a medtransfer output folder holds, by kind: what --out and --resume recognise.
MARKERS = {"run": ".medtransfer-run", "study": ".medtransfer-study"}


def check_output_folder(out: Path, resume: bool, ours: bool, kind: str) -> None:
    """The ``--out`` rules shared by runs and studies, checked before anything is written: a file is refused; without
    ``resume`` the folder must be absent or empty (``ours``: it holds a ``kind`` already); with ``resume`` it must be
    ours. Raises a one-line :class:`~medtransfer.errors.ConfigError`."""
    if out.exists() and not out.is_dir():
        raise ConfigError(f"--out {out} is a file; give the path of a new or empty folder")
    blocking = next((p for p in out.parents if p.exists() and not p.is_dir()), None)
    if blocking is not None:
        raise ConfigError(f"cannot create --out {out}: {blocking} is a file, not a folder; choose another --out")
    other = next((k for k, m in MARKERS.items() if k != kind and (out / m).is_file()), None)
    if other is not None and not ours:
        raise ConfigError(f"--out {out} holds a medtransfer {other}, not a {kind}; give a {kind} its own folder")
    if resume:
        if not ours:
            what = "does not exist" if not out.exists() else f"is not a medtransfer {kind} (it holds {_listing(out)})"
            raise ConfigError(
                f"--resume: {out} {what}; drop --resume to start a new {kind} there, or give a {kind} folder"
            )
        return
    if out.is_dir() and any(out.iterdir()):
        if ours:
            raise ConfigError(f"{out} already holds a {kind}; pass --resume to continue it or choose another --out")
        raise ConfigError(
            f"--out {out} is a folder with other files in it ({_listing(out)}); give a new or empty folder "
            "(nothing was written)"
        )
    existing = next((p for p in [out.parent, *out.parent.parents] if p.exists()), None)
    if existing is not None and not os.access(existing, os.W_OK):
        raise ConfigError(f"cannot create --out {out}: {existing} is not writable; choose another folder")


def _listing(folder: Path) -> str:
    found = sorted(p.name for p in folder.iterdir())
    if not found:
        return "nothing"
    return ", ".join(found[:3]) + (f" and {len(found) - 3} more" if len(found) > 3 else "")


def entries(folder: Path) -> set[str] | None:
    """The names in ``folder`` now, or ``None`` when it does not exist (what :func:`remove_new_entries` restores)."""
    return {p.name for p in folder.iterdir()} if folder.is_dir() else None


def remove_new_entries(folder: Path, before: set[str] | None) -> None:
    """Undo a start that failed: delete ``folder`` if it did not exist (``before is None``), else what is new in it."""
    if before is None:
        shutil.rmtree(folder, ignore_errors=True)
        return
    for p in folder.iterdir():
        if p.name not in before:
            shutil.rmtree(p, ignore_errors=True) if p.is_dir() else p.unlink(missing_ok=True)


def check_out_folder(out: Path, force: bool, keep: tuple[Path, ...] = ()) -> Path:
    """The ``--out`` rule of a command that writes a folder of results in one go (``explain``), checked before any
    work: new or empty, or replaced with ``force``; never a file, a medtransfer run or study, or a folder holding
    one of ``keep`` (the run being read, say), and its nearest existing parent must be writable."""
    out = Path(out).expanduser()
    if out.exists() and not out.is_dir():
        raise ConfigError(f"--out {out} is a file; give the path of a new or empty folder")
    blocking = next((p for p in out.parents if p.exists() and not p.is_dir()), None)
    if blocking is not None:
        raise ConfigError(f"cannot create --out {out}: {blocking} is a file, not a folder; choose another --out")
    kind = next((k for k, m in MARKERS.items() if (out / m).is_file()), None)
    if kind is not None:
        raise ConfigError(f"--out {out} is a medtransfer {kind}; give this output its own folder")
    inside = next((p for p in keep if Path(p).resolve().is_relative_to(out.resolve())), None)
    if inside is not None:
        raise ConfigError(f"--out {out} holds {inside}, which this command reads; choose another --out")
    if out.is_dir() and any(out.iterdir()) and not force:
        raise ConfigError(f"--out {out} exists and is not empty ({_listing(out)}); pass --force to replace it")
    parent = next((p for p in out.parents if p.exists()), None)  # where the new folder is made, then renamed
    if parent is not None and not os.access(parent, os.W_OK):
        raise ConfigError(f"cannot write --out {out}: {parent} is not writable; choose another folder")
    return out


def write_folder(out: Path, write: Callable[[Path], None]) -> Path:
    """Call ``write(tmp)`` on a new temporary folder beside ``out``, then put it in ``out``'s place: a failure leaves
    ``out`` as it was (an existing ``out`` is replaced only once the new one is complete)."""
    out = Path(out)
    try:
        out.parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.", suffix=".tmp", dir=out.parent))
    except OSError as e:
        raise ConfigError(f"cannot write --out {out}: {e.strerror or e}; choose another folder") from None
    try:
        write(tmp)
        if out.exists():
            old = Path(tempfile.mkdtemp(prefix=f".{out.name}.", suffix=".old", dir=out.parent))
            os.replace(out, old / out.name)
            os.replace(tmp, out)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(tmp, out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return out
