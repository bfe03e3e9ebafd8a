"""The MedNIST ``.npz`` (keys ``images (N,64,64)``, ``labels (N,)``, ``class_names``, ``files``).

Six modalities/sites: AbdomenCT, BreastMRI, CXR, ChestCT, Hand, HeadCT. ``classes`` keeps only the named
classes (e.g. ``['CXR']`` for a same-site chest X-ray archive); a single kept class gives an unlabelled set
(labels (N, 0)) meant for self-supervised pretraining.
"""

from __future__ import annotations

import zipfile
import zlib
from pathlib import Path

import numpy as np

from medtransfer.data.dataset import ArraySource, ImageDataset, default_meta, one_hot
from medtransfer.data.sources.base import DATA_SOURCES, DataSource, SourceOptions
from medtransfer.errors import DataError
from medtransfer.registry import suggest

KEYS = ("images", "labels", "class_names")


class MedNIST(DataSource):
    name = "mednist"
    description = "MedNIST npz (images, labels, class_names)"

    @staticmethod
    def detect(path: Path) -> bool:
        if path.suffix != ".npz" or not path.is_file():
            return False
        try:
            with np.load(path, allow_pickle=False) as z:
                return all(k in z.files for k in KEYS)
        except (OSError, ValueError, zipfile.BadZipFile):
            return False

    def load(self, path: Path, options: SourceOptions) -> ImageDataset:
        try:
            with np.load(path, allow_pickle=False) as z:
                missing = [k for k in KEYS if k not in z.files]
                if missing:
                    raise DataError(f"{path}: not a MedNIST npz (missing {missing}; keys: {z.files})")
                images, codes = z["images"], z["labels"].astype(np.int64).reshape(-1)
                class_names = [str(c) for c in z["class_names"]]
                files = [str(f) for f in z["files"]] if "files" in z.files else None
        except (OSError, ValueError, EOFError, zipfile.BadZipFile, zlib.error) as e:
            raise DataError(f"cannot read {path}: {e}") from None
        if len(images) != len(codes):
            raise DataError(f"{path}: {len(images)} images but {len(codes)} labels")
        keep_names = list(options.classes) if options.classes else class_names
        for c in keep_names:
            if c not in class_names:
                close = suggest(c, class_names)
                raise DataError(
                    f"MedNIST has no class '{c}'"
                    + (f"; did you mean {close}?" if close else "")
                    + f" classes: {class_names}"
                )
        keep_codes = [class_names.index(c) for c in keep_names]
        idx = np.flatnonzero(np.isin(codes, keep_codes))
        remap = np.full(len(class_names), -1)
        remap[keep_codes] = np.arange(len(keep_codes))
        new_codes = remap[codes[idx]]
        ids = [Path(files[i]).stem for i in idx] if files else None
        meta = default_meta(len(idx), prefix="mednist-")
        if ids is not None:
            meta["image_id"] = [f"{keep_names[c]}/{i}" for c, i in zip(new_codes, ids, strict=True)]
            meta["patient_id"] = meta["image_id"]  # MedNIST has no patient ids
        meta["class"] = [keep_names[c] for c in new_codes]
        if len(keep_names) == 1:
            labels, names, task = np.zeros((len(idx), 0), np.float32), (), "unlabelled"
        else:
            labels, names, task = one_hot(new_codes, len(keep_names)), tuple(keep_names), "multiclass"
        # Only the kept images are materialised: a class filter of one class holds ~10k of 59k images.
        array = images[idx] if len(idx) != len(images) else images
        tag = "+".join(keep_names) if options.classes else "all"
        return ImageDataset(f"mednist[{tag}]", ArraySource(array, f"{path}[{tag}]"), labels, names, task, meta)


DATA_SOURCES.register("mednist", MedNIST)
