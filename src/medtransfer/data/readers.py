"""Decode one 2D image file into a ``(C, H, W)`` array in the file's own dtype.

:func:`read_image` dispatches on the file name:

* PNG / JPEG / TIFF / BMP (Pillow): 8-bit → ``uint8``, 16-bit grey → ``uint16``, float TIFF → ``float32``;
  alpha is dropped (RGBA → RGB, LA → L, not composited), palette images are expanded through their palette, 1-bit
  images become ``L``, and an RGB image whose three channels are equal becomes 1 channel (grey content); only truly
  colour images keep 3 channels (:mod:`medtransfer.data.colour` brings them to a dataset's ``data.channels``).
* DICOM (``.dcm``, ``.dicom`` or no suffix with the ``DICM`` preamble, pydicom): the modality LUT
  (RescaleSlope/RescaleIntercept) is applied and ``MONOCHROME1`` is inverted so that high = bright,
  as in ``MONOCHROME2``; returns ``float32``. Colour DICOM (SamplesPerPixel 3) keeps 3 channels unless they are equal.
* NIfTI (``.nii``, ``.nii.gz``, nibabel): singleton axes are squeezed and the result must be 2D; returns
  ``float32``. Orientation: the affine is ignored; rows follow the second voxel axis and columns the
  first (``data.T``), with no flips, so the voxel → pixel mapping is the same whatever the radiological
  convention of the file. Images may show up rotated compared to a viewer, but consistently so.

Every problem the user can fix (missing file, truncated file, a 3D volume) raises :class:`DataError`
naming the file. Nothing is configured on import: Pillow's global ``LOAD_TRUNCATED_IMAGES`` is left alone,
and truncated files are refused by forcing the decode (``Image.load``) inside the reader.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path

import numpy as np
from PIL import Image, ImageFile

from medtransfer.errors import DataError

log = logging.getLogger(__name__)

PIL_SUFFIXES = (".png", ".jpg", ".jpeg", ".tif", ".tiff", ".bmp")
DICOM_SUFFIXES = (".dcm", ".dicom")
NIFTI_SUFFIXES = (".nii", ".nii.gz")
IMAGE_SUFFIXES = PIL_SUFFIXES + DICOM_SUFFIXES + NIFTI_SUFFIXES

_PNG_END = b"IEND\xaeB`\x82"
_JPEG_END = b"\xff\xd9"


def read_image(path: Path) -> np.ndarray:
    """Decode a 2D image file into ``(C, H, W)`` in its native dtype (uint8, uint16 or float32); C is 1, or 3 for a
    truly colour image.

    Example:
        >>> img = read_image(Path("images/case_001.png"))   # doctest: +SKIP
        >>> img.shape, img.dtype                              # doctest: +SKIP
        ((1, 512, 512), dtype('uint8'))
    """
    return read_pixels(path)[0]


def read_pixels(path: Path) -> tuple[np.ndarray, str]:
    """:func:`read_image` and the colour mode the file stores the image in: a PIL mode (``L``, ``RGB``, ``RGBA``,
    ``P``, ``I;16`` ...), ``DICOM <PhotometricInterpretation>`` or ``NIfTI`` (what :func:`header_mode` reads).

    Example:
        >>> img, mode = read_pixels(Path("images/grey_film.jpg"))   # doctest: +SKIP
        >>> img.shape, mode                                          # doctest: +SKIP
        ((1, 512, 512), 'RGB')
    """
    path = Path(path)
    kind = _kind(path)
    try:
        if kind == "pil":
            return _read_pil(path)
        if kind == "dicom":
            return _read_dicom(path)
        return _read_nifti(path), "NIfTI"
    except DataError:
        raise
    except FileNotFoundError:
        raise DataError(f"image file not found: {path}") from None
    except Exception as e:  # decoders raise many types (OSError, SyntaxError, zlib.error, EOFError ...)
        raise _unreadable(path, e) from e


def image_size(path: Path) -> tuple[int, int]:
    """``(H, W)`` of a 2D image, read from the header where the format allows (no pixel decode).

    Example:
        >>> image_size(Path("images/case_001.png"))   # doctest: +SKIP
        (512, 512)
    """
    path = Path(path)
    kind = _kind(path)
    try:
        if kind == "pil":
            with Image.open(path) as im:  # opening parses the header only
                return im.size[1], im.size[0]
        if kind == "dicom":
            import pydicom  # deferred: ~0.4 s; every dataset lookup imports this module, only DICOM files need it

            ds = pydicom.dcmread(path, stop_before_pixels=True)
            return int(ds.Rows), int(ds.Columns)
        import nibabel as nib  # deferred: ~0.7 s; only NIfTI files need it

        full = nib.load(path).shape  # header only; the data stay on disk
        shape = [s for s in full if s != 1]
        if len(shape) != 2:
            raise _not_2d(path, full)
        return shape[1], shape[0]  # rows follow the second voxel axis (see the module docstring)
    except DataError:
        raise
    except FileNotFoundError:
        raise DataError(f"image file not found: {path}") from None
    except Exception as e:
        raise _unreadable(path, e) from e


def header_mode(path: Path) -> str:
    """The colour mode :func:`read_pixels` reports, read from the header only (no pixel decode).

    Example:
        >>> header_mode(Path("images/case_001.png"))   # doctest: +SKIP
        'L'
    """
    path = Path(path)
    kind = _kind(path)
    try:
        if kind == "pil":
            with Image.open(path) as im:
                return im.mode
        if kind == "dicom":
            import pydicom  # deferred: only DICOM files need it

            return _dicom_mode(pydicom.dcmread(path, stop_before_pixels=True))
        return "NIfTI"
    except DataError:
        raise
    except FileNotFoundError:
        raise DataError(f"image file not found: {path}") from None
    except Exception as e:
        raise _unreadable(path, e) from e


def is_image_file(path: Path) -> bool:
    """Whether :func:`read_image` knows the file's suffix (DICOM files without a suffix are not counted)."""
    name = path.name.lower()
    return name.endswith(IMAGE_SUFFIXES)


