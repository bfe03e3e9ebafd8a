"""NIH ChestX-ray14: the ``Data_Entry_2017*.csv`` file (112,120 frontal chest X-rays, 14 findings).

The dataset is built from the CSV alone, so it can be inspected and split before (or without) the 42 GB of
images. Images are found by one pass over the CSV's folder and its subfolders (NIH ships
``images_001/images/*.png`` ...); how many are there goes into ``info``, and loading one that is missing
raises a :class:`DataError` that says where it was looked for.
"""

from __future__ import annotations

import fnmatch
import logging
import os
from pathlib import Path

import numpy as np
import pandas as pd

from medtransfer.data.dataset import FileSource, ImageDataset
from medtransfer.data.readers import read_image
from medtransfer.data.sources.base import DATA_SOURCES, DataSource, SourceOptions
from medtransfer.errors import DataError
from medtransfer.tasks.base import task_kind

log = logging.getLogger(__name__)

FINDINGS: tuple[str, ...] = (
    "Atelectasis",
    "Cardiomegaly",
    "Effusion",
    "Infiltration",
    "Mass",
    "Nodule",
    "Pneumonia",
    "Pneumothorax",
    "Consolidation",
    "Edema",
    "Emphysema",
    "Fibrosis",
    "Pleural_Thickening",
    "Hernia",
)
NO_FINDING = "No Finding"
CSV_PATTERN = "Data_Entry_2017*.csv*"
IMAGE_COL, FINDINGS_COL, PATIENT_COL = "Image Index", "Finding Labels", "Patient ID"
# Other CSV columns worth keeping, under names that are easy to type.
META_COLUMNS = {
    "Follow-up #": "follow_up",
    "Patient Age": "age",
    "Patient Gender": "sex",
    "View Position": "view",
}


def is_data_entry_file(path: Path) -> bool:
    """Whether ``path``'s name looks like NIH's ``Data_Entry_2017*.csv`` (or ``.csv.gz``)."""
    name = path.name
    return fnmatch.fnmatch(name, CSV_PATTERN) and name.endswith((".csv", ".csv.gz"))


def _find_csv(path: Path) -> Path:
    if path.is_file():
        return path
    hits = sorted(p for p in path.iterdir() if p.is_file() and is_data_entry_file(p))
    if not hits:
        raise DataError(f"no Data_Entry_2017*.csv file in {path}; pass the path of NIH's Data_Entry CSV")
    if len(hits) > 1:
        raise DataError(f"several NIH CSV files in {path}: {[p.name for p in hits]}; pass the path of one")
    return hits[0]


def index_png_files(root: Path) -> dict[str, Path]:
    """``{file name: path}`` of every ``.png`` under ``root`` in one pass (symlinks followed once)."""
    found: dict[str, Path] = {}
    seen: set[tuple[int, int]] = set()
    stack = [str(root)]
    while stack:
        folder = stack.pop()
        try:
            st = os.stat(folder)
            if (st.st_dev, st.st_ino) in seen:  # a symlink loop or a folder linked twice
                continue
            seen.add((st.st_dev, st.st_ino))
            entries = list(os.scandir(folder))
        except OSError as e:
            log.warning("skipping unreadable folder %s: %s", folder, e)
            continue
        for entry in entries:
            if entry.name.lower().endswith(".png"):
                found.setdefault(entry.name, Path(entry.path))
            elif entry.is_dir():
                stack.append(entry.path)
    return found


class MissingAwareReader:
    """``read_image`` that explains a missing NIH image (where it was looked for, how many are missing).

    NIH stores a handful of images as RGBA although they are grey; those are reduced to one channel so
    every image has the dataset's one channel. A plain class (not a closure) so DataLoader workers can
    pickle it.
    """

    def __init__(self, image_root: Path, n_missing: int, n_total: int) -> None:
        self.image_root = image_root
        self.n_missing = n_missing
        self.n_total = n_total

    def __call__(self, path: Path) -> np.ndarray:
        if not os.path.exists(path):
            raise DataError(
                f"image {Path(path).name} not found under {self.image_root} "
                f"({self.n_missing} of {self.n_total} images in the CSV are missing); "
                "extract NIH's images_*.tar.gz archives there"
            )
        img = read_image(Path(path))
        if img.shape[0] > 1:
            img = img.mean(axis=0, keepdims=True).astype(img.dtype)
        return img


