"""The one data contract every source produces.

An :class:`ImageDataset` is

* ``images``: a lazy :class:`ImageSource` (``load(i)`` → ``(C, H, W)`` array in the file's own dtype);
* ``labels``: ``(N, K)`` float32, ``NaN`` = unknown. Binary tasks have K = 1; multi-class tasks are one-hot
  over K classes; multi-label tasks have one column per finding;
* ``label_names``: K names;
* ``task``: a registered 2-D task kind (:mod:`medtransfer.tasks`): ``binary`` | ``multiclass`` | ``multilabel`` |
  ``regression`` (K continuous targets) | ``unlabelled``;
* ``meta``: a DataFrame with one row per image and at least ``image_id`` and ``patient_id``
  (``patient_id`` falls back to ``image_id`` when the source has none). Optional columns: ``path``,
  ``source_split`` (a split that came with the file, e.g. MedMNIST ``train/val/test``).

Datasets are immutable: ``subset``/``select_labels`` return new datasets.
"""

from __future__ import annotations

import hashlib
from abc import ABC, abstractmethod
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from medtransfer.errors import DataError
from medtransfer.tasks.base import kind_names, task_kind


class ImageSource(ABC):
    """Lazy access to N images. ``identity`` changes whenever the set of images changes (cache key)."""

    channels: int = 1

    @abstractmethod
    def __len__(self) -> int: ...

    @abstractmethod
    def load(self, i: int) -> np.ndarray:
        """Image ``i`` as a ``(C, H, W)`` array (native dtype). Raises :class:`DataError` naming the file."""

    @property
    @abstractmethod
    def identity(self) -> str: ...

    def load_with_note(self, i: int) -> tuple[np.ndarray, object | None]:
        """:meth:`load` and how the image's colour mode was brought to :attr:`channels`: a
        :class:`medtransfer.data.colour.ColourNote` (not imported here: colour.py builds on this module), or ``None``
        for sources whose images all come in one mode."""
        return self.load(i), None

    def describe(self, i: int) -> str:
        """How to name image ``i`` in an error message."""
        return f"image #{i}"

    @property
    def content(self) -> str | None:
        """A digest of the images that does not depend on where they are stored (what a split file records, so it
        is not applied to other images that happen to have the same ids); ``None`` when the source has none."""
        return None

    def subset(self, indices: np.ndarray) -> ImageSource:
        return SubsetSource(self, np.asarray(indices, dtype=np.int64))


class ArraySource(ImageSource):
    """Images already in memory (or memory-mapped), shape ``(N, H, W)`` or ``(N, H, W, C)``."""

    def __init__(self, array: np.ndarray, name: str) -> None:
        if array.ndim not in (3, 4):
            raise DataError(f"{name}: expected images of shape (N, H, W) or (N, H, W, C), got {array.shape}")
        self.array = array
        self.name = name
        self.channels = 1 if array.ndim == 3 else int(array.shape[-1])
        self._content = f"array:{array.shape}:{array.dtype}:{_array_digest(array)}"
        self._identity = f"array:{name}:{self._content[len('array:') :]}"

    def __len__(self) -> int:
        return len(self.array)

    def load(self, i: int) -> np.ndarray:
        img = np.asarray(self.array[i])
        return img[None] if img.ndim == 2 else np.moveaxis(img, -1, 0)

    @property
    def identity(self) -> str:
        return self._identity

    def describe(self, i: int) -> str:
        return f"{self.name}[{i}]"

    @property
    def content(self) -> str:
        return self._content


class FileSource(ImageSource):
    """Images read from files on demand by ``reader(path) -> (C, H, W)``."""

    def __init__(self, paths: Sequence[str | Path], reader: Callable[[Path], np.ndarray], channels: int = 1) -> None:
        self.paths = [Path(p) for p in paths]
        self.reader = reader
        self.channels = channels

    def __len__(self) -> int:
        return len(self.paths)

    def load(self, i: int) -> np.ndarray:
        return self.reader(self.paths[i])

    @property
    def identity(self) -> str:
        h = hashlib.sha1()
        for p in self.paths:
            h.update(str(p.resolve()).encode())
            h.update(b"\0")
        return f"files:{len(self.paths)}:{h.hexdigest()}"

    def describe(self, i: int) -> str:
        return str(self.paths[i])

    @property
    def content(self) -> str:
        # file names and sizes: cheap (no decode) and the same wherever the folder is moved
        entries = []
        for p in self.paths:
            try:
                size = p.stat().st_size
            except OSError:
                size = -1
            entries.append(f"{p.name}\0{size}")
        digest = hashlib.sha1("\0".join(sorted(entries)).encode()).hexdigest()[:16]  # sorted: row order is not content
        return f"files:{len(self.paths)}:{digest}"


class GeneratedSource(ImageSource):
    """Images computed from their index by a deterministic ``make(i) -> (C, H, W)`` (synthetic data)."""

    def __init__(self, n: int, make: Callable[[int], np.ndarray], identity: str, channels: int = 1) -> None:
        self.n = n
        self.make = make
        self._identity = identity
        self.channels = channels

    def __len__(self) -> int:
        return self.n

    def load(self, i: int) -> np.ndarray:
        if not 0 <= i < self.n:
            raise IndexError(i)
        return self.make(i)

    @property
    def identity(self) -> str:
        return self._identity

    @property
    def content(self) -> str:
        return self._identity


