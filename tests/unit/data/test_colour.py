"""Mixed colour modes in one folder: every image is read with the dataset's channels (data.channels)."""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from medtransfer.config import ConfigError, DataConfig
from medtransfer.data.cache import cache_key, cached_images
from medtransfer.data.colour import conform, decide_channels, describe_conversions
from medtransfer.data.inspect import inspect_dataset
from medtransfer.data.readers import header_mode, read_pixels
from medtransfer.data.sources.base import SourceOptions, load_dataset
from medtransfer.errors import DataError

H, W = 12, 10


def grey(k: int) -> np.ndarray:
    """A grey image with some structure, different per ``k``."""
    arr = np.full((H, W), (30 + 20 * k) % 256, np.uint8)
    arr[: H // 2] = (200 - 10 * k) % 256
    return arr


def mixed_folder(root: Path, colour: int = 0, n_grey: int = 4) -> Path:
    """Greyscale PNGs, RGB JPEGs of grey content, one RGBA PNG, one palette PNG (both grey content) and ``colour``
    truly colour RGB PNGs, listed in labels.csv with alternating 0/1 labels."""
    img = root / "images"
    img.mkdir(parents=True)
    names = []
    for k in range(n_grey):
        Image.fromarray(grey(k)).save(img / f"g{k}.png")
        names.append(f"g{k}.png")
    for k in range(2):
        Image.fromarray(np.stack([grey(k + 5)] * 3, axis=-1)).save(img / f"rgb{k}.jpg", quality=95)
        names.append(f"rgb{k}.jpg")
    alpha = np.full((H, W, 1), 128, np.uint8)
    Image.fromarray(np.concatenate([np.stack([grey(7)] * 3, axis=-1), alpha], axis=-1)).save(img / "rgba.png")
    Image.fromarray(grey(8)).convert("P").save(img / "pal.png")
    names += ["rgba.png", "pal.png"]
    rng = np.random.default_rng(0)
    for k in range(colour):
        Image.fromarray(rng.integers(0, 256, (H, W, 3), dtype=np.uint8)).save(img / f"colour{k}.png")
        names.append(f"colour{k}.png")
    rows = [f"images/{name},{i % 2}" for i, name in enumerate(names)]
    (root / "labels.csv").write_text("\n".join(["file,label", *rows]) + "\n")
    return root


def load(root: Path, channels: int | None = None):
    return load_dataset(root, "folder", SourceOptions(channels=channels))


def test_mixed_modes_read_as_one_channel(tmp_path):
    ds = load(mixed_folder(tmp_path / "d"))
    assert ds.channels == 1
    shapes = {ds.load(i).shape for i in range(len(ds))}
    assert shapes == {(1, H, W)}
    np.testing.assert_array_equal(ds.load(0)[0], grey(0))
    np.testing.assert_array_equal(ds.load(6)[0], grey(7))  # RGBA: alpha dropped, grey content kept as it is
    np.testing.assert_array_equal(ds.load(7)[0], grey(8))  # palette: expanded, then grey content
    arr = cached_images(ds, 16, cache_dir=tmp_path / "cache", progress=False)
    assert arr.shape == (len(ds), 1, 16, 16)


def test_channels_3_copies_grey_to_three(tmp_path):
    ds = load(mixed_folder(tmp_path / "d"), channels=3)
    assert ds.channels == 3
    assert {ds.load(i).shape for i in range(len(ds))} == {(3, H, W)}
    img = ds.load(0)
    assert (img == img[:1]).all()  # the same values in the three channels
    assert cached_images(ds, 16, cache_dir=tmp_path / "cache", progress=False).shape == (len(ds), 3, 16, 16)


def test_colour_image_in_grey_set_is_converted_and_counted(tmp_path, caplog):
    root = mixed_folder(tmp_path / "d", colour=2)
    ds = load(root)
    assert ds.channels == 1  # 8 grey images against 2 colour ones
    rgb = np.asarray(Image.open(root / "images" / "colour0.png"))
    np.testing.assert_array_equal(ds.load(8)[0], np.asarray(Image.fromarray(rgb).convert("L")))  # ITU-R 601 luma

    with caplog.at_level(logging.INFO, logger="medtransfer.data.cache"):
        cached_images(ds, 16, cache_dir=tmp_path / "cache", progress=False)
    notices = [r for r in caplog.records if "channels=1" in r.getMessage()]
    assert len(notices) == 1 and notices[0].levelno == logging.WARNING  # one notice, not one per image
    expected = (
        "channels=1: 4 RGB images whose channels are equal read as grey; 2 colour images converted to grey (luma)"
    )
    assert expected in notices[0].getMessage()

    rep = inspect_dataset(ds, sample=None)  # the same function, the same counts
    assert rep.conversion == expected
    assert rep.colour_modes == {
        "L": 4,
        "RGB (grey content)": 2,
        "RGB": 2,
        "RGBA (grey content)": 1,
        "P (grey content)": 1,
    }
    assert rep.problems == []


def test_majority_decides_and_a_tie_keeps_colour(tmp_path):
    assert load(mixed_folder(tmp_path / "most_colour", colour=5, n_grey=0)).channels == 3  # 5 colour, 4 grey content
    assert load(mixed_folder(tmp_path / "tie", colour=8, n_grey=4)).channels == 3  # 8 colour, 8 grey
    assert load(mixed_folder(tmp_path / "most_grey", colour=7, n_grey=4)).channels == 1
    ds = load(mixed_folder(tmp_path / "forced", colour=5, n_grey=0), channels=1)
    assert ds.channels == 1 and ds.load(8).shape == (1, H, W)


def test_decide_channels_reads_few_pixels(tmp_path):
    decoded = []

    def read(i):
        decoded.append(i)
        return np.zeros((1, 2, 2))

    assert decide_channels(5000, lambda i: "L" if i % 2 else "RGB", read) == 1  # RGB of grey content
    assert len(decoded) == 32
    assert decide_channels(10, lambda i: "L", read) == 1 and len(decoded) == 32  # grey headers: no decode

    def broken(i):
        raise DataError(f"image {i} is broken")

    with pytest.raises(DataError, match="image 0 is broken"):
        decide_channels(3, broken, read)


def test_cache_key_changes_with_channels(tmp_path):
    root = mixed_folder(tmp_path / "d")
    one, three = load(root, channels=1), load(root, channels=3)
    assert cache_key(one, 16) != cache_key(three, 16)
    assert cache_key(load(root), 16) == cache_key(one, 16)  # the majority is 1: the same images, the same cache
    a = cached_images(one, 16, cache_dir=tmp_path / "cache", progress=False)
    b = cached_images(three, 16, cache_dir=tmp_path / "cache", progress=False)
    assert a.shape[1] == 1 and b.shape[1] == 3


def test_reader_modes(tmp_path):
    colour = np.zeros((2, 3, 3), np.uint8)
    colour[..., 0] = 200
    Image.fromarray(colour).convert("P", palette=Image.Palette.ADAPTIVE).save(tmp_path / "p.png")
    img, mode = read_pixels(tmp_path / "p.png")
    assert mode == "P" and img.shape == (3, 2, 3) and img[0, 0, 0] == 200  # expanded through the palette
    assert header_mode(tmp_path / "p.png") == "P"

    la = np.stack([grey(1), np.full((H, W), 9, np.uint8)], axis=-1)
    Image.fromarray(la, "LA").save(tmp_path / "la.png")
    img, mode = read_pixels(tmp_path / "la.png")
    assert mode == "LA" and img.shape == (1, H, W)
    np.testing.assert_array_equal(img[0], grey(1))

    Image.fromarray(grey(0) > 100).save(tmp_path / "bw.png")
    img, mode = read_pixels(tmp_path / "bw.png")
    assert mode == "1" and img.shape == (1, H, W) and set(np.unique(img)) == {0, 255}

    Image.fromarray(np.array([[0, 300], [4095, 65535]], np.uint16)).save(tmp_path / "16.png")
    img, mode = read_pixels(tmp_path / "16.png")
    assert mode.startswith("I") and img.dtype == np.uint16  # 16-bit grey as before


def test_conform_rules():
    grey_img = np.arange(6, dtype=np.uint16).reshape(1, 2, 3)
    out, note = conform(grey_img, "I;16", 3)
    assert out.shape == (3, 2, 3) and out.dtype == np.uint16 and note.action == "replicated"
    colour = np.stack([np.full((2, 2), v, np.float32) for v in (100, 50, 10)])
    out, note = conform(colour, "DICOM RGB", 1)
    assert note.action == "luma" and out.shape == (1, 2, 2)
    np.testing.assert_allclose(out[0, 0, 0], 0.299 * 100 + 0.587 * 50 + 0.114 * 10, rtol=1e-6)
    assert conform(colour, "RGB", 3)[1].action is None
    assert describe_conversions(3, {None: 5}) == "channels=3: every image read as stored"


def test_channels_range_checked():
    with pytest.raises(ConfigError, match="data.channels"):
        DataConfig(channels=2)
    assert DataConfig(channels=3).channels == 3 and DataConfig().channels is None
    with pytest.raises(DataError, match="channels must be 1, 3"):
        SourceOptions(channels=4)


def test_other_sources_take_data_channels():
    ds = load_dataset("synthetic:chest,n=8", options=SourceOptions(channels=3))
    assert ds.channels == 3 and ds.load(0).shape[0] == 3
    assert ds.subset([1, 2]).load(0).shape[0] == 3


def test_cli_inspect_and_train_on_mixed_modes(tmp_path, cli, capsys):
    import yaml

    root = mixed_folder(tmp_path / "d", colour=2, n_grey=16)  # 22 images, 2 of them truly colour
    assert cli(["data", "inspect", str(root), "--check-all"]) == 0
    out = " ".join(capsys.readouterr().out.split())
    assert "channels=1" in out and "unreadable" not in out
    # the RGB, RGBA and palette files hold grey images of the folder again (g5-g8), under the other label
    assert "4 duplicate group(s) hold different labels" in out and "images/g7.png, images/rgba.png" in out
    assert "colour modes: L ×16, RGB (grey content) ×2, RGB ×2, RGBA (grey content) ×1, P (grey content) ×1" in out
    assert "channels=1: 4 RGB images whose channels are equal read as grey; 2 colour images converted to grey" in out
    assert cli(["data", "inspect", str(root), "--channels", "3"]) == 0
    assert "channels=3: 16 grey images copied to 3 channels" in " ".join(capsys.readouterr().out.split())

    cfg = {
        "task": "binary",
        "seed": 0,
        "data": {"path": str(root), "image_size": 16},
        "model": {"backbone": "tiny"},
        "transfer": {"strategy": "finetune"},
        "train": {"epochs": 1, "batch_size": 8, "lr": 0.003},
    }
    (tmp_path / "train.yaml").write_text(yaml.safe_dump(cfg))
    assert cli(["train", str(tmp_path / "train.yaml"), "--out", str(tmp_path / "run")]) == 0
    argv = ["train", str(tmp_path / "train.yaml"), "--out", str(tmp_path / "run3"), "--set", "data.channels=3"]
    assert cli(argv) == 0
    assert yaml.safe_load((tmp_path / "run3" / "config.yaml").read_text())["data"]["channels"] == 3
