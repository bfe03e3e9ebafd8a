"""What ``medtransfer data inspect`` reports: counts, labels, patients, image sizes, colour modes, problems found."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field

import numpy as np

from medtransfer.data.colour import describe_conversions
from medtransfer.data.dataset import ImageDataset
from medtransfer.errors import DataError
from medtransfer.tasks.base import task_kind


@dataclass
class Inspection:
    name: str
    task: str
    n_images: int
    n_patients: int
    channels: int
    label_header: list[str] = field(default_factory=list)  # the task kind's label table (data inspect shows it)
    label_rows: list[list[str]] = field(default_factory=list)
    sizes: dict[str, int] = field(default_factory=dict)  # "HxW" → count among images read
    dtypes: dict[str, int] = field(default_factory=dict)
    n_read: int = 0
    source_splits: dict[str, int] = field(default_factory=dict)
    problems: list[str] = field(default_factory=list)
    unreadable: list[tuple[str, str]] = field(default_factory=list)  # (which image, why) for every one that failed
    colour_modes: dict[str, int] = field(default_factory=dict)  # "RGB (grey content)" → count among images read
    conversion: str | None = None  # what reading with `channels` did to them (the words training logs)


def inspect_dataset(ds: ImageDataset, sample: int | None = 32) -> Inspection:
    """Summarise ``ds``; decode ``sample`` evenly spaced images (all when ``sample`` is None).

    Example:
        >>> rep = inspect_dataset(load_dataset("synthetic:hand,n=16"))   # doctest: +SKIP
        >>> rep.n_images, rep.task                                        # doctest: +SKIP
        (16, 'binary')
    """
    rep = Inspection(ds.name, ds.task, len(ds), int(ds.meta["patient_id"].nunique()), ds.channels)
    rep.label_header, rep.label_rows, problems = task_kind(ds.task).label_table(ds.labels, list(ds.label_names))
    rep.problems += problems
    if "source_split" in ds.meta.columns:
        rep.source_splits = {str(k): int(v) for k, v in ds.meta["source_split"].value_counts().items()}
    missing = ds.info.get("n_images_missing", 0)
    if missing:
        rep.problems.append(
            f"{missing} of {len(ds)} image files are missing under {ds.info.get('image_root', 'the image folder')}"
        )
    idx = (
        np.arange(len(ds))
        if sample is None
        else np.unique(np.linspace(0, len(ds) - 1, min(sample, len(ds))).astype(int))
    )
    sizes: Counter = Counter()
    dtypes: Counter = Counter()
    modes: Counter = Counter()
    actions: Counter = Counter()
    for i in idx:
        try:
            img, note = ds.images.load_with_note(int(i))  # what training reads (the cache does the same)
        except DataError as e:
            if not missing or "not found" not in str(e):
                rep.unreadable.append((ds.images.describe(int(i)), str(e)))
            continue
        sizes[f"{img.shape[1]}x{img.shape[2]}"] += 1
        dtypes[str(img.dtype)] += 1
        if note is not None:
            modes[note.label] += 1
            actions[note.action] += 1
        rep.n_read += 1
    rep.sizes, rep.dtypes = dict(sizes), dict(dtypes)
    if modes:
        rep.colour_modes = dict(modes.most_common())
        rep.conversion = describe_conversions(ds.channels, actions)
    if rep.unreadable:
        rep.problems.append(f"{len(rep.unreadable)} unreadable image(s) among {len(idx)} read (listed above)")
    if len(sizes) > 1:
        rep.problems.append(f"images have {len(sizes)} different sizes; they are resized to data.image_size")
    return rep
