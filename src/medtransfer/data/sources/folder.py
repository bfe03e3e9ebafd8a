"""A folder of image files described by one CSV: the form most users' own data comes in.

The CSV has one row per image: a file name column (relative to the CSV's folder, or to an ``images/``
subfolder, or absolute), optional label column(s) and an optional patient column::

    file,label,patient_id
    images/case_001.png,pneumonia,P17

One label column gives a binary task when its values are 0/1 (the label name is the column name), a regression
task when it holds numbers with fractions or more than 20 distinct values (bone age in months), otherwise a
multi-class task over its sorted distinct values. Several label columns give a multi-label task (values 0, 1
or empty = unknown). Row numbers in error messages count the header as row 1, as a spreadsheet shows them.

Images may mix colour modes (greyscale PNGs, RGB JPEGs, RGBA, palette): each is read with the channels of the
dataset, ``data.channels`` or what most images have, by the rules of :mod:`medtransfer.data.colour`.
"""

from __future__ import annotations

import logging
import os
import re
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pandas as pd

from medtransfer.data.colour import ColourNote, conform, decide_channels
from medtransfer.data.dataset import FileSource, ImageDataset, one_hot
from medtransfer.data.readers import header_mode, read_image, read_pixels
from medtransfer.data.sources.base import DATA_SOURCES, DataSource, SourceOptions
from medtransfer.data.sources.nih_cxr14 import is_data_entry_file
from medtransfer.errors import DataError
from medtransfer.registry import suggest
from medtransfer.tasks.base import task_kind

log = logging.getLogger(__name__)

IMAGE_COLUMNS = ("file", "filename", "image", "image_id", "path", "Image Index")
PATIENT_COLUMNS = ("patient_id", "Patient ID", "patient")
LABEL_COLUMN = "label"
MAX_LISTED = 5


def _csvs_in(folder: Path) -> list[Path]:
    return sorted(p for p in folder.iterdir() if p.is_file() and p.name.lower().endswith(".csv"))


def _row(i: int) -> int:
    """CSV row number as a spreadsheet shows it: the header is row 1, the first data row is row 2."""
    return i + 2


@DATA_SOURCES.register("folder")
class FolderSource(DataSource):
    """Image files (PNG, JPEG, TIFF, DICOM, 2D NIfTI) listed in one CSV with labels and patient ids."""

    name = "folder"
    description = "a folder with one CSV (file name, label column(s), optional patient id) and the images"

    @staticmethod
    def detect(path: Path) -> bool:
        if path.is_file():
            return path.name.lower().endswith(".csv") and not is_data_entry_file(path)
        if path.is_dir():
            csvs = _csvs_in(path)
            return len(csvs) == 1 and not is_data_entry_file(csvs[0])
        return False

    @staticmethod
    def hint(path: Path) -> str | None:
        if path.is_dir():
            if any(path.iterdir()) and not _csvs_in(path):
                return None  # no CSV at all: the plain image folder format ('images') says what is missing
            try:
                _find_csv(path)
            except DataError as e:
                return str(e)
        return None

    def load(self, path: Path, options: SourceOptions) -> ImageDataset:
        csv = _find_csv(path)
        folder = csv.parent
        header = _read_header(csv)
        image_col = _image_column(header, options.image_column, csv)
        label_cols = _label_columns(header, options, csv)
        patient_col = _patient_column(header, options.patient_column, csv)
        if image_col in label_cols:
            raise DataError(f"{csv.name}: column '{image_col}' cannot be both the image and a label column")

        text_cols = {c: str for c in (image_col, patient_col, *label_cols) if c is not None}
        df = _read_rows(csv, text_cols)
        names = _image_names(df[image_col], csv, image_col)
        paths = _resolve_paths(names, folder, csv, options.allow_outside)

        labels, label_names, task = _labels(df, label_cols, options.task, csv)

        if patient_col is not None:
            patients = df[patient_col].str.strip()
            blank = patients.isna() | (patients == "")
            if blank.any():
                log.warning(
                    "%s: %d rows have no '%s'; each counts as its own patient",
                    csv.name,
                    int(blank.sum()),
                    patient_col,
                )
                patients = patients.where(~blank, names)
        else:
            patients = names
        meta = pd.DataFrame({"image_id": names.to_numpy(), "patient_id": patients.to_numpy(), "path": paths})
        for col in df.columns:
            if col in (image_col, patient_col) or col in label_cols:
                continue
            # never overwrite a column the data contract defines (a CSV may have its own 'path')
            key = col if col not in meta.columns else f"csv_{col}"
            meta[key] = df[col].to_numpy()

        images = CsvFileSource(paths, csv)
        images.channels = options.channels or decide_channels(len(images), images.header_mode, images.read_natural)
        return ImageDataset(
            name=folder.name or csv.stem,
            images=images,
            labels=labels,
            label_names=label_names,
            task=task,
            meta=meta,
            info={
                "csv": str(csv),
                "image_root": str(folder),
                "image_column": image_col,
                "label_columns": list(label_cols),
                "patient_column": patient_col,
            },
        )


