"""What ``medtransfer data inspect`` reports: counts, labels, patients, image sizes, colour modes, duplicate images,
problems found. Long lists are summarised so that a folder of many sizes still fits one screen."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from medtransfer.data.cache import image_duplicates
from medtransfer.data.colour import describe_conversions
from medtransfer.data.dataset import ImageDataset
from medtransfer.data.duplicates import RULE, Duplicates
from medtransfer.errors import DataError
from medtransfer.tasks.base import task_kind

TOP_SIZES = 5  # the most common sizes listed; the rest are summarised
TOP_KINDS = 5  # colour modes and dtypes listed before "N others"
GROUPS_SHOWN = 8  # duplicate groups listed (labelling errors first); all of them with --duplicates FILE
FILES_SHOWN = 4  # image names listed per group
NO_PATIENT_IDS = (
    "no patient ids: every image counts as its own patient, so images of one patient may sit in different splits; "
    "the leakage audit then covers only duplicate images"
)


@dataclass
class DuplicateGroup:
    """Images that are copies of one another: all exact copies (``exact``) or some of them near copies."""

    exact: bool
    rows: list[int]
    images: list[str]  # image ids, in row order
    image_labels: list[str | None]  # each image's label as the task kind words it (None: unknown)
    source_splits: list[str] = field(default_factory=list)  # the file's own splits its images lie in

    @property
    def labels(self) -> list[str]:
        """The distinct known labels of its images; two or more is a labelling error."""
        return list(dict.fromkeys(x for x in self.image_labels if x is not None))

    @property
    def conflict(self) -> bool:
        return len(self.labels) > 1


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
    patient_ids: bool = True  # False: the source has none, each image is its own patient
    warnings: list[str] = field(default_factory=list)  # said loudly, before the details
    duplicates: list[DuplicateGroup] | None = None  # None: not looked for
    n_hashed: int = 0  # images hashed for duplicates (those that could be read)


def inspect_dataset(
    ds: ImageDataset,
    sample: int | None = 32,
    duplicates: bool = True,
    cache_dir: str | Path | None = None,
    progress: bool = True,
) -> Inspection:
    """Summarise ``ds``; decode ``sample`` evenly spaced images (all when ``sample`` is None) for sizes and colour
    modes, and, with ``duplicates``, hash every image for exact and near copies (once per dataset, kept beside the
    decoded-image cache: :func:`~medtransfer.data.cache.image_duplicates`).

    Example:
        >>> rep = inspect_dataset(load_dataset("synthetic:hand,n=16"))   # doctest: +SKIP
        >>> rep.n_images, rep.task, rep.duplicates                         # doctest: +SKIP
        (16, 'binary', [])
    """
    rep = Inspection(ds.name, ds.task, len(ds), int(ds.meta["patient_id"].nunique()), ds.channels)
    rep.label_header, rep.label_rows, problems = task_kind(ds.task).label_table(ds.labels, list(ds.label_names))
    rep.problems += problems
    rep.patient_ids = bool((ds.meta["patient_id"].astype(str) != ds.meta["image_id"].astype(str)).any())
    if not rep.patient_ids:
        rep.warnings.append(NO_PATIENT_IDS)
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
    rep.sizes, rep.dtypes = dict(sizes.most_common()), dict(dtypes.most_common())
    if modes:
        rep.colour_modes = dict(modes.most_common())
        rep.conversion = describe_conversions(ds.channels, actions)
    if rep.unreadable:
        rep.problems.append(f"{len(rep.unreadable)} unreadable image(s) among {len(idx)} read (listed above)")
    if len(sizes) > 1:
        rep.problems.append(f"images have {len(sizes)} different sizes; they are resized to data.image_size")
    if duplicates:
        _add_duplicates(rep, ds, image_duplicates(ds, cache_dir, progress))
    return rep


def _add_duplicates(rep: Inspection, ds: ImageDataset, dup: Duplicates) -> None:
    kind = task_kind(ds.task)
    names = list(ds.label_names)
    ids = ds.meta["image_id"].astype(str).to_numpy()
    source = ds.meta["source_split"].astype(str).to_numpy() if "source_split" in ds.meta.columns else None
    known = np.isfinite(ds.labels).any(axis=1) if names else np.zeros(len(ds), bool)
    groups = []

    def label(r: int) -> str | None:
        if not known[r]:
            return None
        if len(names) == 1 and kind.probabilities:  # "pneumonia=1" says more than "pneumonia" / "negative"
            return f"{names[0]}={ds.labels[r, 0]:g}"
        return kind.label_text(names, ds.labels[r])

    for rows in dup.groups():
        labels = [label(r) for r in rows]
        splits = sorted(set(source[rows])) if source is not None else []
        groups.append(DuplicateGroup(dup.is_exact(rows), rows.tolist(), ids[rows].tolist(), labels, splits))
    groups.sort(key=lambda g: (not g.conflict, -len(g.rows), g.rows[0]))  # labelling errors first, then largest
    rep.duplicates = groups
    rep.n_hashed = int(dup.readable.sum())
    if not groups:
        return
    images = sum(len(g.rows) for g in groups)
    rep.problems.append(
        f"{len(groups)} group(s) of duplicate images ({images} images, listed above); `data split` keeps each group "
        "in one split (data.dedupe)"
    )
    conflicts = sum(g.conflict for g in groups)
    if conflicts:
        rep.problems.append(
            f"{conflicts} duplicate group(s) hold different labels: labelling errors; correct or drop those rows"
        )
    across = sum(len(g.source_splits) > 1 for g in groups)
    if across:
        rep.warnings.append(
            f"{across} duplicate group(s) lie in more than one of the file's own train/val/test splits, which a split "
            "that keeps them (use_source_splits) cannot move: their test scores are optimistic"
        )


# --------------------------------------------------------------------------- the words `data inspect` prints
def top(counts: dict[str, int], k: int = TOP_KINDS) -> str:
    """``"a ×5, b ×2, 3 others ×4"``: the ``k`` most common entries and a count of the rest.

    Example:
        >>> top({"uint8": 90, "uint16": 8, "int16": 1, "float32": 1}, 2)
        'uint8 ×90, uint16 ×8, 2 others ×2'
    """
    items = sorted(counts.items(), key=lambda kv: -kv[1])
    shown = ", ".join(f"{name} ×{n}" for name, n in items[:k])
    rest = items[k:]
    return shown + (f", {len(rest)} others ×{sum(n for _, n in rest)}" if rest else "")


def size_lines(sizes: dict[str, int], n_read: int) -> list[str]:
    """Image sizes (``"HxW" → count``) as at most three lines: the one size, or the number of distinct sizes, the
    min / median / max width and height (over images), the range of aspect ratios and the most common sizes.

    Example:
        >>> size_lines({"28x28": 10}, 10)
        ['image size (of 10 read): 28x28 ×10']
    """
    if len(sizes) <= 1:
        return [f"image size (of {n_read} read): " + ", ".join(f"{k} ×{v}" for k, v in sizes.items())]
    hw = np.array([[int(x) for x in k.split("x")] for k in sizes])
    n = np.array(list(sizes.values()))
    h, w = np.repeat(hw[:, 0], n), np.repeat(hw[:, 1], n)
    aspect = hw[:, 1] / hw[:, 0]

    def span(v: np.ndarray) -> str:
        return f"{v.min()} / {np.median(v):g} / {v.max()}"

    return [
        f"image size (of {n_read} read, height x width): {len(sizes)} different sizes",
        f"  width min / median / max {span(w)}, height {span(h)}, aspect (w/h) {aspect.min():.2f} to "
        f"{aspect.max():.2f}",
        f"  most common: {top(sizes, TOP_SIZES)}",
    ]


def duplicate_lines(rep: Inspection, shown: int = GROUPS_SHOWN) -> list[str]:
    """The duplicate groups as lines: a heading with the rule, then up to ``shown`` groups (labelling errors first)."""
    if rep.duplicates is None:
        return []
    groups = rep.duplicates
    if not groups:
        return [f"duplicates: none among {rep.n_hashed} images hashed ({RULE})"]
    exact = sum(g.exact for g in groups)
    out = [
        f"duplicates: {len(groups)} group(s), {sum(len(g.rows) for g in groups)} images: {exact} of exact copies, "
        f"{len(groups) - exact} with near copies ({RULE})"
    ]
    for g in groups[:shown]:
        files = ", ".join(g.images[:FILES_SHOWN]) + (
            f" and {len(g.images) - FILES_SHOWN} more" if len(g.images) > FILES_SHOWN else ""
        )
        what = "exact copies" if g.exact else "near copies"
        if g.conflict:
            label = f"DIFFERENT LABELS {' / '.join(g.labels)}: a labelling error"
        else:
            label = f"label {g.labels[0]}" if g.labels else "no label"
        splits = f"; in the file's splits {' and '.join(g.source_splits)}" if len(g.source_splits) > 1 else ""
        out.append(f"  - {len(g.rows)} {what} ({label}{splits}): {files}")
    if len(groups) > shown:
        out.append(f"  ... and {len(groups) - shown} more group(s): --duplicates FILE lists every one")
    return out


def duplicate_table(rep: Inspection):
    """Every duplicate group as rows of a table for ``--duplicates FILE``: ``group`` (1 = the first listed), ``kind``
    (``exact``: all exact copies; ``near``: some near copies), ``image_id``, ``label``, ``labelling_error``."""
    columns = ["group", "kind", "image_id", "label", "labelling_error"]
    rows = [
        (k + 1, "exact" if g.exact else "near", image, label or "", g.conflict)
        for k, g in enumerate(rep.duplicates or [])
        for image, label in zip(g.images, g.image_labels, strict=True)
    ]
    return pd.DataFrame(rows, columns=columns)