def is_suffixless_dicom(path: Path) -> bool:
    """A file with no suffix (or a numeric one, as DICOM UIDs have) and the ``DICM`` preamble at byte 128: what
    :func:`read_image` reads as DICOM although :func:`is_image_file` does not count it (reads 132 bytes)."""
    return (not path.suffix or path.suffix[1:].isdigit()) and _has_dicom_preamble(path)


def _kind(path: Path) -> str:
    """``pil``, ``dicom`` or ``nifti`` from the suffix (or the DICOM preamble); raise for anything else."""
    name = path.name.lower()
    if name.endswith(PIL_SUFFIXES):
        kind = "pil"
    elif name.endswith(DICOM_SUFFIXES):
        kind = "dicom"
    elif name.endswith(NIFTI_SUFFIXES):
        kind = "nifti"
    elif not path.suffix or path.suffix[1:].isdigit():  # DICOM files are often named 1.2.840... or IM0001
        if not path.exists():
            raise DataError(f"image file not found: {path}")
        if not _has_dicom_preamble(path):
            raise DataError(
                f"cannot read image {path}: no file suffix and no DICOM preamble; "
                f"rename it with one of {list(IMAGE_SUFFIXES)}"
            )
        kind = "dicom"
    else:
        raise DataError(f"cannot read image {path}: unsupported file type; use one of {list(IMAGE_SUFFIXES)}")
    if not path.exists():
        raise DataError(f"image file not found: {path}")
    return kind


def _has_dicom_preamble(path: Path) -> bool:
    try:
        with open(path, "rb") as f:
            head = f.read(132)
    except OSError:
        return False
    return len(head) == 132 and head[128:132] == b"DICM"


def _unreadable(path: Path, error: BaseException) -> DataError:
    """A decoder's exception → one line in our words (library advice such as pydicom's ``force=True`` names
    options the user does not have, so it is not passed on)."""
    return DataError(f"cannot read image {path}: {_reason(path, error)}")


def _reason(path: Path, error: BaseException) -> str:
    text = " ".join(str(error).split())
    name = type(error).__name__
    if name == "UnidentifiedImageError":
        return "not a valid image of its type (damaged, truncated or wrongly named)"
    if name == "InvalidDicomError":
        return "not a DICOM file (no DICOM header or 'DICM' preamble)"
    if "truncated" in text.lower():
        return "the file is truncated"
    text = text.replace(f"'{path}'", "the file").replace(str(path), "the file")
    text = text.split(" Use force=True")[0].split("; use force=True")[0]
    return f"{text or name}; the file may be damaged or not an image"


def _not_2d(path: Path, shape: tuple[int, ...]) -> DataError:
    return DataError(
        f"image {path} has shape {tuple(shape)}: 2D sources need 2D images; "
        "extract 2D slices or use a 3D (segmentation) source"
    )


def _to_chw(arr: np.ndarray) -> np.ndarray:
    return np.ascontiguousarray(arr[None] if arr.ndim == 2 else np.moveaxis(arr, -1, 0))


def _grey_if_equal(arr: np.ndarray) -> np.ndarray:
    """``(H, W, 3)`` whose three channels are equal → ``(H, W)``; anything else as it is."""
    if arr.ndim == 3 and np.array_equal(arr[..., 0], arr[..., 1]) and np.array_equal(arr[..., 1], arr[..., 2]):
        return arr[..., 0]
    return arr


def _read_pil(path: Path) -> tuple[np.ndarray, str]:
    with Image.open(path) as im:
        if getattr(im, "n_frames", 1) > 1:
            raise _not_2d(path, (im.n_frames, im.size[1], im.size[0]))
        # Pillow opens lazily: a truncated file only fails when the pixels are decoded, so decode here
        # (inside the try of read_image) rather than at some later np.asarray deep in a DataLoader.
        im.load()
        if ImageFile.LOAD_TRUNCATED_IMAGES:
            # Someone else switched Pillow to fill truncated images with grey; still refuse them.
            _require_complete(path, im.format)
        arr = _pil_to_array(im)
        mode = im.mode
    return _to_chw(arr), mode