class CsvFileSource(FileSource):
    """Image files listed in a CSV, each read with the dataset's :attr:`channels` whatever its colour mode
    (:func:`~medtransfer.data.colour.conform`): errors name the CSV row and say how to fix or skip it."""

    def __init__(self, paths: Sequence[str], csv: Path, channels: int = 1) -> None:
        super().__init__(paths, read_image, channels)
        self.csv = csv

    def load(self, i: int) -> np.ndarray:
        return self.load_with_note(i)[0]

    def load_with_note(self, i: int) -> tuple[np.ndarray, ColourNote]:
        img, mode = self._named(i, read_pixels)
        return conform(img, mode, self.channels)

    def read_natural(self, i: int) -> np.ndarray:
        """Image ``i`` with its own channels (1, or 3 for a truly colour image), before :func:`conform`."""
        return self._named(i, read_pixels)[0]

    def header_mode(self, i: int) -> str:
        """Image ``i``'s colour mode from its header (no pixel decode)."""
        return self._named(i, header_mode)

    def _named(self, i: int, read):
        try:
            return read(self.paths[i])
        except DataError as e:
            raise DataError(f"{self.csv.name} row {_row(i)}: {e}; replace the file or delete the row") from None

    def describe(self, i: int) -> str:
        return f"{self.csv.name} row {_row(i)} ({self.paths[i]})"


def _find_csv(path: Path) -> Path:
    if path.is_file():
        if not path.name.lower().endswith((".csv", ".csv.gz")):
            raise DataError(f"{path} is not a CSV file; pass a folder with one CSV or the CSV itself")
        return path
    if not any(path.iterdir()):
        raise DataError(f"folder {path} is empty; put the images and one CSV listing them (e.g. file,label) there")
    csvs = _csvs_in(path)
    if not csvs:
        raise DataError(f"no CSV file in {path}; add one CSV listing the images (a file name column and label columns)")
    if len(csvs) > 1:
        raise DataError(f"several CSV files in {path}: {[p.name for p in csvs]}; pass the path of the one to use")
    return csvs[0]


def _read_header(csv: Path) -> list[str]:
    try:
        return [str(c) for c in pd.read_csv(csv, nrows=0).columns]
    except pd.errors.EmptyDataError:
        raise DataError(f"{csv} is empty; it needs a header row and one row per image") from None
    except (pd.errors.ParserError, UnicodeDecodeError, OSError) as e:
        raise _csv_error(csv, e) from None