@DATA_SOURCES.register("nih_cxr14")
class NIHChestXray14(DataSource):
    """NIH ChestX-ray14 from its ``Data_Entry_2017*.csv`` (14 findings, multi-label, patient ids)."""

    name = "nih_cxr14"
    description = "NIH ChestX-ray14: Data_Entry_2017*.csv(.gz) with the PNGs in its folder or subfolders"

    @staticmethod
    def detect(path: Path) -> bool:
        if path.is_file():
            return is_data_entry_file(path)
        if path.is_dir():
            return any(p.is_file() and is_data_entry_file(p) for p in path.iterdir())
        return False

    def load(self, path: Path, options: SourceOptions) -> ImageDataset:
        csv = _find_csv(path)
        # 0/1 findings in several columns: only a kind read that way fits (multilabel)
        forced = task_kind(options.task) if options.task else None
        if forced is not None and not (forced.several_columns and forced.probabilities):
            raise DataError(
                f"{csv.name}: NIH ChestX-ray14 is multilabel, not {options.task}; "
                "select findings with labels=... instead of forcing the task"
            )
        df = _read_csv(csv)
        labels = _parse_findings(df[FINDINGS_COL], csv)

        image_root = csv.parent
        names = df[IMAGE_COL].to_numpy(dtype=object)
        index = index_png_files(image_root)
        found = np.fromiter((n in index for n in names), dtype=bool, count=len(names))
        # a missing image keeps the path where it would be expected, for the error message
        prefix = os.path.join(str(image_root), "")  # plain string concatenation: 112k joins add up
        paths = [str(index[n]) if n in index else prefix + n for n in names]
        n_found = int(found.sum())
        n_missing = len(names) - n_found
        if n_missing:
            log.info("%s: %d of %d images not found under %s", csv.name, n_missing, len(names), image_root)

        meta = pd.DataFrame({"image_id": names, "patient_id": df[PATIENT_COL].to_numpy(dtype=object)})
        meta["path"] = paths
        meta["image_found"] = found
        meta["findings"] = df[FINDINGS_COL].to_numpy(dtype=object)
        for col, new in META_COLUMNS.items():
            if col in df.columns:
                meta[new] = df[col].to_numpy()

        reader = MissingAwareReader(image_root, n_missing, len(names))
        return ImageDataset(
            name="nih_cxr14",
            images=FileSource(paths, reader, channels=1),
            labels=labels,
            label_names=FINDINGS,
            task="multilabel",
            meta=meta,
            info={
                "csv": str(csv),
                "image_root": str(image_root),
                "n_images_found": n_found,
                "n_images_missing": n_missing,
                "n_patients": int(meta["patient_id"].nunique()),
            },
        )


def _read_csv(csv: Path) -> pd.DataFrame:
    try:
        df = pd.read_csv(csv, dtype={IMAGE_COL: str, PATIENT_COL: str, FINDINGS_COL: str})
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError, OSError, EOFError) as e:
        reason = " ".join(str(e).split())
        raise DataError(f"cannot read {csv}: {reason}; is it NIH's Data_Entry CSV?") from e
    missing = [c for c in (IMAGE_COL, FINDINGS_COL, PATIENT_COL) if c not in df.columns]
    if missing:
        raise DataError(
            f"{csv.name} lacks column(s) {missing}; available columns: {list(df.columns)}; is it NIH's Data_Entry CSV?"
        )
    if df.empty:
        raise DataError(f"{csv.name} has a header but no rows; use NIH's Data_Entry CSV")
    for col in (IMAGE_COL, PATIENT_COL):
        blank = df[col].isna() | (df[col].str.strip() == "")
        if blank.any():
            row = _row(int(np.flatnonzero(blank.to_numpy())[0]))
            raise DataError(f"{csv.name} row {row}: empty '{col}'; fill it in")
        df[col] = df[col].str.strip()
    dup = df[IMAGE_COL].duplicated()
    if dup.any():
        i = int(np.flatnonzero(dup.to_numpy())[0])
        name = df[IMAGE_COL].iat[i]
        raise DataError(f"{csv.name} row {_row(i)}: image '{name}' is listed twice; keep one row per image")
    return df


def _parse_findings(column: pd.Series, csv: Path) -> np.ndarray:
    """``'A|B'`` strings → ``(N, 14)`` float32; ``No Finding`` = all zero, empty = unknown (NaN).

    The real CSV has ~800 distinct strings for 112,120 rows, so each distinct string is parsed once and the
    rows take their row of that small table (far faster than splitting every row).
    """
    codes, uniques = pd.factorize(column, use_na_sentinel=True)
    col_of = {f: k for k, f in enumerate(FINDINGS)}
    table = np.zeros((len(uniques) + 1, len(FINDINGS)), dtype=np.float32)
    table[-1] = np.nan  # code -1 (empty cell) → unknown
    for u, text in enumerate(uniques):
        for finding in (t.strip() for t in str(text).split("|")):
            if finding in col_of:
                table[u, col_of[finding]] = 1.0
            elif finding != NO_FINDING:
                row = _row(int(np.flatnonzero(codes == u)[0]))
                raise DataError(
                    f"{csv.name} row {row}: unknown finding '{finding}' in '{text}'; "
                    f"expected '|'-separated names from {list(FINDINGS)} or '{NO_FINDING}'"
                )
    return table[codes]


def _row(i: int) -> int:
    """CSV row number as a spreadsheet shows it: the header is row 1, the first data row is row 2."""
    return i + 2
