"""`medtransfer predict RUN --data FOLDER` on a plain folder of images (no CSV): PNG and DICOM, with and without a
suffix, in subfolders."""

from __future__ import annotations

import numpy as np
import pandas as pd
import yaml
from PIL import Image
from pydicom.dataset import FileDataset, FileMetaDataset
from pydicom.uid import ExplicitVRLittleEndian, SecondaryCaptureImageStorage, generate_uid


def dicom(path, size: int = 24) -> None:
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
    ds.PixelData = (np.arange(size * size, dtype=np.uint16) * 7).tobytes()
    ds.save_as(path, enforce_file_format=True)


def test_predict_on_a_plain_folder_of_png_and_dicom(tmp_path, cli, capsys):
    config = tmp_path / "train.yaml"
    config.write_text(
        yaml.safe_dump(
            {
                "task": "binary",
                "data": {"path": "synthetic:chest,n=60", "image_size": 16},
                "model": {"backbone": "tiny"},
                "train": {"epochs": 1, "batch_size": 16},
            }
        )
    )
    run_dir = tmp_path / "run"
    assert cli(["train", str(config), "--out", str(run_dir)]) == 0

    folder = tmp_path / "new_patients"
    (folder / "ward2").mkdir(parents=True)
    rng = np.random.default_rng(0)
    for name in ("b.png", "a.png", "ward2/c.png"):
        Image.fromarray((rng.random((24, 24)) * 255).astype(np.uint8)).save(folder / name)
    dicom(folder / "ward2" / "d.dcm")
    dicom(folder / "ward2" / "1.2.840.10008.1")  # named by its UID, found by the DICM preamble
    (folder / "ward2" / "notes.txt").write_text("not an image")
    capsys.readouterr()

    out = tmp_path / "pred.csv"
    assert cli(["predict", str(run_dir), "--data", str(folder), "--out", str(out)]) == 0
    assert "5 predictions" in capsys.readouterr().out
    table = pd.read_csv(out, dtype={"image_id": str})
    assert list(table["image_id"]) == ["a.png", "b.png", "ward2/1.2.840.10008.1", "ward2/c.png", "ward2/d.dcm"]
    assert "prob_lesion" in table.columns and table["prob_lesion"].between(0, 1).all()