def _csv_error(csv: Path, e: Exception) -> DataError:
    """pandas' parser messages → one line naming the row (as a spreadsheet counts them) and the fix."""
    text = " ".join(str(e).split())
    fields = re.search(r"Expected (\d+) fields in line (\d+), saw (\d+)", text)
    if fields:
        want, line, got = fields.groups()
        return DataError(
            f"{csv.name} row {line} has {got} fields but the header has {want}; quote values that contain commas "
            '(e.g. "a, b") or remove the extra field'
        )
    if isinstance(e, UnicodeDecodeError):
        return DataError(f"{csv} is not UTF-8 text (byte {e.start}); save it as UTF-8 CSV")
    return DataError(f"cannot read {csv} as a CSV file ({text}); check that it is a comma-separated text file")


def _read_rows(csv: Path, text_cols: dict[str, type]) -> pd.DataFrame:
    # Image, patient and label columns are read as text: ids keep leading zeros and bad label values are
    # reported as written; the other columns keep pandas' type inference for the metadata.
    try:
        df = pd.read_csv(csv, dtype=text_cols)
    except (pd.errors.ParserError, UnicodeDecodeError, OSError) as e:
        raise _csv_error(csv, e) from None
    if df.empty:
        raise DataError(f"{csv} has a header but no rows; list one image per row")
    return df


def _missing_column(csv: Path, what: str, name: str, columns: list[str]) -> DataError:
    close = suggest(name, columns)
    hint = f" (did you mean {close}?)" if close else ""
    return DataError(f"{csv.name} has no {what} column '{name}'{hint}; available columns: {columns}")


def _find_column(columns: list[str], candidates: tuple[str, ...]) -> str | None:
    lowered = {c.strip().lower(): c for c in reversed(columns)}  # first spelling wins on duplicates
    for cand in candidates:
        if cand.lower() in lowered:
            return lowered[cand.lower()]
    return None


def _image_column(columns: list[str], name: str | None, csv: Path) -> str:
    if name is not None:
        if name not in columns:
            raise _missing_column(csv, "image", name, columns)
        return name
    found = _find_column(columns, IMAGE_COLUMNS)
    if found is None:
        raise DataError(
            f"{csv.name}: no image file column among {columns}; name one {list(IMAGE_COLUMNS[:3])} or pass image_column"
        )
    return found


def _patient_column(columns: list[str], name: str | None, csv: Path) -> str | None:
    if name is not None:
        if name not in columns:
            raise _missing_column(csv, "patient", name, columns)
        return name
    return _find_column(columns, PATIENT_COLUMNS)


def _label_columns(columns: list[str], options: SourceOptions, csv: Path) -> tuple[str, ...]:
    if options.labels is not None:
        labels = tuple(options.labels)
        for name in labels:
            if name not in columns:
                raise _missing_column(csv, "label", name, columns)
        if len(set(labels)) != len(labels):
            raise DataError(f"{csv.name}: label columns {list(labels)} repeat a column; name each once")
        return labels
    found = _find_column(columns, (LABEL_COLUMN,))
    if found is None and options.task is not None and task_kind(options.task).supervised:
        raise DataError(
            f"{csv.name}: task {options.task} needs label columns but there is no '{LABEL_COLUMN}' column; "
            f"pass labels=... from {columns}"
        )
    return (found,) if found is not None else ()


def _image_names(column: pd.Series, csv: Path, image_col: str) -> pd.Series:
    names = column.str.strip()
    blank = names.isna() | (names == "")
    if blank.any():
        row = _row(int(np.flatnonzero(blank.to_numpy())[0]))
        raise DataError(f"{csv.name} row {row}: empty '{image_col}'; fill in the image file name")
    return names.reset_index(drop=True)


