"""MedMNIST v2 ``.npz`` files (any flag and size): ``{split}_images``, ``{split}_labels`` for train/val/test.

Task kind is read from the label array: one column of 0/1 → binary; one column with more values → multi-class
(one-hot); several 0/1 columns → multi-label (e.g. ``chestmnist``). Label names come from a small table of the
official flags (the ``medmnist`` package's ``INFO``) and fall back to ``class_<k>``.

Online users can fetch the official files with :func:`download_medmnist`; offline, the error names the file to place.
"""

from __future__ import annotations

import re
import urllib.error
import urllib.request
import zipfile
import zlib
from pathlib import Path

import numpy as np

from medtransfer.data.dataset import ArraySource, ImageDataset, default_meta, one_hot
from medtransfer.data.sources.base import DATA_SOURCES, DataSource, SourceOptions
from medtransfer.errors import DataError
from medtransfer.tasks.base import task_kind

SPLITS = ("train", "val", "test")

# Label names of the MedMNIST v2 flags (from medmnist.info.INFO) for the ones users meet most.
LABEL_NAMES: dict[str, tuple[str, ...]] = {
    "pneumoniamnist": ("pneumonia",),
    "breastmnist": ("benign_or_normal",),  # MedMNIST: 0 = malignant, 1 = normal/benign
    "chestmnist": (
        "atelectasis",
        "cardiomegaly",
        "effusion",
        "infiltration",
        "mass",
        "nodule",
        "pneumonia",
        "pneumothorax",
        "consolidation",
        "edema",
        "emphysema",
        "fibrosis",
        "pleural",
        "hernia",
    ),
    "octmnist": ("choroidal_neovascularization", "diabetic_macular_edema", "drusen", "normal"),
    "organamnist": (
        "bladder",
        "femur-left",
        "femur-right",
        "heart",
        "kidney-left",
        "kidney-right",
        "liver",
        "lung-left",
        "lung-right",
        "pancreas",
        "spleen",
    ),
}

# The record that hosts the MedMNIST v2 (+) files; {name} is e.g. pneumoniamnist or pneumoniamnist_224.
DOWNLOAD_URL = "https://zenodo.org/records/10519652/files/{name}.npz?download=1"


def _flag_of(path: Path) -> str:
    """The MedMNIST flag wherever it is in the file name (``pneumoniamnist_test_224.npz``, ``my-breastmnist.npz``
    → ``pneumoniamnist``, ``breastmnist``); a name without ``…mnist`` is used as it is, less a size suffix."""
    name = path.name.split(".")[0]
    found = re.search(r"[a-z0-9]*mnist(?:3d)?", name.lower())
    return found.group(0) if found else re.sub(r"(_\d+)?(_trainval)?$", "", name)


