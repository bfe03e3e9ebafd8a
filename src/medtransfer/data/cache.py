"""Decode once: every image is decoded a single time to uint8 at the training resolution.

The result is a memory-mapped ``.npy`` array ``(N, C, S, S)`` under the cache folder, keyed by the image
source's identity (which hashes its file list or array), the resolution and the channel count. The second
epoch and the next run read no image files. The file is written under a temporary name and renamed when
complete, so an interrupted build leaves nothing that a later run could mistake for a cache.

Intensity: uint8 images are kept as they are; other dtypes (16-bit PNG, DICOM after rescale, NIfTI) are
min–max scaled per image to 0–255, the usual display mapping for radiographs without a VOI window.

Duplicates: the same pass hashes every image (:mod:`medtransfer.data.duplicates`) and keeps the duplicate groups beside
the cache (``<name>-duplicates-<key>.npz``, keyed by the images and their channels, not by the resolution), so splits
group copies without decoding again; :func:`image_duplicates` reads that table or, before any cache, makes it.

Colour: each image is read with the dataset's channels (``data.channels``, :mod:`medtransfer.data.colour`); what that
changed (RGB of grey content read as grey, colour converted to grey, grey copied to 3 channels) is logged once when
the cache is built, with the number of images, never once per image.
"""

from __future__ import annotations

import hashlib
import logging
import os
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import numpy as np
from PIL import Image
from rich import get_console
from rich.progress import BarColumn, Progress, TextColumn, TimeRemainingColumn

from medtransfer.data.colour import LUMA, describe_conversions
from medtransfer.data.dataset import ArraySource, ImageDataset
from medtransfer.data.duplicates import RULE_VERSION, DuplicateHasher, Duplicates
from medtransfer.errors import DataError
from medtransfer.io import atomic_write

log = logging.getLogger(__name__)

CACHE_VERSION = "1"


def default_cache_dir() -> Path:
    """``$MEDTRANSFER_CACHE`` or ``~/.cache/medtransfer``."""
    env = os.environ.get("MEDTRANSFER_CACHE")
    return Path(env).expanduser() if env else Path.home() / ".cache" / "medtransfer"


def to_uint8(img: np.ndarray) -> np.ndarray:
    """Map one ``(C, H, W)`` image to uint8 (min–max per image for non-uint8 input)."""
    if img.dtype == np.uint8:
        return img
    x = img.astype(np.float32)
    finite = np.isfinite(x)  # NaN/inf pixels (e.g. masked NIfTI) become 0: a NaN cast to uint8 is undefined
    if not finite.any():
        return np.zeros(img.shape, np.uint8)
    lo, hi = float(x[finite].min()), float(x[finite].max())
    if hi <= lo:
        return np.zeros(img.shape, np.uint8)
    scaled = np.rint((np.where(finite, x, lo) - lo) * (255.0 / (hi - lo)))
    return np.clip(scaled, 0, 255).astype(np.uint8)


RESIZE_MODES = ("interpolate", "pad")


def resize_uint8(img: np.ndarray, size: int, mode: str = "interpolate") -> np.ndarray:
    """Bring a ``(C, H, W)`` uint8 image to ``(C, size, size)``.

    ``interpolate``: PIL's bilinear filter, antialiased when shrinking (so a 28-px image upsampled to 64 px and a
    1024-px film shrunk to 64 px are both smooth). ``pad``: keep the pixels, centred on a zero canvas (as MedMNIST+
    pads small images); a side larger than ``size`` is first shrunk, keeping the aspect ratio.

    Example:
        >>> resize_uint8(np.full((1, 28, 28), 9, np.uint8), 64).shape
        (1, 64, 64)
        >>> int(resize_uint8(np.full((1, 28, 28), 9, np.uint8), 64, "pad")[0, 0, 0])
        0
    """
    if mode not in RESIZE_MODES:
        raise ValueError(f"data.resize must be one of {list(RESIZE_MODES)}, got {mode!r}")
    h, w = img.shape[1:]
    if h == size and w == size:
        return img
    if mode == "interpolate":
        return np.stack([np.asarray(Image.fromarray(ch).resize((size, size), Image.BILINEAR)) for ch in img])
    scale = min(1.0, size / max(h, w))
    nh, nw = max(1, round(h * scale)), max(1, round(w * scale))
    if (nh, nw) != (h, w):
        img = np.stack([np.asarray(Image.fromarray(ch).resize((nw, nh), Image.BILINEAR)) for ch in img])
    out = np.zeros((img.shape[0], size, size), np.uint8)
    top, left = (size - nh) // 2, (size - nw) // 2
    out[:, top : top + nh, left : left + nw] = img
    return out


