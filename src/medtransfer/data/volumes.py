"""3D segmentation data: datasets of NIfTI volumes with partial labels, validated reading, patches, inference.

A :class:`SegDataset` lists :class:`Case` s (paths only; nothing is decoded until :func:`read_case`). Each case
says which foreground classes its label file annotates: in a partially annotated volume, voxels of the other
classes are labelled 0 although they may not be background (see :mod:`medtransfer.segmentation.losses`).

Conventions of :func:`read_case`:

* Axes: the file's voxel axes ``(i, j, k)`` become ``(D, H, W)`` with no reorientation; the affine is kept so
  predictions can be written back in the same grid. Image and label share the grid (checked).
* Labels: integers ``0..K-1``. Voxels of classes that the case does not annotate are set to 0 on reading, so a
  sparsely annotated source can be simulated from a fully annotated set by editing ``annotated`` alone
  (:meth:`SegDataset.with_annotated`).
* Intensities, per channel by the channel's modality: ``CT`` is clipped to a window (default [-1000, 1000] HU)
  and scaled to [0, 1]; every other modality (MRI sequences, ...) is z-scored with the mean and standard
  deviation of its nonzero voxels (the zero background of skull-stripped or cropped MRI would bias them), the
  transform being applied to every voxel.
* Resampling (optional, ``spacing=`` in mm): MONAI ``Spacing`` on the affine, trilinear for images, nearest for
  labels, after intensity normalisation.

Every problem with the input raises a one-line :class:`~medtransfer.errors.DataError` naming the case.

Example:
    >>> ds = load_msd("../shared/data/msd_hippocampus")                      # doctest: +SKIP
    >>> vol = read_case(ds, ds.cases[0])                                     # doctest: +SKIP
    >>> vol.image.shape, vol.label.shape, vol.spacing, vol.annotated         # doctest: +SKIP
    ((1, 35, 51, 35), (35, 51, 35), (1.0, 1.0, 1.0), (0, 1, 2))
"""

from __future__ import annotations

import csv
import hashlib
import json
import logging
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from medtransfer.errors import DataError
from medtransfer.registry import suggest

if TYPE_CHECKING:
    import nibabel
    import torch
    from torch import nn

log = logging.getLogger(__name__)

BACKGROUND = "background"
CT_WINDOW = (-1000.0, 1000.0)
# Image and label affines may differ by this much (mm, per entry) and still count as the same grid: float32
# headers written by different tools round positions of a few hundred mm at ~1e-5 mm.
AFFINE_ATOL_MM = 1e-3
NIFTI_SUFFIXES = (".nii.gz", ".nii")
ANNOTATED_CSV = "annotated.csv"


# --------------------------------------------------------------------------- dataset description
@dataclass(frozen=True)
class Case:
    """One volume: its id, file paths, and the foreground class names its label annotates."""

    id: str
    image: Path
    label: Path | None
    annotated: tuple[str, ...]


