"""``medtransfer export``: a finished run as one ONNX or TorchScript file that scores raw 8-bit images, with a JSON
sidecar that says what goes in and what comes out.

The graph does to a batch what ``predict`` does to an image once it is decoded to 8 bits, without test-time
augmentation:

1. **input** ``images``: uint8 ``(N, C, H, W)``, any ``N >= 1`` and any ``H x W``, ``C`` = 1 (grey) or 3 (RGB): the
   pixels as the readers decode them (alpha dropped, a palette expanded; a 16-bit PNG or a DICOM min-max scaled per
   image to 0-255, :func:`medtransfer.data.cache.to_uint8`);
2. channels: grey or RGB brought to the model's channels (:class:`~medtransfer.data.preprocess.ConformChannels`);
3. resize to the run's ``data.image_size`` by its ``data.resize`` mode, bit for bit PIL's
   (:class:`~medtransfer.data.preprocess.ResizeUint8`); a run trained at native size (``image_size: null``) has none;
4. ``/ 255``, then ``(x - mean) / std`` per channel, the network, and the task kind's ``scores``: the calibration
   temperature and the output link (sigmoid per label, softmax over classes; a regression's standardised output
   mapped back to the target's unit);
5. **output** ``scores``: float32 ``(N, K)``, the columns of ``predict``'s CSV in order.

Before the file is kept it is loaded back (onnxruntime, ``torch.jit.load``) and run on a batch of another size, shape
and channel count than the one it was traced with; its scores must match the PyTorch module's to 1e-4 (of the values'
size for a regression). The TorchScript file is traced on the CPU (a device picked there would be frozen into it).

Example:
    >>> side = export_run("runs/chest", "chest.onnx", "onnx")          # doctest: +SKIP
    >>> side["input"]["name"], side["output"]["columns"]               # doctest: +SKIP
    ('images', ['prob_lesion'])
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import os
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import PIL
import torch
from safetensors import safe_open
from torch import nn

from medtransfer import __version__
from medtransfer.data.preprocess import ConformChannels, ResizeUint8
from medtransfer.errors import UserError, WorkFailed
from medtransfer.io import atomic_write, atomic_write_text
from medtransfer.tasks.base import task_kind
from medtransfer.training.inference import TrainedModel, load_run

log = logging.getLogger(__name__)

FORMATS = ("onnx", "torchscript")
INPUT_NAME, OUTPUT_NAME = "images", "scores"
ONNX_OPSET = 18
CHECK_TOLERANCE = 1e-4
INSTALL_HINT = "pip install -e '.[export]' (or make setup, whose EXTRAS include export)"
SUPPORTED = "2-D classification (binary, multiclass, multilabel) and regression runs"


class ExportedModel(nn.Module):
    """A trained run with its preprocessing and output link: uint8 ``(N, C, H, W)`` images → ``(N, K)`` scores.

    ``vertical_first``: the resize's pass order (``None``: the installed Pillow's, which ``predict`` uses).
    """

    def __init__(self, tm: TrainedModel, vertical_first: bool | None = None) -> None:
        super().__init__()
        self.conform = ConformChannels(tm.in_chans)
        self.resize = ResizeUint8(tm.image_size, tm.cfg.data.resize, vertical_first) if tm.image_size else None
        self.model = tm.model.eval()
        norm = tm.model.normalization
        # the same float32 numbers Batches subtracts and divides by
        self.register_buffer("mean", torch.tensor(norm["mean"], dtype=torch.float32).view(1, -1, 1, 1))
        self.register_buffer("std", torch.tensor(norm["std"], dtype=torch.float32).view(1, -1, 1, 1))
        self.task = tm.task  # the kind's runtime object: temperature and link, or a regression's target scale

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        x = self.conform(images.to(torch.float64))
        if self.resize is not None:
            x = self.resize(x)
        x = (x.to(torch.float32) / 255.0 - self.mean) / self.std
        return self.task.scores(self.model(x))


def sidecar_path(out: str | Path) -> Path:
    """The sidecar of an exported file: its name with ``.json`` appended (``chest.onnx`` → ``chest.onnx.json``)."""
    out = Path(out)
    return out.with_name(out.name + ".json")


def check_export_out(out: str | Path, force: bool) -> Path:
    """The ``--out`` rule of ``export`` for the file and its sidecar, checked before any work: neither is a folder
    or replaced without ``force``, and the folder they go to can be written (it is made when missing)."""
    out = Path(out).expanduser()
    for path, what in ((out, "--out"), (sidecar_path(out), "the sidecar of --out,")):
        if path.is_dir():
            raise UserError(f"{what} {path} is a folder; export writes one file: name it, e.g. {path}/model.onnx")
        if path.exists() and not force:
            raise UserError(f"{what} {path} exists; pass --force to replace it, or choose another name")
    existing = next((p for p in out.parents if p.exists()), None)
    if existing is not None and (not existing.is_dir() or not os.access(existing, os.W_OK)):
        why = "is a file, not a folder" if not existing.is_dir() else "is not writable"
        raise UserError(f"cannot write --out {out}: {existing} {why}; choose another --out")
    return out


def load_exportable(run_dir: str | Path) -> TrainedModel:
    """The run in ``run_dir``, refused with a one-line :class:`UserError` when it is not a run or not a 2-D model."""
    run = Path(run_dir)
    weights = run / "model.safetensors"
    if not weights.is_file():
        raise UserError(
            f"{run} is not a finished run folder (no model.safetensors): give a folder written by `medtransfer train` "
            "or a study's trial folder (runs/STUDY/trials/ARM/nN-sS)"
        )
    with safe_open(str(weights), "pt") as f:
        task = (f.metadata() or {}).get("task")
    if task is not None:
        kind = task_kind(task)
        if kind.family != "images" or not kind.supervised:
            raise UserError(f"{run} holds a {task} model; export supports {SUPPORTED}")
    return load_run(run)


def export_run(run_dir: str | Path, out: str | Path, format: str, force: bool = False) -> dict[str, Any]:
    """Write the run in ``run_dir`` as ``format`` (``onnx`` or ``torchscript``) to ``out`` and its sidecar
    ``out + ".json"``; returns the sidecar. Every input is checked before anything is read or written, and nothing
    is written when the exported file fails its check.

    Example:
        >>> export_run("runs/chest", "chest.pt", "torchscript")["sha256"]   # doctest: +SKIP
        '3f1c…'
    """
    if format not in FORMATS:
        raise UserError(f"--format must be one of {list(FORMATS)}, got '{format}'")
    if format == "onnx":
        _require_onnx()
    out = check_export_out(out, force)
    return export_model(load_exportable(run_dir), out, format)


def export_model(tm: TrainedModel, out: Path, format: str) -> dict[str, Any]:
    """Export a loaded run (:func:`export_run` without its checks); returns the sidecar it wrote beside ``out``."""
    module = ExportedModel(tm).eval()
    trace, check = _example_batches(tm)
    save, load = (_save_onnx, _load_onnx) if format == "onnx" else (_save_torchscript, _load_torchscript)
    side: dict[str, Any] = {}

    def write(tmp: Path) -> None:
        shape = "x".join(str(d) for d in check.shape)
        with torch.no_grad(), warnings.catch_warnings():
            warnings.simplefilter("ignore")  # tracer, exporter and deprecation chatter; the check below is the test
            save(module, trace, tmp)
            expected = module(torch.from_numpy(check)).numpy()
            try:
                got = load(tmp)(check)
            except Exception as e:  # a dimension frozen into the graph fails here, in the runtime's own words
                first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
                raise WorkFailed(f"the exported {format} file fails on a {shape} check batch: {first}") from e
        diff = float(np.max(np.abs(got - expected)))
        # probabilities to 1e-4; a regression's values (in the target's unit: months, mm) to 1e-4 of their size
        tolerance = CHECK_TOLERANCE * max(1.0, float(np.max(np.abs(expected))))
        if not diff <= tolerance:
            raise WorkFailed(
                f"the exported {format} file does not reproduce the model: max |difference| {diff:.3g} > "
                f"{tolerance:.3g} on a {shape} check batch; nothing was written"
            )
        side.update(sidecar(tm, format, out, tmp, {"max_abs_diff": diff, "tolerance": tolerance}, module))
        atomic_write_text(sidecar_path(out), json.dumps(side, indent=2))

    atomic_write(out, write)
    log.debug("exported %s as %s to %s (check: max |Δ| %.2g)", tm.run_dir, format, out, side["check"]["max_abs_diff"])
    return side


def sidecar(
    tm: TrainedModel, format: str, out: Path, written: Path, check: dict[str, float], module: ExportedModel
) -> dict[str, Any]:
    """What a user of the exported file needs without medtransfer: the input and output contract, the labels, the
    task, the operating threshold, the preprocessing constants and where the file came from."""
    kind = tm.task.kind
    metrics = _read_metrics(tm.run_dir)
    thresholds = metrics.get("thresholds") or None
    size = tm.image_size
    link = ("softmax" if kind.one_hot else "sigmoid") if kind.probabilities else "none (values in the target's unit)"
    return {
        "format": format,
        "file": out.name,
        "sha256": _sha256(written),
        "input": _input_contract(tm),
        "output": {
            "name": OUTPUT_NAME,
            "dtype": "float32",
            "shape": ["batch", len(tm.label_names)],
            "columns": list(kind.prediction_columns(tm.label_names)),
            "activation": link,
        },
        "task": kind.name,
        "label_names": list(tm.label_names),
        "threshold": _operating_threshold(metrics),
        "thresholds": thresholds,
        "threshold_rule": metrics.get("threshold_rule"),
        "temperature": getattr(tm.task, "temperature", None),
        "image_size": size,
        "resize": tm.cfg.data.resize if size else None,
        "resize_vertical_first": module.resize.vertical_first if module.resize is not None else None,
        "in_chans": tm.in_chans,
        "mean": list(tm.model.normalization["mean"]),
        "std": list(tm.model.normalization["std"]),
        "tta": {
            "exported": False,
            "predict_default": tm.cfg.eval.tta,
            "matches": "medtransfer predict --tta 0 --device cpu",
        },
        "backbone": tm.cfg.model.backbone,
        "run": str(Path(tm.run_dir).resolve()),
        "medtransfer_version": __version__,
        "torch_version": torch.__version__,
        "pillow_version": PIL.__version__,  # whose resize the graph reproduces
        "onnx_opset": ONNX_OPSET if format == "onnx" else None,
        "check": check,
    }


def _input_contract(tm: TrainedModel) -> dict[str, Any]:
    """The sidecar's ``input``: what the graph takes (uint8 NCHW, grey or RGB, any size) and what it does first."""
    size = tm.image_size
    return {
        "name": INPUT_NAME,
        "dtype": "uint8",
        "shape": ["batch", "channels", "height", "width"],
        "channels": [1, 3],
        "range": [0, 255],
        "layout": "NCHW",
        "description": "8-bit pixels as decoded (alpha dropped, palette expanded; 16-bit PNG and DICOM min-max "
        "scaled per image to 0-255), before any resize: the graph converts grey/RGB to the model's "
        f"{tm.in_chans} channel(s), resizes "
        + (f"to {size}x{size} ({tm.cfg.data.resize}, PIL bilinear)" if size else "nothing (native size)")
        + ", scales to [0, 1] and normalises",
    }


