"""``images``: a plain folder of image files, no CSV: unlabelled images to score (``medtransfer predict``) or to
pretrain a self-supervised source on (``medtransfer sources build``).

Which folders: a folder with no CSV file (``.csv``, ``.csv.gz``) at its top level, none in its direct subfolders
(that is the parent of a folder+CSV dataset: pass that folder instead), and at least one image file below it.
Which files: every ``.png .jpg .jpeg .tif .tiff .bmp .dcm .dicom`` file in the folder and all its subfolders, plus
DICOM files without a suffix (or with a numeric one, ``1.2.840...``) recognised by the ``DICM`` preamble at byte
128. Names starting with ``.`` (``.DS_Store``, macOS ``._x.png`` copies, hidden folders) are skipped; 2-D NIfTI
files are not taken (NIfTI folders are 3-D volumes, see the ``nifti_folder`` format); a folder+CSV dataset lists
them explicitly.

Order and ids: files sorted by their path relative to the folder (``/``-separated), which is the ``image_id``.
There is no patient information: ``patient_id`` is the ``image_id``, so a split cannot keep a patient's images
together. There are no labels: the task is ``unlabelled`` (``data.labels`` is refused: add a CSV for labels).
Images may mix colour modes: each is read with the dataset's channels (``data.channels``, else what most images
have), by the rules of :mod:`medtransfer.data.colour`, as the folder source does.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path

import numpy as np
import pandas as pd

from medtransfer.data.colour import ColourNote, conform, decide_channels
from medtransfer.data.dataset import FileSource, ImageDataset
from medtransfer.data.readers import (
    DICOM_SUFFIXES,
    PIL_SUFFIXES,
    header_mode,
    is_suffixless_dicom,
    read_image,
    read_pixels,
)
from medtransfer.data.sources.base import DATA_SOURCES, DataSource, SourceOptions
from medtransfer.errors import DataError

log = logging.getLogger(__name__)

SUFFIXES = PIL_SUFFIXES + DICOM_SUFFIXES
CSV_SUFFIXES = (".csv", ".csv.gz")


def _is_csv(path: Path) -> bool:
    return path.name.lower().endswith(CSV_SUFFIXES) and path.is_file()


def _is_image(path: Path) -> bool:
    name = path.name.lower()
    return name.endswith(SUFFIXES) or is_suffixless_dicom(path)


def _walk(root: Path):
    """Image files under ``root`` in walk order, hidden names skipped (a generator: detection stops at the first)."""
    for folder, dirs, files in os.walk(root):
        dirs[:] = [d for d in dirs if not d.startswith(".")]
        for name in files:
            if not name.startswith(".") and _is_image(Path(folder) / name):
                yield Path(folder) / name


def _csv_blocking(path: Path) -> Path | None:
    """A CSV at the top of ``path`` or in one of its direct subfolders: then ``path`` is not a plain image folder."""
    top = next((p for p in path.iterdir() if _is_csv(p)), None)
    if top is not None:
        return top
    for sub in path.iterdir():
        if sub.is_dir() and not sub.name.startswith("."):
            found = next((p for p in sub.iterdir() if _is_csv(p)), None)
            if found is not None:
                return found
    return None


def find_images(path: Path) -> list[Path]:
    """Every image file under ``path`` (see the module docstring), sorted by relative path; a :class:`DataError`
    when there is none."""
    files = sorted(_walk(path), key=lambda p: p.relative_to(path).as_posix())
    if not files:
        raise DataError(
            f"no image files in {path} or its subfolders (looked for {' '.join(SUFFIXES)} and DICOM files without "
            "a suffix); point --data at the folder that holds the images"
        )
    return files


@DATA_SOURCES.register("images")
class ImageFolderSource(DataSource):
    """A folder of image files and nothing else: unlabelled, one image per file, no patient ids."""

    name = "images"
    description = "a plain folder of image files (PNG, JPEG, TIFF, BMP, DICOM; subfolders too), no CSV, no labels"

    @staticmethod
    def detect(path: Path) -> bool:
        if not path.is_dir():
            return False
        try:
            return _csv_blocking(path) is None and next(_walk(path), None) is not None
        except OSError:
            return False

    @staticmethod
    def hint(path: Path) -> str | None:
        if not path.is_dir():
            return None
        try:
            if next(path.iterdir(), None) is None or _csv_blocking(path) is not None:
                return None  # empty (the folder format says so) or meant for a CSV
            if next(_walk(path), None) is None:
                return (
                    f"no CSV and no image files in {path} or its subfolders (looked for {' '.join(SUFFIXES)}); "
                    "point --data at the images, or at a folder with the images and one CSV listing them"
                )
        except OSError:
            return None
        return None

    def load(self, path: Path, options: SourceOptions) -> ImageDataset:
        if not path.is_dir():
            raise DataError(f"data format 'images' takes a folder of image files; {path} is not a folder")
        if options.labels:
            raise DataError(
                f"{path} is a plain image folder: it has no labels to select {list(options.labels)} from; "
                "add a CSV (file,label) beside the images to give them labels"
            )
        files = find_images(path)
        ids = [p.relative_to(path).as_posix() for p in files]
        images = ImageFiles(files)
        images.channels = options.channels or decide_channels(len(images), images.header_mode, images.read_natural)
        meta = pd.DataFrame({"image_id": ids, "patient_id": ids, "path": [str(p) for p in files]})
        log.debug(
            "%s: %d image files, no labels, no patient ids (each image counts as its own patient)", path, len(ids)
        )
        return ImageDataset(
            name=path.name or str(path),
            images=images,
            labels=np.zeros((len(ids), 0), dtype=np.float32),
            label_names=(),
            task="unlabelled",
            meta=meta,
            info={"image_root": str(path), "n_files": len(ids)},
        )


class ImageFiles(FileSource):
    """Image files each read with the dataset's :attr:`channels` whatever its colour mode, by the rule of
    :mod:`medtransfer.data.colour` (as the folder source reads its CSV's files); errors name the file."""

    def __init__(self, paths: list[Path], channels: int = 1) -> None:
        super().__init__(paths, read_image, channels)

    def load(self, i: int) -> np.ndarray:
        return self.load_with_note(i)[0]

    def load_with_note(self, i: int) -> tuple[np.ndarray, ColourNote]:
        img, mode = read_pixels(self.paths[i])
        return conform(img, mode, self.channels)

    def read_natural(self, i: int) -> np.ndarray:
        """Image ``i`` with its own channels (1, or 3 for a truly colour image), before :func:`conform`."""
        return read_pixels(self.paths[i])[0]

    def header_mode(self, i: int) -> str:
        """Image ``i``'s colour mode from its header (no pixel decode)."""
        return header_mode(self.paths[i])