def _resolve_paths(names: pd.Series, folder: Path, csv: Path, allow_outside: bool = False) -> list[str]:
    """Absolute names as they are; relative ones under the CSV's folder, else under its ``images/``.

    A name that leads out of the data folder (``../``, an absolute path elsewhere) is refused unless
    ``allow_outside``: a CSV must not be a way to read arbitrary files of a shared server. The test is on the
    normalised path, so symbolic links the folder's owner placed inside it still work.
    """
    images = folder / "images"
    root = os.path.normpath(os.path.abspath(folder))
    paths: list[str] = []
    missing: list[int] = []
    for i, name in enumerate(names):
        bases = ("",) if os.path.isabs(name) else (folder, images)
        candidates = [os.path.normpath(os.path.join(base, name)) for base in bases]
        inside = os.path.commonpath([root, os.path.abspath(candidates[0])]) == root
        if not inside and not allow_outside:
            raise DataError(
                f"{csv.name} row {_row(i)}: '{name}' is outside the data folder {root}; keep the images inside it, "
                "or set data.allow_outside: true (--allow-outside for `data` commands) if that is intended"
            )
        p = next((c for c in candidates if os.path.exists(c)), None)
        if p is None:
            missing.append(i)
            p = candidates[0]
        paths.append(p)
    if missing:
        first = [names.iat[i] for i in missing[:MAX_LISTED]]
        raise DataError(
            f"{len(missing)} of {len(names)} images listed in {csv.name} are missing "
            f"(first at row {_row(missing[0])}: {first}); paths are looked up relative to {folder} "
            f"and {images}: check the file names or copy the images there"
        )
    seen: dict[str, int] = {}
    for i, p in enumerate(paths):
        if p in seen:
            raise DataError(
                f"{csv.name} rows {_row(seen[p])} and {_row(i)} list the same image '{names.iat[i]}'; "
                "keep one row per image"
            )
        seen[p] = i
    return paths


def _labels(
    df: pd.DataFrame, cols: tuple[str, ...], task: str | None, csv: Path
) -> tuple[np.ndarray, tuple[str, ...], str]:
    """Label array, label names and task from the label column(s), checked against a forced ``task`` (what the
    forced kind is decides how the columns are read: numbers, 0/1 per finding, or classes)."""
    n = len(df)
    forced = task_kind(task) if task is not None else None
    if not cols:
        if forced is not None and forced.supervised:
            raise DataError(f"{csv.name}: task {task} needs label columns; pass labels=...")
        return np.zeros((n, 0), dtype=np.float32), (), task or "unlabelled"
    if forced is not None and not forced.supervised:
        raise DataError(f"{csv.name}: task {task} contradicts label columns {list(cols)}; drop one")
    continuous = forced is not None and not forced.probabilities  # a regression-like kind reads numbers
    if continuous or (forced is None and len(cols) == 1 and _looks_continuous(df[cols[0]])):
        return np.stack([_numeric_column(df, c, csv) for c in cols], axis=1), tuple(cols), task or "regression"
    if len(cols) > 1:
        if forced is not None and not forced.several_columns:
            raise DataError(
                f"{csv.name}: {len(cols)} label columns {list(cols)} make a multilabel task, not {task}; "
                "pass one label column for a binary or multiclass task"
            )
        return np.stack([_binary_column(df, c, csv) for c in cols], axis=1), tuple(cols), task or "multilabel"

    col = cols[0]
    text = df[col].str.strip()
    known = text.notna() & (text != "")
    values = text[known]
    numbers = pd.to_numeric(values, errors="coerce")
    is_binary = bool(numbers.notna().all() and numbers.isin((0, 1)).all())
    zero_one = forced is not None and forced.probabilities and not forced.one_hot  # binary, multi-label
    if zero_one or (forced is None and is_binary):
        if not is_binary:
            distinct = sorted(values.unique().tolist())
            shown = distinct[:MAX_LISTED] + (["..."] if len(distinct) > MAX_LISTED else [])
            raise DataError(
                f"{csv.name}: column '{col}' has {len(distinct)} distinct values {shown}; "
                f"a {task or 'binary'} task needs 0/1 values: recode them or use task multiclass"
            )
        return _binary_column(df, col, csv)[:, None], (col,), forced.after_selecting(1) if forced else "binary"

    # multiclass: one-hot over the sorted distinct values (numerically sorted when all values are numbers)
    if numbers.notna().all():
        keys = numbers.map(lambda v: str(int(v)) if float(v).is_integer() else str(v))
        classes = sorted(keys.unique().tolist(), key=float)
    else:
        keys = values
        classes = sorted(keys.unique().tolist())
    codes = np.full(n, -1, dtype=np.int64)
    codes[np.flatnonzero(known.to_numpy())] = pd.Categorical(keys, categories=classes).codes
    if len(classes) < 2:
        log.warning("%s: column '%s' has a single class %s", csv.name, col, classes)
    return one_hot(codes, len(classes)), tuple(classes), "multiclass"