def _operating_threshold(metrics: dict) -> float | None:
    """The operating point's threshold of a binary run (``metrics.json``), else the one validation threshold; a
    multi-label run's summary point is a macro mean, with no threshold."""
    thresholds = metrics.get("thresholds") or None
    point = metrics.get("operating_point")
    threshold = _number(point.get("threshold")) if isinstance(point, dict) else None
    if threshold is None and thresholds and len(thresholds) == 1:
        threshold = _number(next(iter(thresholds.values())))
    return threshold


# --------------------------------------------------------------------------- formats
def _require_onnx() -> None:
    try:  # optional extra: only ONNX export needs these
        import onnx  # noqa: F401
        import onnxruntime  # noqa: F401
    except ImportError as err:
        raise UserError(f"--format onnx needs onnx and onnxruntime ({err.name} is missing): {INSTALL_HINT}") from None


def _save_onnx(module: nn.Module, example: np.ndarray, path: Path) -> None:
    axes = {INPUT_NAME: {0: "batch", 1: "channels", 2: "height", 3: "width"}, OUTPUT_NAME: {0: "batch"}}
    # the TorchScript-based exporter: about 5x faster to export here than dynamo=True
    torch.onnx.export(
        module,
        (torch.from_numpy(example),),
        str(path),
        input_names=[INPUT_NAME],
        output_names=[OUTPUT_NAME],
        dynamic_axes=axes,
        opset_version=ONNX_OPSET,
        dynamo=False,
    )


