"""The report's "Where the models look" section: the saliency gallery a study drew into ``figures/``.

The figure and its caption are made by :mod:`medtransfer.studies.gallery` (it needs the trained models; reporting
reads only files): ``figures/gallery.json`` lists ``{"file", "caption", "alt"}`` entries. A study without one (no
network arm, no kept model, 3-D cases) has no section.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

from medtransfer.reporting.document import Block, Heading, Image, Paragraph

log = logging.getLogger(__name__)

GALLERY_JSON = "figures/gallery.json"


def gallery_section(out: str | Path) -> tuple[list[Block], dict[str, Path]]:
    """The section's blocks and the figures it shows (for the report's file list); both empty without a gallery.

    Example:
        >>> blocks, files = gallery_section("runs/study")  # doctest: +SKIP
    """
    out = Path(out)
    spec = out / GALLERY_JSON
    if not spec.is_file():
        return [], {}
    try:
        entries = json.loads(spec.read_text(encoding="utf-8"))
        # only figures inside the study folder, as the study drew them
        entries = [e for e in entries if (out / e["file"]).resolve().is_relative_to(out.resolve())]
        entries = [e for e in entries if (out / e["file"]).is_file()]
    except (ValueError, TypeError, KeyError, OSError) as e:
        log.warning("%s is unreadable (%s); the report has no gallery", spec, e)
        return [], {}
    if not entries:
        return [], {}
    blocks: list[Block] = [Heading(2, "Where the models look")]
    files: dict[str, Path] = {}
    for i, e in enumerate(entries):
        path = out / e["file"]
        blocks += [Paragraph(str(e.get("caption", ""))), Image(str(e.get("alt", "gallery")), e["file"], path)]
        files[f"gallery{i or ''}"] = path
    return blocks, files
