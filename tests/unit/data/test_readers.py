"""read_image / image_size on tiny files of every supported kind, written to tmp_path."""

from __future__ import annotations

from pathlib import Path

import nibabel as nib
import numpy as np
import pydicom
import pytest
from PIL import Image, ImageFile
from pydicom.dataset import FileDataset, FileMetaDataset
from pydicom.uid import ExplicitVRLittleEndian, SecondaryCaptureImageStorage, generate_uid

from medtransfer.data.readers import image_size, read_image
from medtransfer.errors import DataError


def _png(path: Path, arr: np.ndarray) -> Path:
    Image.fromarray(arr).save(path)
    return path


def _dicom(path: Path, stored: np.ndarray, photometric: str = "MONOCHROME2", **tags) -> Path:
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = SecondaryCaptureImageStorage
    meta.MediaStorageSOPInstanceUID = generate_uid()
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds = FileDataset(str(path), {}, file_meta=meta, preamble=b"\0" * 128)
    ds.SOPClassUID = meta.MediaStorageSOPClassUID
    ds.SOPInstanceUID = meta.MediaStorageSOPInstanceUID
    ds.Modality = "CR"
    ds.Rows, ds.Columns = stored.shape
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = photometric
    ds.BitsAllocated, ds.BitsStored, ds.HighBit = 16, 12, 11
    ds.PixelRepresentation = 0
    for key, value in tags.items():
        setattr(ds, key, value)
    ds.PixelData = stored.astype(np.uint16).tobytes()
    ds.save_as(path, enforce_file_format=True)
    return path


def test_png_8bit(tmp_path, rng):
    arr = rng.integers(0, 256, (5, 7), dtype=np.uint8)
    img = read_image(_png(tmp_path / "a.png", arr))
    assert img.shape == (1, 5, 7) and img.dtype == np.uint8
    np.testing.assert_array_equal(img[0], arr)
    assert image_size(tmp_path / "a.png") == (5, 7)


def test_png_16bit_keeps_values_above_255(tmp_path):
    arr = np.array([[0, 300], [4095, 65535]], dtype=np.uint16)
    img = read_image(_png(tmp_path / "a.png", arr))
    assert img.dtype == np.uint16 and img.shape == (1, 2, 2)
    np.testing.assert_array_equal(img[0], arr)


def test_rgb_png_and_alpha_dropped(tmp_path, rng):
    rgb = rng.integers(0, 256, (4, 6, 3), dtype=np.uint8)
    img = read_image(_png(tmp_path / "rgb.png", rgb))
    assert img.shape == (3, 4, 6)
    np.testing.assert_array_equal(img, np.moveaxis(rgb, -1, 0))
    rgba = np.concatenate([rgb, np.full((4, 6, 1), 7, np.uint8)], axis=-1)
    np.testing.assert_array_equal(read_image(_png(tmp_path / "rgba.png", rgba)), img)


def test_palette_png_becomes_grey(tmp_path):
    Image.fromarray(np.array([[0, 255]], np.uint8)).convert("P").save(tmp_path / "p.png")
    img = read_image(tmp_path / "p.png")
    assert img.shape == (1, 1, 2) and img.dtype == np.uint8


def test_jpeg_and_tiff(tmp_path):
    arr = np.tile(np.arange(0, 256, 16, dtype=np.uint8), (16, 1))
    Image.fromarray(arr).save(tmp_path / "a.jpg", quality=95)
    img = read_image(tmp_path / "a.jpg")
    assert img.shape == (1, 16, 16) and img.dtype == np.uint8
    assert np.abs(img[0].astype(int) - arr).max() < 16  # lossy
    Image.fromarray(arr.astype(np.float32) / 255).save(tmp_path / "a.tif")
    tif = read_image(tmp_path / "a.tif")
    assert tif.dtype == np.float32 and tif.shape == (1, 16, 16)


def test_dicom_rescale(tmp_path):
    stored = np.array([[0, 100], [1000, 4095]], dtype=np.uint16)
    path = _dicom(tmp_path / "a.dcm", stored, RescaleSlope=2, RescaleIntercept=-100)
    img = read_image(path)
    assert img.dtype == np.float32 and img.shape == (1, 2, 2)
    np.testing.assert_allclose(img[0], 2 * stored.astype(np.float32) - 100)
    assert image_size(path) == (2, 2)


def test_dicom_monochrome1_is_inverted(tmp_path):
    stored = np.array([[0, 100], [1000, 4095]], dtype=np.uint16)
    img = read_image(_dicom(tmp_path / "m1.dcm", stored, photometric="MONOCHROME1"))
    np.testing.assert_allclose(img[0], 4095 - stored.astype(np.float32))  # mirrored in the 12-bit range
    assert img[0, 0, 0] > img[0, 1, 1]  # stored 0 is white in MONOCHROME1, so it is now the brightest


def test_dicom_without_suffix_is_recognised(tmp_path):
    stored = np.arange(6, dtype=np.uint16).reshape(2, 3)
    path = _dicom(tmp_path / "IM0001", stored)
    assert pydicom.dcmread(path).Rows == 2
    np.testing.assert_allclose(read_image(path)[0], stored)


def test_nifti_2d_and_3d_refused(tmp_path):
    data = np.arange(12, dtype=np.float32).reshape(4, 3, 1)
    nib.Nifti1Image(data, np.eye(4)).to_filename(tmp_path / "a.nii.gz")
    img = read_image(tmp_path / "a.nii.gz")
    assert img.dtype == np.float32 and img.shape == (1, 3, 4)  # rows = 2nd voxel axis, columns = 1st
    np.testing.assert_array_equal(img[0], data[..., 0].T)
    assert image_size(tmp_path / "a.nii.gz") == (3, 4)

    nib.Nifti1Image(np.zeros((4, 3, 2), np.float32), np.eye(4)).to_filename(tmp_path / "vol.nii")
    with pytest.raises(DataError, match=r"vol\.nii.*2D sources need 2D images"):
        read_image(tmp_path / "vol.nii")


def test_truncated_png_names_the_file(tmp_path, rng):
    path = _png(tmp_path / "cut.png", rng.integers(0, 256, (64, 64), dtype=np.uint8))
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(DataError, match=r"cannot read image .*cut\.png.*truncated") as err:
        read_image(path)
    assert "\n" not in str(err.value)


def test_truncated_png_refused_even_when_pillow_is_told_to_accept(tmp_path, rng, monkeypatch):
    path = _png(tmp_path / "cut.png", rng.integers(0, 256, (64, 64), dtype=np.uint8))
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    monkeypatch.setattr(ImageFile, "LOAD_TRUNCATED_IMAGES", True)  # as some other library might
    with pytest.raises(DataError, match=r"cut\.png"):
        read_image(path)


def test_missing_and_unsupported_files(tmp_path):
    with pytest.raises(DataError, match=r"image file not found: .*nope\.png"):
        read_image(tmp_path / "nope.png")
    with pytest.raises(DataError, match=r"image file not found"):
        image_size(tmp_path / "nope.dcm")
    (tmp_path / "notes.txt").write_text("hello")
    with pytest.raises(DataError, match=r"notes\.txt.*unsupported"):
        read_image(tmp_path / "notes.txt")
    (tmp_path / "fake.png").write_text("not a png")
    with pytest.raises(DataError, match=r"cannot read image .*fake\.png"):
        read_image(tmp_path / "fake.png")