def _load_onnx(path: Path) -> Callable[[np.ndarray], np.ndarray]:
    import onnxruntime  # optional extra, checked by _require_onnx

    session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    return lambda x: session.run([OUTPUT_NAME], {INPUT_NAME: x})[0]


def _save_torchscript(module: nn.Module, example: np.ndarray, path: Path) -> None:
    traced = torch.jit.trace(module, (torch.from_numpy(example),), check_trace=False)
    torch.jit.save(traced, str(path))


def _load_torchscript(path: Path) -> Callable[[np.ndarray], np.ndarray]:
    loaded = torch.jit.load(str(path), map_location="cpu")
    return lambda x: loaded(torch.from_numpy(x)).detach().numpy()


# --------------------------------------------------------------------------- helpers
def _example_batches(tm: TrainedModel) -> tuple[np.ndarray, np.ndarray]:
    """A batch to trace with and a check batch of another size, shape and channel count (grey for an RGB model, RGB
    for a grey one), so that a dimension frozen into the graph shows."""
    s = tm.image_size or 32
    rng = np.random.default_rng(0)
    trace = rng.integers(0, 256, (2, tm.in_chans, s + 5, s + 3), dtype=np.uint8)
    check = rng.integers(0, 256, (3, 4 - tm.in_chans, 2 * s + 1, s - 3 if s > 8 else s + 7), dtype=np.uint8)
    return trace, check


def _read_metrics(run: Path) -> dict[str, Any]:
    try:
        return json.loads((Path(run) / "metrics.json").read_text())
    except (OSError, ValueError):
        return {}


def _number(value: Any) -> float | None:
    return float(value) if isinstance(value, int | float) and math.isfinite(value) else None


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()