def cache_key(ds: ImageDataset, size: int | None, resize: str = "interpolate") -> str:
    mode = "" if resize == "interpolate" else f"|{resize}"  # the interpolate key is the one earlier caches have
    h = hashlib.sha1(f"{CACHE_VERSION}|{ds.images.identity}|{size}|{ds.channels}{mode}".encode()).hexdigest()[:20]
    return f"{ds.name.replace('/', '_').replace(':', '_')[:40]}-{size or 'native'}-{h}"


def duplicates_path(ds: ImageDataset, cache_dir: str | Path | None = None) -> Path:
    """Where the duplicate table of ``ds`` is kept: beside the image caches, keyed by the images (where they are and
    their content digest: :attr:`ImageSource.content`), the channels they are read with and the duplicate rule, not
    by the training resolution."""
    folder = Path(cache_dir).expanduser() if cache_dir else default_cache_dir()
    paths = getattr(ds.images, "paths", None)  # files: their paths as given (resolving 100k paths takes seconds)
    where = "files:" + hashlib.sha1("\0".join(map(str, paths)).encode()).hexdigest() if paths else ds.images.identity
    key = f"{CACHE_VERSION}|{RULE_VERSION}|{where}|{ds.images.content}|{ds.channels}"
    h = hashlib.sha1(key.encode()).hexdigest()[:20]
    return folder / f"{ds.name.replace('/', '_').replace(':', '_')[:40]}-duplicates-{h}.npz"


def _read_duplicates(path: Path, n: int) -> Duplicates | None:
    if not path.is_file():
        return None
    try:
        with np.load(path) as z:
            dup = Duplicates.from_arrays(z)
    except (OSError, ValueError, KeyError) as e:
        log.warning("duplicate table %s is unreadable (%s); hashing the images again", path, e)
        return None
    return dup if len(dup) == n else None


def _save_duplicates(path: Path, dup: Duplicates) -> None:
    def write(tmp: Path) -> None:
        with open(tmp, "wb") as f:
            np.savez(f, **dup.to_arrays())

    atomic_write(path, write)


def image_duplicates(
    ds: ImageDataset, cache_dir: str | Path | None = None, progress: bool = True, keep: bool = True
) -> Duplicates:
    """The exact and near-duplicate groups of ``ds``'s images, hashed once per dataset and kept beside the image cache.

    Every image is decoded as training reads it (its channels; non-uint8 images min–max mapped for the perceptual
    hash). Images that cannot be read, or whose file the source knows is missing (``image_found``), join no group.
    ``keep=False`` (a dry run) reads a kept table but writes none.

    Example:
        >>> dup = image_duplicates(load_dataset("synthetic:hand,n=16"))   # doctest: +SKIP
        >>> dup.groups()                                                   # doctest: +SKIP
        []
    """
    path = duplicates_path(ds, cache_dir)
    dup = _read_duplicates(path, len(ds))
    if dup is not None:
        return dup
    found = ds.meta["image_found"].to_numpy(bool) if "image_found" in ds.meta.columns else np.ones(len(ds), bool)
    rows = np.flatnonzero(found)
    hasher = DuplicateHasher(len(ds))
    unreadable = 0
    with _bar(f"hashing {ds.name}", len(rows), progress and len(rows) >= 200) as advance:
        for i in rows.tolist():
            try:
                raw = ds.images.load(i)
            except DataError:
                unreadable += 1
            else:
                hasher.add(i, raw, to_uint8(raw))
            advance()
    dup = hasher.result()
    if unreadable:
        log.info("%s: %d image(s) could not be read and join no duplicate group", ds.name, unreadable)
    if keep:
        _save_duplicates(path, dup)
    return dup


@contextmanager
def _bar(label: str, total: int, enabled: bool) -> Iterator[Callable[[], None]]:
    """A transient progress bar on a terminal (elsewhere it would leave a blank line); yields the function that
    advances it by one."""
    columns = (TextColumn(label), BarColumn(), TextColumn("{task.completed}/{task.total}"), TimeRemainingColumn())
    with Progress(*columns, disable=not (enabled and get_console().is_terminal), transient=True) as bar:
        task = bar.add_task(label, total=total)
        yield lambda: bar.advance(task)


