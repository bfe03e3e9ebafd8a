"""Logging setup for the command line (library code only calls ``logging.getLogger(__name__)``)."""

from __future__ import annotations

import logging


def setup_logging(verbose: bool = False) -> None:
    """Send medtransfer's log records to stderr through rich; INFO by default, DEBUG with ``verbose``."""
    from rich.console import Console
    from rich.logging import RichHandler

    handler = RichHandler(console=Console(stderr=True), show_path=False, show_time=False, markup=False)
    root = logging.getLogger("medtransfer")
    root.handlers[:] = [handler]
    root.setLevel(logging.DEBUG if verbose else logging.INFO)
    root.propagate = False