class SubsetSource(ImageSource):
    def __init__(self, parent: ImageSource, indices: np.ndarray) -> None:
        self.parent = parent
        self.indices = indices
        self.channels = parent.channels

    def __len__(self) -> int:
        return len(self.indices)

    def load(self, i: int) -> np.ndarray:
        return self.parent.load(int(self.indices[i]))

    def load_with_note(self, i: int) -> tuple[np.ndarray, object | None]:
        return self.parent.load_with_note(int(self.indices[i]))

    @property
    def identity(self) -> str:
        return f"subset:{self.parent.identity}:{hashlib.sha1(self.indices.tobytes()).hexdigest()}"

    def describe(self, i: int) -> str:
        return self.parent.describe(int(self.indices[i]))

    @property
    def content(self) -> str | None:
        parent = self.parent.content
        if parent is None:
            return None
        if len(self.indices) == len(self.parent) and len(np.unique(self.indices)) == len(self.indices):
            return parent  # a reordering of all the parent's images: the same images
        chosen = np.sort(self.indices)  # which images, not their order
        return f"subset:{parent}:{hashlib.sha1(chosen.tobytes()).hexdigest()[:16]}"

    def subset(self, indices: np.ndarray) -> ImageSource:
        return SubsetSource(self.parent, self.indices[np.asarray(indices, dtype=np.int64)])


def _array_digest(array: np.ndarray) -> str:
    """A cheap content digest: shape plus a strided sample (hashing 140 MB on every load would be slow)."""
    flat = array.reshape(-1)
    step = max(1, flat.size // 65536)
    return hashlib.sha1(np.ascontiguousarray(flat[::step]).tobytes()).hexdigest()[:16]


@dataclass(frozen=True)
class ImageDataset:
    """N images, an N×K label array (NaN = unknown), K label names and one metadata row per image."""

    name: str
    images: ImageSource
    labels: np.ndarray
    label_names: tuple[str, ...]
    task: str
    meta: pd.DataFrame
    info: dict = field(default_factory=dict)  # source-specific facts for `data inspect` (e.g. missing files)

    def __post_init__(self) -> None:
        n = len(self.images)
        images_kinds = [k for k in kind_names() if task_kind(k).family == "images"]  # 2-D images with labels
        if self.task not in images_kinds:
            raise DataError(f"{self.name}: unknown task '{self.task}' (expected one of {images_kinds})")
        if self.labels.ndim != 2 or self.labels.shape[0] != n:
            raise DataError(f"{self.name}: labels must be (N={n}, K), got {self.labels.shape}")
        if self.labels.shape[1] != len(self.label_names):
            raise DataError(f"{self.name}: {self.labels.shape[1]} label columns but {len(self.label_names)} names")
        if len(self.meta) != n:
            raise DataError(f"{self.name}: metadata has {len(self.meta)} rows for {n} images")
        for col in ("image_id", "patient_id"):
            if col not in self.meta.columns:
                raise DataError(f"{self.name}: metadata lacks the '{col}' column")
        if n == 0:
            raise DataError(f"{self.name}: no images")
        finite = self.labels[np.isfinite(self.labels)]
        if task_kind(self.task).probabilities and finite.size and not np.isin(finite, (0, 1)).all():
            raise DataError(f"{self.name}: labels must be 0, 1 or NaN for a {self.task} task")

    def __len__(self) -> int:
        return len(self.images)

    @property
    def channels(self) -> int:
        return self.images.channels

    @property
    def num_labels(self) -> int:
        return len(self.label_names)

    def load(self, i: int) -> np.ndarray:
        return self.images.load(i)

    def subset(self, indices: Sequence[int] | np.ndarray, name: str | None = None) -> ImageDataset:
        """A new dataset with the images at ``indices`` (in that order)."""
        idx = np.asarray(indices, dtype=np.int64)
        return ImageDataset(
            name=name or self.name,
            images=self.images.subset(idx),
            labels=self.labels[idx],
            label_names=self.label_names,
            task=self.task,
            meta=self.meta.iloc[idx].reset_index(drop=True),
            info=dict(self.info),
        )

    def select_labels(self, names: Sequence[str]) -> ImageDataset:
        """A new dataset that keeps only the named label columns (in the given order)."""
        missing = [n for n in names if n not in self.label_names]
        if missing:
            raise DataError(f"{self.name}: unknown label(s) {missing}; available: {list(self.label_names)}")
        cols = [self.label_names.index(n) for n in names]
        task = task_kind(self.task).after_selecting(len(cols))  # one finding of a multi-label set: binary
        return ImageDataset(
            self.name, self.images, self.labels[:, cols], tuple(names), task, self.meta, dict(self.info)
        )

    def class_index(self) -> np.ndarray:
        """Multi-class: the integer class of each image (-1 when unknown)."""
        if not task_kind(self.task).one_hot:
            raise ValueError("class_index() is only defined for multi-class datasets")
        known = np.isfinite(self.labels).all(axis=1)
        out = np.full(len(self), -1, dtype=np.int64)
        out[known] = self.labels[known].argmax(axis=1)
        return out


def one_hot(codes: np.ndarray, k: int) -> np.ndarray:
    """Integer class codes (−1 = unknown) → (N, k) float32 one-hot with NaN rows for unknown."""
    out = np.zeros((len(codes), k), dtype=np.float32)
    known = codes >= 0
    out[np.flatnonzero(known), codes[known]] = 1.0
    out[~known] = np.nan
    return out


def default_meta(n: int, prefix: str = "", patient_ids: Sequence | None = None) -> pd.DataFrame:
    """Metadata with ``image_id`` = prefix + index and ``patient_id`` falling back to the image id."""
    ids = [f"{prefix}{i:06d}" for i in range(n)]
    return pd.DataFrame({"image_id": ids, "patient_id": list(patient_ids) if patient_ids is not None else ids})