def cached_images(
    ds: ImageDataset,
    size: int | None,
    cache_dir: str | Path | None = None,
    progress: bool = True,
    resize: str = "interpolate",
) -> np.ndarray:
    """All images of ``ds`` as a read-only uint8 memmap ``(N, C, S, S)``, building the cache on first use.

    ``size=None`` keeps the native resolution, which then must be the same for every image; otherwise every image is
    brought to ``size`` by ``resize`` (:func:`resize_uint8`: ``interpolate`` or ``pad``), up or down.

    Example:
        >>> arr = cached_images(load_dataset("synthetic:chest,n=8"), 32)   # doctest: +SKIP
        >>> arr.shape, arr.dtype                                            # doctest: +SKIP
        ((8, 1, 32, 32), dtype('uint8'))
    """
    if resize not in RESIZE_MODES:
        raise DataError(f"data.resize must be one of {list(RESIZE_MODES)}, got {resize!r}")
    folder = Path(cache_dir).expanduser() if cache_dir else default_cache_dir()
    path = folder / f"{cache_key(ds, size, resize)}.npy"
    if path.is_file():
        arr = np.load(path, mmap_mode="r")
        if arr.shape[0] == len(ds) and arr.dtype == np.uint8:
            return arr
        log.warning("cache %s does not match the dataset; rebuilding", path)
    first = ds.load(0)
    c = first.shape[0]
    h, w = (size, size) if size else first.shape[1:]
    shape = (len(ds), c, h, w)
    atomic_write(path, lambda tmp: _fill(ds, size, shape, tmp, progress, resize, cache_dir))
    log.info("decoded %d images into %s", len(ds), path)
    return np.load(path, mmap_mode="r")


def _fill(
    ds: ImageDataset,
    size: int | None,
    shape: tuple[int, ...],
    tmp: Path,
    progress: bool,
    resize: str = "interpolate",
    cache_dir: str | Path | None = None,
) -> None:
    out = np.lib.format.open_memmap(tmp, mode="w+", dtype=np.uint8, shape=shape)
    images = ds.images
    # Fast path: an in-memory uint8 array already at the right size is copied in one go.
    if (
        isinstance(images, ArraySource)
        and images.array.dtype == np.uint8
        and (size is None or (images.array.shape[1] == size and images.array.shape[2] == size))
    ):
        arr = images.array
        out[:] = arr[:, None] if arr.ndim == 3 else np.moveaxis(arr, -1, 1)
        out.flush()
        return
    dup_path = duplicates_path(ds, cache_dir)
    hasher = DuplicateHasher(len(ds)) if _read_duplicates(dup_path, len(ds)) is None else None  # hash while decoding
    actions: Counter = Counter()
    with _bar(f"decoding {ds.name}", len(ds), progress and len(ds) >= 200) as advance:
        for i in range(len(ds)):
            raw, note = images.load_with_note(i)
            img = to_uint8(raw)
            if note is not None and note.action is not None:
                actions[note.action] += 1
            if img.shape[0] != shape[1]:
                raise DataError(
                    f"{images.describe(i)} has {img.shape[0]} channel(s) but the first image has {shape[1]}; "
                    "save all images in one colour mode (all greyscale or all RGB)"
                )
            if size is None and img.shape[1:] != tuple(shape[2:]):
                raise DataError(
                    f"{images.describe(i)} is {img.shape[1]}x{img.shape[2]} but the first image is "
                    f"{shape[2]}x{shape[3]}; set data.image_size (--set data.image_size=S) to resize all images"
                )
            out[i] = resize_uint8(img, size, resize) if size else img
            if hasher is not None:
                hasher.add(i, raw, img)
            advance()
    out.flush()
    del out
    if hasher is not None:
        _save_duplicates(dup_path, hasher.result())
    if actions:  # one notice for the whole set, the same words `data inspect` prints
        keep = "; set data.channels: 3 to keep the colour" if actions[LUMA] else ""
        log.log(
            logging.WARNING if keep else logging.INFO,
            "%s: %s%s",
            ds.name,
            describe_conversions(shape[1], actions),
            keep,
        )
