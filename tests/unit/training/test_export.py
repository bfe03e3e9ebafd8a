"""`medtransfer export`: the ONNX and TorchScript files score raw 8-bit images of any size as `predict` does (to
1e-4), with the resize, channels, normalisation, temperature and link inside the graph; the sidecar says so."""

from __future__ import annotations

import hashlib
import json

import numpy as np
import pandas as pd
import pytest
import torch
import yaml
from PIL import Image

from medtransfer.config import Config
from medtransfer.data.cache import resize_uint8
from medtransfer.models.backbones import build_model
from medtransfer.tasks.base import task_kind
from medtransfer.training.batches import Batches
from medtransfer.training.export import export_model, export_run, sidecar_path
from medtransfer.training.inference import TrainedModel
from medtransfer.training.loop import predict

RUNS = {
    # 1 channel, interpolate: a colour image is read as grey by its luma
    "binary": {"data": {"path": "synthetic:chest,n=40,size=32", "image_size": 24}},
    # 3 channels, pad, a calibration temperature: a grey image is copied to RGB
    "multiclass": {
        "data": {"path": "synthetic:both,n=40,size=32", "image_size": 20, "channels": 3, "resize": "pad"},
        "eval": {"calibrate": "temperature"},
    },
}
# raw images of many sizes: grey, colour RGB, grey content stored as RGB; up- and downsized, tall and wide
IMAGES = {
    "a.png": (24, 24, "L"),
    "b.png": (40, 17, "L"),
    "b2.png": (40, 17, "L"),  # same size as b: scored as one batch of two
    "c.png": (13, 50, "RGB"),
    "d.png": (64, 64, "grey-RGB"),
    "e.png": (90, 30, "L"),
}


def _raw(path) -> np.ndarray:
    """The image as the readers decode it, before any resize: (C, H, W) uint8."""
    arr = np.asarray(Image.open(path))
    return arr[None] if arr.ndim == 2 else np.moveaxis(arr, -1, 0)


@pytest.fixture(scope="module")
def trained(tmp_path_factory, cli):
    """Two tiny runs (binary, multiclass), a folder of raw images and `predict`'s scores of them."""
    root = tmp_path_factory.mktemp("export")
    folder = root / "images"
    folder.mkdir()
    rng = np.random.default_rng(0)
    for name, (h, w, mode) in IMAGES.items():
        grey = rng.integers(0, 256, (h, w), dtype=np.uint8)
        if mode == "L":
            Image.fromarray(grey).save(folder / name)
        elif mode == "RGB":
            Image.fromarray(rng.integers(0, 256, (h, w, 3), dtype=np.uint8)).save(folder / name)
        else:
            Image.fromarray(np.repeat(grey[..., None], 3, axis=2)).save(folder / name)
    runs = {}
    with pytest.MonkeyPatch.context() as mp:  # the autouse cache fixture is per test; this fixture outlives it
        mp.setenv("MEDTRANSFER_CACHE", str(root / "cache"))
        mp.setenv("MEDTRANSFER_SOURCES", str(root / "sources"))
        for task, extra in RUNS.items():
            cfg = {"model": {"backbone": "tiny"}, "train": {"epochs": 1, "batch_size": 16}, **extra}
            (root / f"{task}.yaml").write_text(yaml.safe_dump(cfg))
            run = root / task
            assert cli(["train", str(root / f"{task}.yaml"), "--out", str(run)]) == 0
            csv = root / f"{task}.csv"
            cmd = ["predict", str(run), "--data", str(folder), "--out", str(csv), "--tta", "0", "--device", "cpu"]
            assert cli(cmd) == 0
            runs[task] = (run, pd.read_csv(csv, dtype={"image_id": str}).set_index("image_id"))
    return root, folder, runs


@pytest.fixture(scope="module")
def exported(trained, cli):
    """Each run in each format, once: ``{(task, fmt): path}`` (the binary TorchScript one through the command)."""
    root, _, runs = trained
    paths = {}
    for task, (run, _) in runs.items():
        for fmt in ("onnx", "torchscript"):
            out = paths[task, fmt] = root / "exported" / f"{task}.{fmt}"
            if (task, fmt) == ("binary", "torchscript"):
                assert cli(["export", str(run), "--format", fmt, "--out", str(out)]) == 0
            else:
                export_run(run, out, fmt)
    return paths


def _scorer(fmt: str, path):
    """The exported file loaded by its own runtime: ``uint8 array -> scores``."""
    if fmt == "onnx":
        import onnxruntime

        session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
        return lambda x: session.run(["scores"], {"images": x})[0]
    with pytest.warns(FutureWarning):  # torch 2.14 deprecates TorchScript; loading still works
        loaded = torch.jit.load(str(path))
    return lambda x: loaded(torch.from_numpy(x)).detach().numpy()


