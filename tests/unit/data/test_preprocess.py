"""The exportable preprocessing reproduces the data layer bit for bit: PIL's resize (both modes, both pass orders,
up and down, any aspect) and the colour rule."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
import torch
from PIL import Image

from medtransfer.data.cache import resize_uint8
from medtransfer.data.colour import conform
from medtransfer.data.preprocess import ConformChannels, ResizeUint8, pillow_vertical_first

SHAPES = [(28, 28), (24, 24), (100, 37), (37, 100), (300, 17), (17, 300), (64, 1), (1, 64), (3, 5), (65, 63), (81, 51)]


@pytest.mark.parametrize("mode", ["interpolate", "pad"])
def test_resize_is_bit_identical_to_the_cache(mode):
    rng, size = np.random.default_rng(0), 24
    shapes = SHAPES + [tuple(int(v) for v in rng.integers(1, 160, 2)) for _ in range(6)]
    resize = ResizeUint8(size, mode)
    for h, w in shapes:
        img = rng.integers(0, 256, (2, 3, h, w), dtype=np.uint8)
        expected = np.stack([resize_uint8(im, size, mode) for im in img])
        got = resize(torch.from_numpy(img).double()).numpy()
        assert got.shape == expected.shape and np.array_equal(got, expected), (mode, h, w)


def test_the_pass_order_is_the_installed_pillows():
    """Pillow 13 resizes vertically first when the height shrinks by more than twice the width; the two orders round
    differently between the passes, and the probe tells which one this Pillow uses."""
    img = np.random.default_rng(1).integers(0, 256, (1, 1, 90, 30), dtype=np.uint8)
    x = torch.from_numpy(img).double()
    ours = ResizeUint8(24, vertical_first=pillow_vertical_first())(x)[0, 0].numpy()
    other = ResizeUint8(24, vertical_first=not pillow_vertical_first())(x)[0, 0].numpy()
    pil = np.asarray(Image.fromarray(img[0, 0]).resize((24, 24), Image.BILINEAR))
    assert np.array_equal(ours, pil) and not np.array_equal(other, pil)


def test_channels_follow_the_colour_rule():
    rng = np.random.default_rng(0)
    rgb = rng.integers(0, 256, (3, 3, 9, 7), dtype=np.uint8)
    grey = rgb[:, :1]
    for channels in (1, 3):
        conformed = ConformChannels(channels)
        for batch in (rgb, grey):
            expected = np.stack([conform(im, "RGB" if im.shape[0] == 3 else "L", channels)[0] for im in batch])
            assert np.array_equal(conformed(torch.from_numpy(batch).double()).numpy(), expected)


class _Both(torch.nn.Module):
    """Grey, then each resize mode: one graph to export."""

    def __init__(self) -> None:
        super().__init__()
        self.grey = ConformChannels(1)
        self.interpolate, self.pad = ResizeUint8(24, "interpolate"), ResizeUint8(24, "pad")

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        g = self.grey(x.to(torch.float64))
        return self.interpolate(g), self.pad(g)


@pytest.mark.parametrize("fmt", ["onnx", "torchscript"])
def test_exported_graphs_stay_exact_at_every_shape(fmt, tmp_path):
    """Traced once at one shape, the graph must rebuild PIL's coefficients for each new shape, in float64 (a 0-dim
    tensor or a frozen size would show here as off-by-one pixels)."""
    trace = torch.zeros(1, 3, 30, 30, dtype=torch.uint8)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # tracer and deprecation chatter
        if fmt == "onnx":
            pytest.importorskip("onnxruntime")
            import onnxruntime

            axes = {"x": {0: "n", 1: "c", 2: "h", 3: "w"}}
            path = str(tmp_path / "p.onnx")
            torch.onnx.export(_Both(), (trace,), path, input_names=["x"], dynamic_axes=axes, dynamo=False)
            session = onnxruntime.InferenceSession(path, providers=["CPUExecutionProvider"])
            run = lambda x: session.run(None, {"x": x})  # noqa: E731
        else:
            traced = torch.jit.trace(_Both(), (trace,))
            run = lambda x: [t.numpy() for t in traced(torch.from_numpy(x))]  # noqa: E731
        rng = np.random.default_rng(2)
        for h, w in SHAPES:
            img = rng.integers(0, 256, (2, 3, h, w), dtype=np.uint8)
            grey = np.stack([conform(im, "RGB", 1)[0] for im in img])
            for got, mode in zip(run(img), ("interpolate", "pad"), strict=True):
                expected = np.stack([resize_uint8(g, 24, mode) for g in grey])
                assert np.array_equal(got, expected), (fmt, mode, h, w)