# A numeric column with more distinct values than this (or with fractions) is a continuous target, not classes.
MAX_CLASSES = 20


def _looks_continuous(column: pd.Series) -> bool:
    """Numbers only, and either fractional values or more than :data:`MAX_CLASSES` distinct ones (bone age in
    months, a dose): a regression target. ``--task`` / ``task:`` overrides."""
    text = column.str.strip()
    values = text[text.notna() & (text != "") & (text.str.lower() != "nan")]
    numbers = pd.to_numeric(values, errors="coerce").dropna()
    # a few text cells in a numeric column are typos in a target (reported by row), not class names
    if len(values) == 0 or len(numbers) < 0.9 * len(values):
        return False
    distinct = numbers.nunique()
    fractional = bool((numbers != numbers.round()).any())
    return distinct > MAX_CLASSES or (fractional and distinct > 2)


def _numeric_column(df: pd.DataFrame, col: str, csv: Path) -> np.ndarray:
    """A regression target column → float32, empty/NaN = unknown (reported with its count); text names its row."""
    text = df[col].str.strip()
    blank = text.isna() | (text == "") | (text.str.lower() == "nan")
    numbers = pd.to_numeric(text.where(~blank), errors="coerce")
    bad = ~blank & (numbers.isna() | ~np.isfinite(numbers.astype(float)))
    if bad.any():
        i = int(np.flatnonzero(bad.to_numpy())[0])
        raise DataError(
            f"{csv.name} row {_row(i)}, column '{col}': '{text.iat[i]}' is not a number; a regression target takes "
            f"numbers (empty = unknown): fix the value ({int(bad.sum())} row(s) like it)"
        )
    if blank.any():
        rows = [str(_row(int(i))) for i in np.flatnonzero(blank.to_numpy())[:5]]
        log.warning(
            "%s: target '%s' is empty in %d of %d rows (rows %s%s); they count as unknown",
            csv.name,
            col,
            int(blank.sum()),
            len(blank),
            ", ".join(rows),
            ", …" if blank.sum() > 5 else "",
        )
    return numbers.to_numpy(dtype=np.float32, na_value=np.nan)


def _binary_column(df: pd.DataFrame, col: str, csv: Path) -> np.ndarray:
    """A 0/1/empty column → float32 with NaN for empty; any other value raises naming its row."""
    text = df[col].str.strip()
    blank = text.isna() | (text == "")
    numbers = pd.to_numeric(text.where(~blank), errors="coerce")
    bad = ~blank & ~numbers.isin((0, 1))
    if bad.any():
        i = int(np.flatnonzero(bad.to_numpy())[0])
        raise DataError(
            f"{csv.name} row {_row(i)}, column '{col}': value '{text.iat[i]}' is not 0, 1 or empty; "
            "multi-label columns take 0, 1 or empty (unknown): recode it"
        )
    if blank.any():
        rows = [str(_row(int(i))) for i in np.flatnonzero(blank.to_numpy())[:5]]
        more = ", …" if blank.sum() > 5 else ""
        log.warning(
            "%s: column '%s' is empty or NaN in %d of %d rows (rows %s%s); they count as unknown: left out of the "
            "loss and the metrics for that label",
            csv.name,
            col,
            int(blank.sum()),
            len(blank),
            ", ".join(rows),
            more,
        )
    return numbers.to_numpy(dtype=np.float32, na_value=np.nan)
