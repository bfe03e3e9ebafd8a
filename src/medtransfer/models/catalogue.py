"""The source catalogue: the built-in sources plus every source-model folder under the sources folder.

The folder is ``--sources-dir``, else ``$MEDTRANSFER_SOURCES``, else ``~/.cache/medtransfer/sources``. Each
sub-folder with a ``source.yaml`` card is a source named after the folder; a folder whose card is missing or
unreadable is listed with the reason, and the others are still listed.

Example:
    >>> [e.name for e in list_sources("/nonexistent")][:2]  # doctest: +SKIP
    ['scratch', 'imagenet']
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import yaml

from medtransfer.errors import UserError
from medtransfer.models.weights import CARD_FILE, find_imagenet_file, resolve_weights, sources_dir
from medtransfer.registry import suggest

DEFAULT_BACKBONE = "resnet18"
BUILTINS = ("scratch", "imagenet")


@dataclass(frozen=True)
class SourceEntry:
    """One line of the catalogue; ``error`` is set (and ``source`` unusable) when the folder is broken."""

    name: str
    source: str  # the value for model.source: 'scratch', 'imagenet' or the folder path
    backbone: str | None = None
    method: str | None = None
    modality: str | None = None
    site: str | None = None
    n_images: int | None = None
    available: bool = True
    note: str = ""
    error: str | None = None
    remedy: str | None = None  # how to make an unavailable or broken entry usable (one line)


def builtin_sources(backbone: str = DEFAULT_BACKBONE) -> list[SourceEntry]:
    """``scratch`` and ``imagenet`` (marked not available when the local caches lack ``backbone``'s file)."""
    scratch = SourceEntry("scratch", "scratch", backbone=None, method="none", note="random initialisation")
    try:
        spec = resolve_weights("imagenet", backbone)
        found = find_imagenet_file(spec)
    except UserError as e:
        return [
            scratch,
            SourceEntry("imagenet", "imagenet", backbone, "supervised", "natural images", available=False, note=str(e)),
        ]
    note = f"{spec.name}: {found}" if found else f"{spec.name}: not available offline (not in the local caches)"
    return [
        scratch,
        SourceEntry(
            "imagenet",
            "imagenet",
            backbone,
            "supervised",
            "natural images",
            available=found is not None,
            note=note,
            remedy=None if found else imagenet_fetch(spec),
        ),
    ]


def imagenet_fetch(spec) -> str:
    """The one-time step, with internet, that puts ``spec``'s timm weights where :func:`find_imagenet_file` looks.

    Example:
        >>> print(imagenet_fetch(resolve_weights("imagenet", "resnet18")))  # doctest: +ELLIPSIS
        run once with internet: python -c "import timm; timm.create_model('resnet18.a1_in1k', pretrained=True)" ...
    """
    command = f"python -c \"import timm; timm.create_model('{spec.name}', pretrained=True)\""
    repo = (spec.hub_id or "").partition("@")[0]
    alt = f" (or: hf download {repo} model.safetensors)" if repo else ""
    return (
        f"run once with internet: {command}{alt}; it fills the Hugging Face cache ($HF_HOME, default "
        "~/.cache/huggingface), which an offline machine can copy"
    )


BUILD_HINT = "medtransfer sources build --data ARCHIVE --name NAME"


def read_entry(folder: Path) -> SourceEntry:
    """The catalogue entry of one source-model folder; problems go into ``error`` (one line), never raise."""
    name, card_path = folder.name, folder / CARD_FILE
    try:
        if not card_path.is_file():
            raise UserError(f"no {CARD_FILE} card in {folder}")
        try:
            card = yaml.safe_load(card_path.read_text())
        except yaml.YAMLError as e:
            raise UserError(f"{card_path}: not valid YAML ({str(e).splitlines()[0]})") from None
        if not isinstance(card, dict) or not card.get("backbone"):
            raise UserError(f"{card_path}: the card has no 'backbone' key")
        spec = resolve_weights(str(folder), str(card["backbone"]))  # checks the card's keys and the weights file
    except (UserError, OSError) as e:
        remedy = f"delete {folder} and rebuild it: {BUILD_HINT.replace('NAME', name)}"
        return SourceEntry(name, str(folder), available=False, error=" ".join(str(e).split()), remedy=remedy)
    data = card.get("data") if isinstance(card.get("data"), dict) else {}
    n = data.get("n_images")
    return SourceEntry(
        name,
        str(folder),
        backbone=spec.backbone,
        method=spec.method,
        modality=spec.modality,
        site=spec.site,
        n_images=int(n) if isinstance(n, int) else None,
        note=str(card.get("description") or ""),
    )


def list_sources(folder: str | Path | None = None, backbone: str = DEFAULT_BACKBONE) -> list[SourceEntry]:
    """Built-ins first, then the source-model folders under :func:`sources_dir` in name order."""
    root = sources_dir(folder)
    entries = builtin_sources(backbone)
    if root.is_dir():
        entries += [read_entry(d) for d in sorted(root.iterdir()) if d.is_dir() and not d.name.startswith(".")]
    return entries


def lookup(name: str, folder: str | Path | None = None) -> str:
    """The ``model.source`` value for a catalogue name (built-in, folder under the catalogue, or a path).

    Raises :class:`UserError` (one line, with close matches) for an unknown name or a broken folder.
    """
    text = name.strip()
    if text in BUILTINS or text.startswith("imagenet:"):
        return text
    path = Path(text).expanduser()
    if path.exists():
        return str(path)
    root = sources_dir(folder)
    if (root / text).is_dir():
        entry = read_entry(root / text)
        if entry.error:
            raise UserError(f"source '{text}' is broken: {entry.error}")
        return entry.source
    known = [e.name for e in list_sources(root) if e.error is None]
    close = suggest(text, known)
    hint = f"did you mean {close[0]!r}? " if close else ""
    raise UserError(f"unknown source '{text}': {hint}available in {root}: {known} (or give a folder path)")