@dataclass(frozen=True)
class SegDataset:
    """A segmentation dataset: class names (``background`` at index 0), modality, cases, and its folder.

    ``channels`` holds the modality of each image channel (MSD ``modality``); ``modality`` is their common
    value, or ``"multi"`` when they differ.

    Example:
        >>> ds = load_msd("../shared/data/msd_hippocampus")        # doctest: +SKIP
        >>> ds.class_names, ds.modality, len(ds)                    # doctest: +SKIP
        (['background', 'Anterior', 'Posterior'], 'MRI', 200)
    """

    name: str
    class_names: list[str]
    modality: str
    cases: list[Case]
    root: Path
    channels: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        if not self.channels:
            object.__setattr__(self, "channels", (self.modality,))

    @property
    def n_classes(self) -> int:
        """Number of classes, background included."""
        return len(self.class_names)

    @property
    def meta(self):
        """One row per case (``image_id`` = ``patient_id`` = the case id), as split files are aligned to it."""
        ids = [c.id for c in self.cases]
        return pd.DataFrame({"image_id": ids, "patient_id": ids})

    @property
    def content(self) -> str:
        """The cases' image file names and sizes (what a split file records about its dataset)."""
        h = hashlib.sha1()
        for c in self.cases:
            size = c.image.stat().st_size if c.image.is_file() else -1
            h.update(f"{c.id}\0{c.image.name}\0{size}\0".encode())
        return f"volumes:{len(self.cases)}:{h.hexdigest()[:16]}"

    @property
    def in_channels(self) -> int:
        return len(self.channels)

    def __len__(self) -> int:
        return len(self.cases)

    def case(self, case_id: str) -> Case:
        """The case with id ``case_id``; an unknown id raises :class:`DataError` with close matches."""
        for c in self.cases:
            if c.id == case_id:
                return c
        close = suggest(case_id, [c.id for c in self.cases])
        raise DataError(
            f"dataset '{self.name}' has no case '{case_id}'" + (f"; did you mean {close}?" if close else "")
        )

    def subset(self, case_ids: Sequence[str]) -> SegDataset:
        """A new dataset with the cases ``case_ids``, in that order."""
        return replace(self, cases=[self.case(i) for i in case_ids])

    def with_annotated(self, annotated: Mapping[str, Sequence[str]]) -> SegDataset:
        """A new dataset in which the cases named in ``annotated`` annotate only the given classes.

        Example:
            >>> sparse = ds.with_annotated({"hippocampus_001": ["Anterior"]})     # doctest: +SKIP
        """
        new = {
            cid: _annotated_names(names, self.class_names, cid, "with_annotated") for cid, names in annotated.items()
        }
        for cid in new:
            self.case(cid)
        return replace(self, cases=[replace(c, annotated=new.get(c.id, c.annotated)) for c in self.cases])


def _class_names(labels: Any, where: str) -> list[str]:
    """Class names by index from an MSD ``{"0": "background", ...}`` (or nnU-Net v2 ``{"name": index}``) map."""
    if not isinstance(labels, dict) or not labels:
        raise DataError(f'{where}: \'labels\' must be a non-empty mapping like {{"0": "background", "1": ...}}')
    if all(str(k).strip().isdigit() for k in labels):
        by_index = {int(k): str(v) for k, v in labels.items()}
    elif all(isinstance(v, int) for v in labels.values()):
        by_index = {int(v): str(k) for k, v in labels.items()}
    else:
        raise DataError(f"{where}: 'labels' must map indices to names, got {labels}")
    if sorted(by_index) != list(range(len(by_index))):
        raise DataError(f"{where}: label indices must be 0..K-1, got {sorted(by_index)}")
    names = [by_index[i] for i in range(len(by_index))]
    if len(set(names)) != len(names):
        raise DataError(f"{where}: class names repeat: {names}")
    if names[0] != BACKGROUND:
        # Head transfer matches classes by name, so index 0 carries the same name in every dataset.
        log.info("%s: class 0 '%s' is named '%s'", where, names[0], BACKGROUND)
        names[0] = BACKGROUND
    return names


def _annotated_names(names: Sequence[str], class_names: Sequence[str], case_id: str, where: str) -> tuple[str, ...]:
    """Validated foreground class names, in class order (``background`` may be listed; it is implied)."""
    foreground = list(class_names[1:])
    chosen = set()
    for raw in names:
        name = str(raw).strip()
        if name in ("", BACKGROUND):
            continue
        if name not in foreground:
            close = suggest(name, foreground)
            hint = f" did you mean {close}?" if close else ""
            raise DataError(
                f"case '{case_id}': unknown class '{name}' in annotated ({where});{hint} classes: {foreground}"
            )
        chosen.add(name)
    return tuple(n for n in foreground if n in chosen)


def _read_annotated_csv(path: Path, class_names: Sequence[str], case_ids: Sequence[str]) -> dict[str, tuple[str, ...]]:
    """``case,annotated`` rows (names separated by ``;``) → case id → annotated class names."""
    with path.open(newline="") as f:
        reader = csv.DictReader(f)
        if not reader.fieldnames or not {"case", "annotated"} <= set(reader.fieldnames):
            raise DataError(f"{path}: needs the columns 'case,annotated', got {reader.fieldnames}")
        known = set(case_ids)
        out: dict[str, tuple[str, ...]] = {}
        for row in reader:
            cid = (row["case"] or "").strip()
            if cid not in known:
                close = suggest(cid, list(case_ids))
                hint = f"; did you mean {close}?" if close else ""
                raise DataError(f"case '{cid}' in {path} is not in the dataset{hint}")
            if cid in out:
                raise DataError(f"case '{cid}' appears twice in {path}")
            out[cid] = _annotated_names((row["annotated"] or "").split(";"), class_names, cid, path.name)
    return out


