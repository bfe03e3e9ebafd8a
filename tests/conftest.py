"""Shared fixtures. Real data comes from $MEDTRANSFER_DATA or ../shared/data beside the checkout; tests that
need it skip cleanly when it is absent."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest

REPO = Path(__file__).resolve().parents[1]


def _shared_data() -> Path | None:
    env = os.environ.get("MEDTRANSFER_DATA")
    for cand in ([Path(env)] if env else []) + [REPO.parent / "shared" / "data"]:
        if cand.is_dir():
            return cand
    return None


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """The real-data folder; skips the test when it is not there."""
    path = _shared_data()
    if path is None:
        pytest.skip("real data not found (set MEDTRANSFER_DATA or put shared/data beside the checkout)")
    return path


@pytest.fixture
def rng() -> np.random.Generator:
    return np.random.default_rng(0)


@pytest.fixture(autouse=True)
def _isolated_cache(tmp_path_factory, monkeypatch):
    """Every test writes its decoded-image cache and source catalogue under a temporary folder."""
    monkeypatch.setenv("MEDTRANSFER_CACHE", str(tmp_path_factory.getbasetemp() / "cache"))
    monkeypatch.setenv("MEDTRANSFER_SOURCES", str(tmp_path_factory.getbasetemp() / "sources"))


def write_synthetic_msd(root, n, seed, classes=("background", "blob", "ball"), num_objs=3, rad_max=8, noise_max=0.3):
    """An MSD-format folder of ``n`` 32³ MRI-like volumes from MONAI's ``create_test_image_3d``; returns
    ``(root, present)`` where ``present[i]`` lists the foreground class names case ``i`` contains."""
    import json

    import nibabel as nib
    from monai.data import create_test_image_3d

    (root / "imagesTr").mkdir(parents=True)
    (root / "labelsTr").mkdir()
    entries, present = [], []
    for i in range(n):
        img, seg = create_test_image_3d(
            32,
            32,
            32,
            num_objs=num_objs,
            rad_max=rad_max,
            num_seg_classes=len(classes) - 1,
            noise_max=noise_max,
            random_state=np.random.RandomState(seed * 100 + i),
        )
        name = f"case_{i:03d}.nii.gz"
        nib.save(nib.Nifti1Image(img.astype(np.float32), np.eye(4)), root / "imagesTr" / name)
        nib.save(nib.Nifti1Image(seg.astype(np.uint8), np.eye(4)), root / "labelsTr" / name)
        entries.append({"image": f"./imagesTr/{name}", "label": f"./labelsTr/{name}"})
        present.append([classes[k] for k in np.unique(seg).astype(int) if k > 0])
    meta = {
        "name": "toy",
        "modality": {"0": "MRI"},
        "labels": {str(i): c for i, c in enumerate(classes)},
        "training": entries,
    }
    (root / "dataset.json").write_text(json.dumps(meta))
    return root, present


@pytest.fixture(scope="session")
def synthetic_msd():
    """:func:`write_synthetic_msd`, for tests in any folder."""
    return write_synthetic_msd


def run_cli(argv: list[str]) -> int:
    """``medtransfer ARGV`` in this process; its exit code (0 when it returns)."""
    from medtransfer.cli import main

    try:
        main(argv)
    except SystemExit as e:
        return int(e.code or 0)
    return 0


@pytest.fixture(scope="session")
def cli():
    """:func:`run_cli`, for tests in any folder."""
    return run_cli


def write_dicom(path: Path, size: int = 12, step: int = 16) -> Path:
    """A tiny 12-bit MONOCHROME2 DICOM (``DICM`` preamble) of a ramp ``arange * step``, whatever the file's name."""
    from pydicom.dataset import FileDataset, FileMetaDataset
    from pydicom.uid import ExplicitVRLittleEndian, SecondaryCaptureImageStorage, generate_uid

    path.parent.mkdir(parents=True, exist_ok=True)
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = SecondaryCaptureImageStorage
    meta.MediaStorageSOPInstanceUID = generate_uid()
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds = FileDataset(str(path), {}, file_meta=meta, preamble=b"\0" * 128)
    ds.SOPClassUID, ds.SOPInstanceUID = meta.MediaStorageSOPClassUID, meta.MediaStorageSOPInstanceUID
    ds.Modality = "CR"
    ds.Rows = ds.Columns = size
    ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 12, 11, 0
    ds.PixelData = (np.arange(size * size, dtype=np.uint16) * step).tobytes()
    ds.save_as(path, enforce_file_format=True)
    return path


@pytest.fixture
def dicom_file():
    """:func:`write_dicom`, for tests in any folder."""
    return write_dicom


@pytest.fixture(scope="module")
def _one_thread():
    """Tiny CPU tensors run faster on one thread than on two contended ones; restored after the module. A module
    opts in with ``pytestmark = pytest.mark.usefixtures("_one_thread")``."""
    import torch  # here, not at the top: most test modules never need torch in this process

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)
