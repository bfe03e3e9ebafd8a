"""The registry of data sources and the one entry point :func:`load_dataset`.

A source is a small class with ``detect(path) -> bool`` (cheap, used for auto-detection) and
``load(path, options) -> ImageDataset``. Sources register themselves in :data:`DATA_SOURCES`;
``medtransfer.data.sources`` imports each source module by name.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from pathlib import Path
from typing import ClassVar

from medtransfer.data.colour import ConformedSource
from medtransfer.data.dataset import ImageDataset
from medtransfer.errors import DataError
from medtransfer.registry import Registry


@dataclass(frozen=True)
class SourceOptions:
    """Options a source may use; each source ignores what does not apply to it."""

    labels: tuple[str, ...] | None = None  # label column(s) (folder) or label names to keep
    classes: tuple[str, ...] | None = None  # class filter (MedNIST)
    image_column: str | None = None
    patient_column: str | None = None
    task: str | None = None  # force binary / multiclass / multilabel where the labels allow it
    allow_outside: bool = False  # folder source: the CSV may name files outside its folder
    channels: int | None = None  # 1 or 3: every image read with these channels (data.channels); None = the majority

    def __post_init__(self) -> None:
        if self.channels is not None and self.channels not in (1, 3):
            raise DataError(f"channels must be 1, 3 or unset (what most images have), got {self.channels!r}")


class DataSource:
    """Base class: subclasses set ``name`` and implement ``detect`` and ``load``."""

    name: ClassVar[str] = ""
    description: ClassVar[str] = ""
    volumetric: ClassVar[bool] = False  # 3-D cases for segmentation (SegDataset) rather than 2-D images

    @staticmethod
    def detect(path: Path) -> bool:
        return False

    def load(self, path: Path, options: SourceOptions) -> ImageDataset:
        raise NotImplementedError

    @staticmethod
    def hint(path: Path) -> str | None:
        """Why ``path``, which looks meant for this source, was not detected (``None``: it does not look meant for
        it). Shown instead of "cannot tell the format" when no source recognises a path."""
        return None


DATA_SOURCES: Registry[type[DataSource]] = Registry(
    "data format",
    builtins=tuple(
        f"medtransfer.data.sources.{m}"
        for m in ("folder", "image_folder", "medmnist", "mednist", "nih_cxr14", "synthetic", "volumes")
    ),
)


def builtin_sources() -> Registry[type[DataSource]]:
    """The registry of data formats (its built-in modules are imported on the first lookup)."""
    return DATA_SOURCES


def _as_path(path: str | Path) -> Path:
    return Path(path).expanduser()


def source_names(volumetric: bool = False) -> list[str]:
    """The registered 2-D sources (or, with ``volumetric``, the 3-D ones)."""
    builtin_sources()
    return [n for n in DATA_SOURCES.names() if DATA_SOURCES.get(n).volumetric == volumetric]


def detect_format(path: str | Path, volumetric: bool = False) -> str:
    """The single registered source (2-D, or 3-D with ``volumetric``) that recognises ``path``; raise when none or
    several do."""
    names = source_names(volumetric)
    p = str(path)
    if not p.startswith("synthetic:") and not _as_path(p).exists():
        raise DataError(f"data path not found: {p}")
    hits = [name for name in names if DATA_SOURCES.get(name).detect(_as_path(p))]
    if not hits:
        hints = [h for name in names if (h := DATA_SOURCES.get(name).hint(_as_path(p)))]
        if hints:
            raise DataError(hints[0])
        raise DataError(f"cannot tell the format of {p}; pass --format with one of {names}")
    if len(hits) > 1:
        raise DataError(f"{p} could be any of {hits}; pass --format to choose")
    return hits[0]


def load_dataset(path: str | Path, format: str | None = None, options: SourceOptions | None = None) -> ImageDataset:
    """Load any supported dataset into the one data contract.

    Example:
        >>> ds = load_dataset("synthetic:chest,n=32")          # doctest: +SKIP
        >>> ds.labels.shape, ds.label_names                     # doctest: +SKIP
        ((32, 1), ('lesion',))
    """
    options = options or SourceOptions()
    name = format or detect_format(path)
    source_cls = _source(name, volumetric=False)
    p = _as_path(path)
    if not str(path).startswith("synthetic:") and not p.exists():
        raise DataError(f"data path not found: {p}")
    ds = source_cls().load(p, options)
    if len(ds) == 0:
        raise DataError(f"{path} holds no images; check that it is the file or folder you meant")
    if options.labels and name not in ("folder",):
        ds = ds.select_labels(list(options.labels))
    if options.channels is not None and ds.channels != options.channels:  # the folder source conforms each image
        ds = replace(ds, images=ConformedSource(ds.images, options.channels))
    return ds


def _source(name: str, volumetric: bool) -> type[DataSource]:
    source_cls = builtin_sources().get(name)  # an unknown name fails with close matches
    if source_cls.volumetric != volumetric:
        want = "3-D (segmentation)" if volumetric else "2-D"
        raise DataError(f"data.format '{name}' is not a {want} format; use one of {source_names(volumetric)}")
    return source_cls


def load_volumes(path: str | Path, format: str | None = None):
    """Load a 3-D segmentation dataset (a :class:`~medtransfer.data.volumes.SegDataset`) from a registered
    volumetric source (``msd``, ``nifti_folder``; detected when ``format`` is None)."""
    p = _as_path(path)
    if not p.is_dir():
        raise DataError(f"segmentation data {p} is not a folder")
    name = format or detect_format(p, volumetric=True)
    return _source(name, volumetric=True)().load(p, SourceOptions())