def _case_id(path: Path) -> str:
    name = path.name
    for suffix in NIFTI_SUFFIXES:
        if name.endswith(suffix):
            return name[: -len(suffix)]
    return path.stem


def _resolve_annotation(
    cases: list[tuple[str, Path, Path | None, tuple[str, ...] | None]], root: Path, class_names: list[str]
) -> list[Case]:
    """Cases with their annotated classes: from the JSON entry, ``annotated.csv``, or all classes."""
    ids = [cid for cid, *_ in cases]
    dup = sorted(i for i, n in Counter(ids).items() if n > 1)
    if dup:
        raise DataError(f"case '{dup[0]}' appears more than once in {root}")
    csv_path = root / ANNOTATED_CSV
    from_csv = _read_annotated_csv(csv_path, class_names, ids) if csv_path.is_file() else {}
    out = []
    for cid, image, label, from_json in cases:
        if from_json is not None and cid in from_csv and from_json != from_csv[cid]:
            raise DataError(
                f"case '{cid}': annotated is {list(from_json)} in dataset.json but {list(from_csv[cid])} in {csv_path}"
            )
        annotated = from_csv.get(cid, from_json if from_json is not None else tuple(class_names[1:]))
        for kind, path in (("image", image), ("label", label)):
            if path is not None and not path.is_file():
                raise DataError(f"case '{cid}': {kind} file not found: {path}")
        out.append(Case(cid, image, label, annotated))
    return out


