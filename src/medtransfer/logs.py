"""Logging setup for the command line (library code only calls ``logging.getLogger(__name__)``)."""

from __future__ import annotations

import logging
import warnings
from pathlib import Path

from rich.console import Console
from rich.logging import RichHandler

_warn_log = logging.getLogger("medtransfer.warnings")


def setup_logging(verbose: bool = False) -> None:
    """Send medtransfer's log records to stderr through rich; INFO by default, DEBUG with ``verbose``.

    Warnings of the libraries (scikit-learn, numpy, torch ...) become one log line each, naming the library, instead
    of Python's two lines with a file path and a line of source code (:func:`show_warning`)."""
    handler = RichHandler(console=Console(stderr=True), show_path=False, show_time=False, markup=False)
    root = logging.getLogger("medtransfer")
    root.handlers[:] = [handler]
    root.setLevel(logging.DEBUG if verbose else logging.INFO)
    root.propagate = False
    warnings.showwarning = show_warning


def show_warning(message, category, filename, lineno, file=None, line=None) -> None:  # noqa: ARG001 - the hook's API
    """``warnings.showwarning`` replacement: ``<library> warning: <message>`` as one line through the log."""
    parts = Path(str(filename)).parts
    library = next((parts[i + 1] for i, p in enumerate(parts[:-1]) if p in ("site-packages", "dist-packages")), None)
    library = (library or Path(str(filename)).stem).removesuffix(".py")
    text = " ".join(str(message).split())
    if len(text) > 240:  # scikit-learn appends paragraphs of advice and links; the first lines say what happened
        text = text[:239] + "…"
    _warn_log.warning("%s %s: %s", library, category.__name__, text)