class MedMNIST(DataSource):
    name = "medmnist"
    description = "MedMNIST v2 npz (train/val/test keys)"

    @staticmethod
    def detect(path: Path) -> bool:
        if path.suffix != ".npz" or not path.is_file():
            return False
        try:
            with np.load(path, allow_pickle=False) as z:
                return any(f"{s}_images" in z.files for s in SPLITS)
        except (OSError, ValueError, zipfile.BadZipFile):
            return False

    @staticmethod
    def hint(path: Path) -> str | None:
        if path.suffix != ".npz" or not path.is_file():
            return None
        try:
            with np.load(path, allow_pickle=False) as z:
                keys = z.files
        except (OSError, ValueError, EOFError, zipfile.BadZipFile, zlib.error) as e:
            reason = " ".join(str(e).split()) or type(e).__name__
            return f"cannot read {path} ({reason}); the file is damaged or incomplete: copy or download it again"
        return (
            f"{path} has arrays {keys}; medtransfer reads MedMNIST npz files (train_images, train_labels, val_..., "
            "test_...) and MedNIST npz files (images, labels, class_names)"
        )

    def load(self, path: Path, options: SourceOptions) -> ImageDataset:
        try:
            # the arrays are decompressed on access, so a damaged member only fails inside the `with`
            with np.load(path, allow_pickle=False) as z:
                splits = [s for s in SPLITS if f"{s}_images" in z.files]
                if not splits:
                    raise DataError(f"{path} has no train_images/val_images/test_images arrays (keys: {z.files})")
                images, labels, names = [], [], []
                for s in splits:
                    if f"{s}_labels" not in z.files:
                        raise DataError(f"{path}: '{s}_images' has no matching '{s}_labels' array")
                    im, lb = z[f"{s}_images"], z[f"{s}_labels"]
                    if len(im) == 0:
                        raise DataError(f"{path}: '{s}_images' holds no images; is the file complete?")
                    if len(im) != len(lb):
                        raise DataError(f"{path}: {s} has {len(im)} images but {len(lb)} labels")
                    images.append(im)
                    labels.append(lb.reshape(len(lb), -1))
                    names += [s] * len(im)
        except (OSError, ValueError, EOFError, zipfile.BadZipFile, zlib.error) as e:
            raise DataError(f"cannot read {path}: {e}; is it a complete MedMNIST .npz file?") from None
        image_array = np.concatenate(images)
        if image_array.dtype != np.uint8:
            raise DataError(f"{path}: MedMNIST images must be uint8, got {image_array.dtype}")
        raw = np.concatenate(labels).astype(np.int64)
        flag = _flag_of(path)
        task, y, label_names = _labels(raw, flag, options.task, path)
        meta = default_meta(len(image_array), prefix=f"{flag}-")
        meta["source_split"] = names
        return ImageDataset(
            name=flag,
            images=ArraySource(image_array, name=str(path)),
            labels=y,
            label_names=label_names,
            task=task,
            meta=meta,
            info={"source_splits": {s: names.count(s) for s in splits}},
        )


def _labels(raw: np.ndarray, flag: str, task: str | None, path: Path) -> tuple[str, np.ndarray, tuple[str, ...]]:
    known = LABEL_NAMES.get(flag)
    if raw.shape[1] > 1:  # one 0/1 column per finding
        if not np.isin(raw, (0, 1)).all():
            raise DataError(f"{path}: multi-label columns must hold 0/1")
        names = known if known and len(known) == raw.shape[1] else tuple(f"label_{k}" for k in range(raw.shape[1]))
        return task or "multilabel", raw.astype(np.float32), names
    values = np.unique(raw)
    if values.min() < 0:
        raise DataError(f"{path}: negative class labels {values[values < 0].tolist()}")
    forced = task_kind(task) if task else None
    zero_one = forced is not None and forced.probabilities and not forced.one_hot  # read as 0/1 (binary, multilabel)
    if set(values.tolist()) <= {0, 1} and (forced is None or (zero_one and not forced.several_columns)):
        names = known if known and len(known) == 1 else ("label",)
        return "binary", raw.astype(np.float32), names
    if zero_one:
        raise DataError(f"{path}: labels take {len(values)} values {values.tolist()[:10]}; a {task} task needs 0/1")
    k = int(values.max()) + 1
    names = known if known and len(known) == k else tuple(f"class_{i}" for i in range(k))
    return "multiclass", one_hot(raw[:, 0], k), names


def download_medmnist(flag: str, root: str | Path, size: int = 28) -> Path:
    """Fetch the official ``{flag}[_{size}].npz`` into ``root`` (needs internet; a clear error otherwise)."""
    name = flag if size == 28 else f"{flag}_{size}"
    target = Path(root) / f"{name}.npz"
    if target.exists():
        return target
    url = DOWNLOAD_URL.format(name=name)
    tmp = target.with_suffix(".part")
    target.parent.mkdir(parents=True, exist_ok=True)
    try:
        urllib.request.urlretrieve(url, tmp)  # noqa: S310 (fixed https URL)
    except (urllib.error.URLError, OSError) as e:
        tmp.unlink(missing_ok=True)
        raise DataError(
            f"cannot download {url} ({e}); offline, place {name}.npz from the MedMNIST release into {target.parent}"
        ) from None
    tmp.rename(target)
    return target


DATA_SOURCES.register("medmnist", MedMNIST)