def load_msd(path: str | Path) -> SegDataset:
    """An MSD folder: ``dataset.json`` (``labels``, ``modality``, ``training: [{image, label}]``), ``imagesTr/``,
    ``labelsTr/``. Only the ``training`` cases are listed (MSD test images have no labels).

    Partial labels: a training entry may carry ``"annotated": ["Anterior"]``, or ``annotated.csv`` next to
    ``dataset.json`` may list ``case,annotated`` with names separated by ``;``; both may be given if they
    agree. Cases named in neither annotate every class. Files are checked to exist; none is decoded.

    Example:
        >>> ds = load_msd("../shared/data/msd_hippocampus")       # doctest: +SKIP
        >>> ds.cases[0]                                             # doctest: +SKIP
        Case(id='hippocampus_001', image=PosixPath('.../imagesTr/hippocampus_001.nii.gz'), ...,
             annotated=('Anterior', 'Posterior'))
    """
    root = Path(path)
    root = root.parent if root.name == "dataset.json" else root
    meta_path = root / "dataset.json"
    if not meta_path.is_file():
        raise DataError(f"no dataset.json in {root}: an MSD folder holds dataset.json, imagesTr/ and labelsTr/")
    try:
        meta = json.loads(meta_path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise DataError(f"{meta_path} is not valid JSON: {e}") from None
    class_names = _class_names(meta.get("labels"), str(meta_path))
    channels = _channels(meta.get("modality", meta.get("channel_names")), str(meta_path))
    training = meta.get("training")
    if not isinstance(training, list) or not training:
        raise DataError(f"{meta_path}: 'training' must be a non-empty list of {{image, label}} entries")
    raw = []
    for i, entry in enumerate(training):
        if not isinstance(entry, dict) or "image" not in entry:
            raise DataError(f"{meta_path}: training entry {i} must be an object with 'image' (and 'label')")
        image = root / str(entry["image"]).removeprefix("./")
        label = root / str(entry["label"]).removeprefix("./") if entry.get("label") else None
        cid = _case_id(image)
        ann = entry.get("annotated")
        raw.append(
            (cid, image, label, None if ann is None else _annotated_names(ann, class_names, cid, "dataset.json"))
        )
    name = str(meta.get("name") or root.name)
    return SegDataset(name, class_names, _common(channels), _resolve_annotation(raw, root, class_names), root, channels)


def load_nifti_folder(path: str | Path, modality: str = "other", name: str | None = None) -> SegDataset:
    """A folder with ``images/*.nii.gz`` and ``labels/*.nii.gz`` of the same file names.

    Optional files: ``classes.json`` (``{"0": "background", "1": "liver"}``) and ``annotated.csv`` (as in
    :func:`load_msd`). Without ``classes.json`` the classes are ``background, class1..classK`` with K the
    largest value in the first case's label (the one file read here). Without ``labels/`` every case is
    unlabelled (``label=None``); with it, every image needs its label.

    Example:
        >>> ds = load_nifti_folder("my_ct_scans", modality="CT")    # doctest: +SKIP
    """
    root = Path(path)
    images = sorted(p for suffix in NIFTI_SUFFIXES for p in (root / "images").glob(f"*{suffix}"))
    if not images:
        raise DataError(f"no NIfTI files in {root / 'images'}: put images/<case>.nii.gz (and labels/<case>.nii.gz)")
    label_dir = root / "labels"
    raw = []
    for image in images:
        label = label_dir / image.name if label_dir.is_dir() else None
        if label is not None and not label.is_file():
            raise DataError(f"case '{_case_id(image)}': label file not found: {label} (same file name as the image)")
        raw.append((_case_id(image), image, label, None))
    if label_dir.is_dir():
        extra = sorted({p.name for p in label_dir.iterdir()} - {p.name for p in images})
        extra = [e for e in extra if e.endswith(NIFTI_SUFFIXES)]
        if extra:
            raise DataError(
                f"case '{_case_id(Path(extra[0]))}': label {label_dir / extra[0]} has no image in {root / 'images'}"
            )
    classes_path = root / "classes.json"
    if classes_path.is_file():
        try:
            class_names = _class_names(json.loads(classes_path.read_text()), str(classes_path))
        except json.JSONDecodeError as e:
            raise DataError(f"{classes_path} is not valid JSON: {e}") from None
    elif raw[0][2] is not None:
        k = int(np.max(_read_label_array(_load_nifti(raw[0][2], raw[0][0], "label"), raw[0][0], raw[0][2])))
        class_names = [BACKGROUND] + [f"class{i}" for i in range(1, k + 1)]
    else:
        class_names = [BACKGROUND]
    cases = _resolve_annotation(raw, root, class_names)
    return SegDataset(name or root.name, class_names, modality, cases, root, (modality,))


def _channels(modality: Any, where: str) -> tuple[str, ...]:
    if not isinstance(modality, dict) or not modality:
        raise DataError(f'{where}: \'modality\' must be a mapping like {{"0": "CT"}}')
    try:
        by_index = {int(k): str(v) for k, v in modality.items()}
    except ValueError:
        raise DataError(f"{where}: 'modality' keys must be channel indices, got {list(modality)}") from None
    return tuple("MRI" if by_index[i].upper() in ("MR", "MRI") else by_index[i] for i in sorted(by_index))


def _common(channels: Sequence[str]) -> str:
    return channels[0] if len(set(channels)) == 1 else "multi"


# --------------------------------------------------------------------------- reading volumes
@dataclass(frozen=True, eq=False)
class Volume:
    """A decoded case: ``image`` float32 ``(C, D, H, W)``, ``label`` int64 ``(D, H, W)`` or None, voxel
    ``spacing`` in mm, ``annotated`` class indices (always with 0), and the 4×4 voxel-to-world ``affine``."""

    id: str
    image: np.ndarray
    label: np.ndarray | None
    spacing: tuple[float, float, float]
    annotated: tuple[int, ...]
    affine: np.ndarray

    @property
    def shape(self) -> tuple[int, int, int]:
        """Spatial shape ``(D, H, W)``."""
        return tuple(self.image.shape[1:])


def _load_nifti(path: Path, case_id: str, kind: str) -> nibabel.Nifti1Image:
    import nibabel as nib  # deferred: ~0.7 s; every dataset lookup imports this module, cases list without it

    try:
        return nib.load(str(path))
    except FileNotFoundError:
        raise DataError(f"case '{case_id}': {kind} file not found: {path}") from None
    except Exception as e:  # nibabel raises ImageFileError, OSError, EOFError, gzip/zlib errors ...
        raise DataError(f"case '{case_id}': cannot read {kind} file {path}: {type(e).__name__}: {e}") from None


def _array(img: nibabel.Nifti1Image, case_id: str, kind: str, path: Path) -> np.ndarray:
    try:
        return np.asarray(img.dataobj)  # decoding happens here: a truncated .gz fails now, not later
    except Exception as e:
        raise DataError(f"case '{case_id}': cannot read {kind} file {path}: {type(e).__name__}: {e}") from None


def _read_label_array(img: nibabel.Nifti1Image, case_id: str, path: Path) -> np.ndarray:
    lab = _array(img, case_id, "label", path)
    if lab.ndim == 4 and lab.shape[-1] == 1:
        lab = lab[..., 0]
    if lab.ndim != 3:
        raise DataError(f"case '{case_id}': label must be 3-D, got shape {lab.shape} in {path}")
    if not np.issubdtype(lab.dtype, np.integer):
        if not np.isfinite(lab).all() or not np.array_equal(lab, np.round(lab)):
            raise DataError(f"case '{case_id}': label has non-integer values in {path}")
    return lab


def _spacing_of(affine: np.ndarray) -> tuple[float, float, float]:
    return tuple(float(s) for s in np.sqrt((np.asarray(affine)[:3, :3] ** 2).sum(axis=0)))


def normalize_intensity(
    image: np.ndarray, channels: Sequence[str], ct_window: tuple[float, float] = CT_WINDOW
) -> np.ndarray:
    """Per channel: ``CT`` → clip to ``ct_window`` (HU) and scale to [0, 1]; others → z-score from nonzero voxels.

    Example:
        >>> normalize_intensity(np.array([[[[-2000.0, 0.0, 500.0]]]]), ["CT"]).ravel().tolist()
        [0.0, 0.5, 0.75]
    """
    lo, hi = (float(v) for v in ct_window)
    if not hi > lo:
        raise ValueError(f"ct_window must be (low, high) with low < high, got {ct_window}")
    out = np.empty(image.shape, dtype=np.float32)
    for c, kind in enumerate(channels):
        x = image[c].astype(np.float32, copy=False)
        if kind.upper() == "CT":
            out[c] = (np.clip(x, lo, hi) - lo) / (hi - lo)
            continue
        values = x[x != 0]
        values = values if values.size > 1 else x.ravel()
        std = float(values.std())
        out[c] = (x - float(values.mean())) / (std if std > 1e-8 else 1.0)
    return out


def read_case(
    ds: SegDataset,
    case: Case | str,
    spacing: Sequence[float] | None = None,
    *,
    ct_window: tuple[float, float] = CT_WINDOW,
) -> Volume:
    """Decode, validate and normalise one case; optionally resample it to ``spacing`` (mm).

    Raises :class:`DataError` naming the case for: an unreadable file, an image that is not 3-D (or 4-D with
    channels last), a channel count that differs from the dataset's, non-finite image values, image/label
    shape mismatch, image/label affine mismatch (more than ``AFFINE_ATOL_MM`` per entry), label values that are
    not integers in ``0..K-1``, and a label with no voxel of any annotated foreground class.

    Example:
        >>> vol = read_case(ds, "hippocampus_001", spacing=(1.0, 1.0, 1.0))   # doctest: +SKIP
        >>> vol.image.dtype, vol.label.dtype                                  # doctest: +SKIP
        (dtype('float32'), dtype('int64'))
    """
    if spacing is not None:
        spacing = tuple(float(v) for v in spacing)
        if len(spacing) != 3 or min(spacing) <= 0:
            raise ValueError(f"spacing must be three positive numbers (mm), got {spacing}")
    case = ds.case(case) if isinstance(case, str) else case
    img = _load_nifti(case.image, case.id, "image")
    data = _array(img, case.id, "image", case.image)
    if data.ndim == 3:
        image = data[None]
    elif data.ndim == 4:
        image = np.moveaxis(data, -1, 0)  # MSD stores multi-channel volumes channels-last
    else:
        raise DataError(
            f"case '{case.id}': image must be 3-D (or 4-D, channels last), got shape {data.shape} in {case.image}"
        )
    if image.shape[0] != ds.in_channels:
        raise DataError(
            f"case '{case.id}': image has {image.shape[0]} channels, the dataset declares {list(ds.channels)}"
        )
    image = image.astype(np.float32, copy=False)
    if not np.isfinite(image).all():
        raise DataError(f"case '{case.id}': image has NaN or infinite voxels in {case.image}")
    affine = np.asarray(img.affine, dtype=np.float64)
    annotated = (0, *(ds.class_names.index(n) for n in case.annotated))
    label = None if case.label is None else _read_label(ds, case, image.shape[1:], affine, annotated)
    image = normalize_intensity(image, ds.channels, ct_window)
    if spacing is not None and not np.allclose(_spacing_of(affine), spacing):
        image, label, affine = _resample(image, label, affine, spacing)
    return Volume(case.id, image, label, _spacing_of(affine), annotated, affine)


def _read_label(
    ds: SegDataset, case: Case, shape: tuple[int, ...], affine: np.ndarray, annotated: tuple[int, ...]
) -> np.ndarray:
    img = _load_nifti(case.label, case.id, "label")
    lab = _read_label_array(img, case.id, case.label)
    if lab.shape != shape:
        raise DataError(f"case '{case.id}': image shape {shape} and label shape {lab.shape} differ ({case.label})")
    diff = float(np.abs(np.asarray(img.affine) - affine).max())
    if diff > AFFINE_ATOL_MM:
        raise DataError(
            f"case '{case.id}': image and label affines differ by {diff:.3g} mm (> {AFFINE_ATOL_MM}) in {case.label}"
        )
    lo, hi = lab.min(), lab.max()
    if lo < 0 or hi >= ds.n_classes:
        bad = np.unique(lab[(lab < 0) | (lab >= ds.n_classes)])[:5].tolist()
        raise DataError(
            f"case '{case.id}': label values {bad} outside the classes 0..{ds.n_classes - 1} in {case.label}"
        )
    lab = lab.astype(np.int64)
    counts = np.bincount(lab.ravel(), minlength=ds.n_classes)
    if counts[list(annotated[1:])].sum() == 0:
        raise DataError(
            f"case '{case.id}': the label has no voxel of any annotated class {list(case.annotated)} in {case.label}"
        )
    unannotated = [k for k in range(1, ds.n_classes) if k not in annotated and counts[k]]
    if unannotated:
        lut = np.arange(ds.n_classes)
        lut[unannotated] = 0
        lab = lut[lab]
    return lab


def _resample(
    image: np.ndarray, label: np.ndarray | None, affine: np.ndarray, spacing: tuple[float, float, float]
) -> tuple[np.ndarray, np.ndarray | None, np.ndarray]:
    # deferred: torch and monai take seconds to import; this module is imported on every dataset lookup
    import torch
    from monai.data import MetaTensor
    from monai.transforms import Spacing

    aff = torch.as_tensor(affine, dtype=torch.float64)
    out = Spacing(pixdim=spacing, mode="bilinear")(
        MetaTensor(torch.from_numpy(np.ascontiguousarray(image)), affine=aff)
    )
    new_affine = out.affine.numpy().astype(np.float64)
    new_image = out.as_tensor().numpy().astype(np.float32)
    if label is not None:
        lab = MetaTensor(torch.from_numpy(label[None].astype(np.float32)), affine=aff)
        label = Spacing(pixdim=spacing, mode="nearest")(lab).as_tensor().numpy()[0].round().astype(np.int64)
    return new_image, label, new_affine


# --------------------------------------------------------------------------- patches and inference
def _pad_to(array: np.ndarray, shape: Sequence[int], value: float) -> np.ndarray:
    """Pad the last three axes symmetrically to at least ``shape``."""
    extra = [max(0, int(p) - s) for p, s in zip(shape, array.shape[-3:], strict=True)]
    if not any(extra):
        return array
    widths = [(0, 0)] * (array.ndim - 3) + [(e // 2, e - e // 2) for e in extra]
    return np.pad(array, widths, constant_values=value)


def foreground_patches(
    volume: Volume, patch_size: Sequence[int], n: int, fg_fraction: float, rng: np.random.Generator
) -> list[tuple[np.ndarray, np.ndarray]]:
    """``n`` random ``(image (C, *patch), label (*patch))`` patches, foreground-balanced.

    Each patch is, with probability ``fg_fraction``, centred on a random voxel of an annotated foreground class
    (shifted to stay inside the volume), else placed uniformly. Volumes smaller than the patch are padded
    symmetrically with 0 (image, after normalisation, as nnU-Net does; label: background).

    Why not MONAI ``RandCropByPosNegLabel``: its negative centres are drawn from background voxels only (here
    they are uniform), it needs a separate padding transform, and it takes a ``RandomState``; a numpy
    ``Generator`` passed in keeps the draws explicit and reproducible.

    Example:
        >>> rng = np.random.default_rng(0)
        >>> patches = foreground_patches(vol, (32, 48, 32), n=4, fg_fraction=0.5, rng=rng)  # doctest: +SKIP
        >>> patches[0][0].shape, patches[0][1].shape                                         # doctest: +SKIP
        ((1, 32, 48, 32), (32, 48, 32))
    """
    if volume.label is None:
        raise ValueError(f"case '{volume.id}' has no label to sample patches from")
    patch = np.array([int(p) for p in patch_size])
    if patch.shape != (3,) or (patch < 1).any():
        raise ValueError(f"patch_size must be three positive ints, got {patch_size}")
    if not 0.0 <= fg_fraction <= 1.0:
        raise ValueError(f"fg_fraction must be in [0, 1], got {fg_fraction}")
    image, label = _pad_to(volume.image, patch, 0.0), _pad_to(volume.label, patch, 0)
    shape = np.array(label.shape)
    foreground = np.flatnonzero(label)  # unannotated classes were set to 0 by read_case
    out = []
    for _ in range(n):
        if rng.random() < fg_fraction and foreground.size:
            centre = np.array(np.unravel_index(foreground[rng.integers(foreground.size)], label.shape))
            start = np.clip(centre - patch // 2, 0, shape - patch)
        else:
            start = np.array([rng.integers(0, s - p + 1) for s, p in zip(shape, patch, strict=True)])
        box = tuple(slice(int(s), int(s + p)) for s, p in zip(start, patch, strict=True))
        out.append((image[(slice(None), *box)].copy(), label[box].copy()))
    return out


def sliding_window_predict(
    model: nn.Module,
    image: torch.Tensor | np.ndarray,
    patch_size: Sequence[int],
    overlap: float = 0.5,
    sw_batch_size: int = 4,
    *,
    softmax: bool = True,
) -> torch.Tensor:
    """Class probabilities ``(K, D, H, W)`` for one ``(C, D, H, W)`` image, by MONAI ``sliding_window_inference``.

    Windows overlap by ``overlap`` and are blended with Gaussian weights (centres count more than borders);
    the softmax is taken per window before blending, so the result sums to 1 over classes
    (``softmax=False`` blends the raw outputs). The image is padded with 0 where it is smaller than a window
    and cropped back, so the output has the input's spatial shape. Runs on the model's device, without
    gradients and in eval mode (the model's previous mode is restored).

    Example:
        >>> probs = sliding_window_predict(model, torch.from_numpy(vol.image), (32, 48, 32))   # doctest: +SKIP
        >>> probs.shape[1:] == vol.image.shape[1:]                                            # doctest: +SKIP
        True
    """
    import torch  # deferred: torch and monai are heavy; see _resample
    from monai.inferers import sliding_window_inference

    x = torch.as_tensor(image, dtype=torch.float32)
    if x.ndim != 4:
        raise ValueError(f"image must be (C, D, H, W), got shape {tuple(x.shape)}")
    param = next(model.parameters(), None)
    x = x[None].to(param.device if param is not None else x.device)

    def predict(batch: torch.Tensor) -> torch.Tensor:
        out = model(batch)
        return torch.softmax(out, dim=1) if softmax else out

    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            out = sliding_window_inference(
                x, [int(p) for p in patch_size], sw_batch_size, predict, overlap=overlap, mode="gaussian"
            )
    finally:
        model.train(was_training)
    return torch.as_tensor(out)[0]