def _pil_to_array(im) -> np.ndarray:
    """Pillow image → ``(H, W)`` or, for a truly colour image, ``(H, W, 3)`` array without changing the bit depth."""
    mode = im.mode
    if mode.startswith("I;16"):  # 16-bit grey (PNG, TIFF), any byte order
        return np.asarray(im).astype(np.uint16, copy=False)
    if mode == "I":  # 32-bit int: what older Pillow gives for 16-bit PNGs
        arr = np.asarray(im)
        if arr.size and arr.min() >= 0 and arr.max() <= np.iinfo(np.uint16).max:
            return arr.astype(np.uint16)
        return arr.astype(np.float32)
    if mode == "F":
        return np.asarray(im, dtype=np.float32)
    if mode == "L":
        return np.asarray(im)
    if mode in ("LA", "La"):  # alpha dropped
        return np.asarray(im)[..., 0]
    if mode == "1":
        return np.asarray(im.convert("L"))
    if mode in ("P", "PA"):  # expanded through the palette (via RGBA when it has transparency, to drop it quietly)
        im = im.convert("RGBA" if mode == "PA" or "transparency" in im.info else "RGB")
    if im.mode == "RGBA":  # alpha dropped: the stored colour values, not composited on a background
        return _grey_if_equal(np.asarray(im)[..., :3])
    # RGB, CMYK, YCbCr, LAB, HSV, RGBa ...: 3-channel RGB
    return _grey_if_equal(np.asarray(im if im.mode == "RGB" else im.convert("RGB")))


def _require_complete(path: Path, fmt: str | None) -> None:
    """Refuse a PNG without its end chunk or a JPEG without its end marker (checks the last bytes only)."""
    marker = {"PNG": _PNG_END, "JPEG": _JPEG_END}.get(fmt or "")
    if marker is None:
        return
    size = os.path.getsize(path)
    with open(path, "rb") as f:
        f.seek(max(0, size - 4096))  # tolerate a little trailing padding after the end marker
        tail = f.read()
    if marker not in tail:
        raise DataError(f"cannot read image {path}: the file is truncated (no {fmt} end marker)")


def _dicom_mode(ds) -> str:
    photometric = str(getattr(ds, "PhotometricInterpretation", "") or "").upper()
    if not photometric:
        samples = int(getattr(ds, "SamplesPerPixel", 1) or 1)
        photometric = "MONOCHROME2" if samples == 1 else "RGB"
    return f"DICOM {photometric}"


def _read_dicom(path: Path) -> tuple[np.ndarray, str]:
    import pydicom  # deferred: only DICOM files need it
    from pydicom.pixels import apply_modality_lut  # deferred: with pydicom

    ds = pydicom.dcmread(path)
    if "PixelData" not in ds:
        raise DataError(f"cannot read image {path}: the DICOM file has no pixel data; is it an image?")
    arr = ds.pixel_array
    frames = int(getattr(ds, "NumberOfFrames", 1) or 1)
    samples = int(getattr(ds, "SamplesPerPixel", 1) or 1)
    if frames > 1:
        raise _not_2d(path, arr.shape)
    if samples > 1:  # colour DICOM (e.g. secondary capture): no modality LUT applies
        return _to_chw(_grey_if_equal(arr.astype(np.float32))), _dicom_mode(ds)
    out = np.asarray(apply_modality_lut(arr, ds), dtype=np.float32)
    if str(getattr(ds, "PhotometricInterpretation", "")).upper() == "MONOCHROME1":
        out = _invert_monochrome1(out, ds, apply_modality_lut)
    return _to_chw(out), _dicom_mode(ds)


def _invert_monochrome1(out: np.ndarray, ds, apply_modality_lut) -> np.ndarray:
    """MONOCHROME1 shows low values bright: mirror the values within the range the stored bits allow.

    Mirroring within the possible range (not the image's own min/max) keeps intensities comparable
    across images of the same acquisition.
    """
    bits = int(getattr(ds, "BitsStored", 0) or getattr(ds, "BitsAllocated", 16))
    if int(getattr(ds, "PixelRepresentation", 0)) == 1:
        stored = np.array([-(2 ** (bits - 1)), 2 ** (bits - 1) - 1], dtype=np.float64)
    else:
        stored = np.array([0, 2**bits - 1], dtype=np.float64)
    lo, hi = np.sort(np.asarray(apply_modality_lut(stored, ds), dtype=np.float64))
    return (lo + hi - out).astype(np.float32)


def _read_nifti(path: Path) -> np.ndarray:
    import nibabel as nib  # deferred: only NIfTI files need it

    img = nib.load(path)
    shape = img.shape
    if len([s for s in shape if s != 1]) != 2:
        raise _not_2d(path, shape)
    data = np.squeeze(np.asarray(img.get_fdata(dtype=np.float32)))
    return _to_chw(data.T)  # (i, j) voxel axes → rows = j, columns = i (see the module docstring)