@pytest.mark.parametrize("fmt", ["onnx", "torchscript"])
@pytest.mark.parametrize("task", list(RUNS))
def test_the_exported_file_scores_raw_images_as_predict_does(trained, exported, task, fmt):
    _, folder, runs = trained
    expected = runs[task][1]
    columns = json.loads(sidecar_path(exported[task, fmt]).read_text())["output"]["columns"]
    assert columns == [c for c in expected.columns if c != "patient_id"]
    score = _scorer(fmt, exported[task, fmt])
    by_shape: dict[tuple, list[str]] = {}
    for name in IMAGES:
        by_shape.setdefault(_raw(folder / name).shape, []).append(name)
    worst = 0.0
    for names in by_shape.values():  # images of one shape go in one batch
        got = score(np.stack([_raw(folder / n) for n in names]))
        assert got.dtype == np.float32 and got.shape == (len(names), len(columns))
        worst = max(worst, float(np.abs(got - expected.loc[names, columns].to_numpy()).max()))
    print(f"{task} {fmt}: max |Δp| = {worst:.2e}")
    assert worst <= 1e-4


def test_the_sidecar_describes_the_contract(trained, exported):
    _, _, runs = trained
    for (task, fmt), out in exported.items():
        run = runs[task][0]
        side = json.loads(sidecar_path(out).read_text())
        metrics = json.loads((run / "metrics.json").read_text())
        cfg = yaml.safe_load((run / "config.yaml").read_text())
        assert side["sha256"] == hashlib.sha256(out.read_bytes()).hexdigest() and side["file"] == out.name
        assert side["format"] == fmt and side["task"] == task and side["run"] == str(run.resolve())
        assert side["input"] | {"description": None} == {
            "name": "images",
            "dtype": "uint8",
            "shape": ["batch", "channels", "height", "width"],
            "channels": [1, 3],
            "range": [0, 255],
            "layout": "NCHW",
            "description": None,
        }
        assert side["output"]["name"] == "scores" and side["output"]["shape"] == ["batch", len(side["label_names"])]
        assert side["image_size"] == cfg["data"]["image_size"] and side["resize"] == cfg["data"]["resize"]
        assert side["tta"] == {
            "exported": False,
            "predict_default": 0,
            "matches": "medtransfer predict --tta 0 --device cpu",
        }
        assert len(side["mean"]) == len(side["std"]) == side["in_chans"]
        assert side["check"]["max_abs_diff"] <= 1e-4
        assert side["onnx_opset"] == (18 if fmt == "onnx" else None)
        if task == "binary":
            assert side["output"]["activation"] == "sigmoid" and side["temperature"] == 1.0
            assert side["threshold"] == metrics["operating_point"]["threshold"]
            assert side["thresholds"] == metrics["thresholds"]
        else:
            assert side["output"]["activation"] == "softmax" and side["label_names"] == ["chest", "hand"]
            assert side["temperature"] == metrics["calibrated"]["temperature"] != 1.0
            assert side["threshold"] is None and side["thresholds"] is None


@pytest.mark.parametrize(
    ("kind", "state", "fmt"),
    [("regression", {"center": [10.0, -2.0], "scale": [3.0, 0.5]}, "onnx"), ("multilabel", {}, "torchscript")],
)
def test_regression_and_multilabel_links_are_folded_in(kind, state, fmt, tmp_path):
    """No training needed: a random tiny model of the kind, scored by the loop's ``predict`` on the cache's images
    and by the exported file on the raw ones."""
    torch.manual_seed(0)
    model = build_model("tiny", 2, 1).eval()
    model.normalization = {"mean": [0.4], "std": [0.3]}
    cfg = Config()
    tm = TrainedModel(model, task_kind(kind).restore(2, state), cfg, ["u", "v"], 1, 24, None, tmp_path)
    raw = np.random.default_rng(0).integers(0, 256, (3, 1, 37, 29), dtype=np.uint8)
    cached = np.stack([resize_uint8(im, 24, cfg.data.resize) for im in raw])
    batches = Batches(cached, np.zeros((3, 2), np.float32), np.arange(3), 8, [0.4], [0.3], torch.device("cpu"))
    expected = predict(model, tm.task, batches)
    side = export_model(tm, tmp_path / f"m.{fmt}", fmt)
    got = _scorer(fmt, tmp_path / f"m.{fmt}")(raw)
    assert np.abs(got - expected).max() <= 1e-4
    assert side["task"] == kind and side["threshold"] is None
    if kind == "regression":
        assert side["output"]["activation"].startswith("none") and side["temperature"] is None
        assert np.abs(got).max() > 1.5  # in the target's unit, not standardised
    else:
        assert side["output"]["activation"] == "sigmoid" and side["output"]["columns"] == ["prob_u", "prob_v"]
