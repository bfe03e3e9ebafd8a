"""The study report's gallery of Grad-CAM maps: drawn from the kept models at the smallest N, shown with a caption
that names the arm, N, seed and method; absent, and nothing fails, when no model was kept."""

from __future__ import annotations

import json

import pytest

from medtransfer.studies.report import report_study
from medtransfer.studies.runner import run_study

pytestmark = pytest.mark.usefixtures("_one_thread")  # tests/conftest.py


def test_the_report_shows_the_gallery_and_drops_it_without_models(tmp_path, study_config):
    out = tmp_path / "s"
    run_study(study_config(n=[12], seeds=[0], strategies=["finetune"]), out, progress=False)
    entry = json.loads((out / "figures" / "gallery.json").read_text())[0]
    assert (out / entry["file"]).is_file() and entry["trials"] == [
        {"arm": "scratch/finetune", "n_label": "12", "seed": 0, "method": "gradcam"}
    ]
    md = (out / "report.md").read_text()
    assert "## Where the models look" in md and "](figures/gallery.png)" in md
    caption = entry["caption"]
    assert "scratch/finetune" in caption and "N = 12, seed 0" in caption and "Grad-CAM" in caption
    assert "most confidently correct" in caption and "most confidently wrong" in caption and caption in md
    html = (out / "report.html").read_text()
    assert html.count("data:image/png;base64,") >= 2  # the gallery is inlined like the other figures
    png = (out / entry["file"]).read_bytes()
    report_study(out)  # the same trials, the same gallery
    assert (out / entry["file"]).read_bytes() == png

    # no kept model (and no earlier gallery): no section, and the report is still written
    for p in (out / "trials").rglob("model.safetensors"):
        p.unlink()
    for name in ("gallery.json", "gallery.png"):
        (out / "figures" / name).unlink()
    report_study(out)
    assert "Where the models look" not in (out / "report.md").read_text()
    assert not (out / "figures" / "gallery.json").exists()
