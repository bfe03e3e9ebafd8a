"""`medtransfer predict RUN --data FOLDER` on a plain folder of images (no CSV): PNG and DICOM, with and without a
suffix, in subfolders."""

from __future__ import annotations

import numpy as np
import pandas as pd
import yaml
from PIL import Image


def test_predict_on_a_plain_folder_of_png_and_dicom(tmp_path, cli, capsys, dicom_file):
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
    dicom_file(folder / "ward2" / "d.dcm", size=24, step=7)
    dicom_file(folder / "ward2" / "1.2.840.10008.1", size=24, step=7)  # named by its UID, found by the DICM preamble
    (folder / "ward2" / "notes.txt").write_text("not an image")
    capsys.readouterr()

    out = tmp_path / "pred.csv"
    assert cli(["predict", str(run_dir), "--data", str(folder), "--out", str(out)]) == 0
    assert "5 predictions" in capsys.readouterr().out
    table = pd.read_csv(out, dtype={"image_id": str})
    assert list(table["image_id"]) == ["a.png", "b.png", "ward2/1.2.840.10008.1", "ward2/c.png", "ward2/d.dcm"]
    assert "prob_lesion" in table.columns and table["prob_lesion"].between(0, 1).all()
