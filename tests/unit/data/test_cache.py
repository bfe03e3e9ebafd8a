"""Decoded-image cache: shape/dtype, decode once, keys, intensity mapping, errors, atomic writes."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from medtransfer.data.cache import cache_key, cached_images, duplicates_path, image_duplicates, to_uint8
from medtransfer.data.dataset import ArraySource, FileSource, ImageDataset, default_meta
from medtransfer.errors import DataError


class CountingReader:
    """Reads ``.npy`` images and counts how often it is called (to prove the cache reads nothing)."""

    def __init__(self, fail_at: str | None = None) -> None:
        self.calls = 0
        self.fail_at = fail_at

    def __call__(self, path: Path) -> np.ndarray:
        self.calls += 1
        if self.fail_at and path.name == self.fail_at:
            raise RuntimeError(f"disk error reading {path.name}")
        img = np.load(path)
        return img[None] if img.ndim == 2 else img


def write_images(folder: Path, images: list[np.ndarray]) -> list[Path]:
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for i, img in enumerate(images):
        p = folder / f"img{i:02d}.npy"
        np.save(p, img)
        paths.append(p)
    return paths


def file_dataset(paths: list[Path], reader: CountingReader, name: str = "files") -> ImageDataset:
    n = len(paths)
    return ImageDataset(
        name, FileSource(paths, reader), np.zeros((n, 0), np.float32), (), "unlabelled", default_meta(n)
    )


def manual_resize(img: np.ndarray, size: int) -> np.ndarray:
    return np.asarray(Image.fromarray(img).resize((size, size), Image.BILINEAR))


@pytest.fixture
def images(rng) -> list[np.ndarray]:
    return [rng.integers(0, 256, (40, 40), dtype=np.uint8) for _ in range(6)]


def test_builds_uint8_array_matching_manual_resize(tmp_path, images):
    paths = write_images(tmp_path / "img", images)
    ds = file_dataset(paths, CountingReader())
    arr = cached_images(ds, 16, cache_dir=tmp_path / "cache", progress=False)
    assert arr.shape == (6, 1, 16, 16) and arr.dtype == np.uint8
    for i, img in enumerate(images):
        np.testing.assert_array_equal(arr[i, 0], manual_resize(img, 16))
    assert not arr.flags.writeable  # read-only memmap
    assert sorted(p.suffix for p in (tmp_path / "cache").iterdir()) == [".npy", ".npz"]  # and its duplicate table


def test_second_call_reads_no_images(tmp_path, images):
    paths = write_images(tmp_path / "img", images)
    reader = CountingReader()
    first = np.array(cached_images(file_dataset(paths, reader), 16, cache_dir=tmp_path / "cache", progress=False))
    assert reader.calls >= len(images)
    reader.calls = 0
    # a fresh dataset object over the same files, as a second run would build
    again = cached_images(file_dataset(paths, reader), 16, cache_dir=tmp_path / "cache", progress=False)
    assert reader.calls == 0
    np.testing.assert_array_equal(again, first)


def test_building_the_cache_hashes_the_images_once(tmp_path, images):
    """The decode pass also finds duplicates; a split made afterwards, at any resolution, decodes nothing again."""
    paths = write_images(tmp_path / "img", [*images, images[2]])  # image 6 is a copy of image 2
    reader = CountingReader()
    cached_images(file_dataset(paths, reader), 16, cache_dir=tmp_path / "cache", progress=False)
    reader.calls = 0
    dup = image_duplicates(file_dataset(paths, reader), cache_dir=tmp_path / "cache", progress=False)
    assert reader.calls == 0
    assert [g.tolist() for g in dup.groups()] == [[2, 6]] and dup.readable.all()
    other = image_duplicates(file_dataset(paths[:6], reader), cache_dir=tmp_path / "cache", progress=False)
    assert reader.calls == 6 and other.groups() == []  # other images, another table
    assert duplicates_path(file_dataset(paths[:6], reader), tmp_path / "cache").is_file()


def test_key_changes_with_file_list_and_size(tmp_path, images):
    paths = write_images(tmp_path / "img", images)
    reader = CountingReader()
    ds = file_dataset(paths, reader)
    keys = {
        cache_key(ds, 16),
        cache_key(ds, 32),
        cache_key(ds, None),
        cache_key(file_dataset(paths[:-1], reader), 16),
        cache_key(file_dataset(paths[::-1], reader), 16),
    }
    assert len(keys) == 5
    assert cache_key(file_dataset(list(paths), reader), 16) == cache_key(ds, 16)

    cache = tmp_path / "cache"
    cached_images(ds, 16, cache_dir=cache, progress=False)
    reader.calls = 0
    fewer = cached_images(file_dataset(paths[:-1], reader), 16, cache_dir=cache, progress=False)
    assert reader.calls >= 5 and fewer.shape == (5, 1, 16, 16)  # a changed file list is decoded anew
    reader.calls = 0
    bigger = cached_images(ds, 24, cache_dir=cache, progress=False)
    assert reader.calls >= 6 and bigger.shape == (6, 1, 24, 24)
    assert len(list(cache.glob("*.npy"))) == 3


def test_uint16_min_max_mapped(tmp_path, rng):
    imgs = [rng.integers(1000, 5000, (20, 20), dtype=np.uint16) for _ in range(3)]
    imgs[1][:] = 7  # a constant image maps to zeros
    ds = file_dataset(write_images(tmp_path / "img", imgs), CountingReader())
    arr = cached_images(ds, None, cache_dir=tmp_path / "cache", progress=False)
    assert arr.shape == (3, 1, 20, 20) and arr.dtype == np.uint8
    for i in (0, 2):
        x = imgs[i].astype(np.float64)
        expected = np.rint((x - x.min()) * 255.0 / (x.max() - x.min())).astype(np.uint8)
        np.testing.assert_allclose(arr[i, 0].astype(int), expected.astype(int), atol=1)
        assert arr[i].min() == 0 and arr[i].max() == 255
    assert (arr[1] == 0).all()


@pytest.mark.filterwarnings("error")  # no RuntimeWarning from NaN pixels
def test_to_uint8_keeps_uint8_and_maps_non_finite_pixels_to_zero():
    u8 = np.arange(12, dtype=np.uint8).reshape(1, 3, 4)
    assert to_uint8(u8) is u8
    f = np.array([[[-1.0, 0.0, 1.0], [np.nan, np.inf, -np.inf]]], np.float32)
    np.testing.assert_array_equal(to_uint8(f), [[[0, 128, 255], [0, 0, 0]]])
    assert (to_uint8(np.full((1, 2, 2), np.nan, np.float32)) == 0).all()
    assert (to_uint8(np.full((1, 2, 2), 5, np.int16)) == 0).all()


def test_native_size_with_mixed_sizes_names_the_file(tmp_path, rng):
    imgs = [rng.integers(0, 256, (20, 20), dtype=np.uint8) for _ in range(3)]
    imgs.append(rng.integers(0, 256, (24, 20), dtype=np.uint8))
    paths = write_images(tmp_path / "img", imgs)
    with pytest.raises(DataError) as info:
        cached_images(file_dataset(paths, CountingReader()), None, cache_dir=tmp_path / "cache", progress=False)
    msg = str(info.value)
    assert str(paths[3]) in msg
    assert "24x20" in msg and "20x20" in msg
    assert "data.image_size" in msg
    # with a size, the same images are fine
    arr = cached_images(file_dataset(paths, CountingReader()), 16, cache_dir=tmp_path / "cache", progress=False)
    assert arr.shape == (4, 1, 16, 16)


def test_channel_mismatch_names_the_file(tmp_path, rng):
    imgs = [rng.integers(0, 256, (1, 8, 8), dtype=np.uint8), rng.integers(0, 256, (3, 8, 8), dtype=np.uint8)]
    paths = write_images(tmp_path / "img", imgs)
    with pytest.raises(
        DataError,
        match=rf"{paths[1].name} has 3 channel\(s\) but the first image has 1; save all images in one colour mode",
    ):
        cached_images(file_dataset(paths, CountingReader()), 8, cache_dir=tmp_path / "cache", progress=False)


def test_failed_build_leaves_no_file(tmp_path, images):
    paths = write_images(tmp_path / "img", images)
    cache = tmp_path / "cache"
    with pytest.raises(RuntimeError, match="disk error"):
        cached_images(file_dataset(paths, CountingReader(fail_at="img04.npy")), 16, cache_dir=cache, progress=False)
    assert list(cache.iterdir()) == []  # neither a .npy nor a leftover temporary file
    with pytest.raises(DataError):
        mixed = write_images(tmp_path / "mixed", [images[0], images[1][:30]])
        cached_images(file_dataset(mixed, CountingReader()), None, cache_dir=cache, progress=False)
    assert list(cache.iterdir()) == []
    # the next attempt builds a complete cache
    reader = CountingReader()
    arr = cached_images(file_dataset(paths, reader), 16, cache_dir=cache, progress=False)
    assert arr.shape == (6, 1, 16, 16) and reader.calls >= 6


def test_stale_cache_with_wrong_length_is_rebuilt(tmp_path, images):
    paths = write_images(tmp_path / "img", images)
    ds = file_dataset(paths, CountingReader())
    cache = tmp_path / "cache"
    np.save(cache.mkdir() or cache / f"{cache_key(ds, 16)}.npy", np.zeros((2, 1, 16, 16), np.uint8))
    arr = cached_images(ds, 16, cache_dir=cache, progress=False)
    assert arr.shape == (6, 1, 16, 16)
    np.testing.assert_array_equal(arr[0, 0], manual_resize(images[0], 16))


@pytest.mark.parametrize("layout", ["nhw", "nhwc"])
def test_array_source_fast_path_and_resize(tmp_path, rng, layout):
    shape = (5, 16, 16) if layout == "nhw" else (5, 16, 16, 3)
    arr = rng.integers(0, 256, shape, dtype=np.uint8)
    ds = ImageDataset("arr", ArraySource(arr, "arr"), np.zeros((5, 0), np.float32), (), "unlabelled", default_meta(5))
    same = cached_images(ds, 16, cache_dir=tmp_path / "cache", progress=False)
    expected = arr[:, None] if layout == "nhw" else np.moveaxis(arr, -1, 1)
    np.testing.assert_array_equal(same, expected)
    small = cached_images(ds, 8, cache_dir=tmp_path / "cache", progress=False)
    assert small.shape == (5, expected.shape[1], 8, 8)
    np.testing.assert_array_equal(small[3, -1], manual_resize(np.ascontiguousarray(expected[3, -1]), 8))


def test_default_cache_dir_from_environment(tmp_path, monkeypatch, images):
    monkeypatch.setenv("MEDTRANSFER_CACHE", str(tmp_path / "envcache"))
    ds = file_dataset(write_images(tmp_path / "img", images), CountingReader())
    cached_images(ds, 8, progress=False)
    assert len(list((tmp_path / "envcache").glob("*.npy"))) == 1


def test_small_images_upsample_or_pad_to_a_larger_size(tmp_path, rng):
    """28-px MedMNIST trains at 64 px: `interpolate` smooths up, `pad` keeps the pixels centred on zeros."""
    small = rng.integers(1, 256, (5, 28, 28), dtype=np.uint8)
    ds = ImageDataset(
        "small", ArraySource(small, "small"), np.zeros((5, 0), np.float32), (), "unlabelled", default_meta(5)
    )
    up = cached_images(ds, 64, cache_dir=tmp_path, progress=False)
    assert up.shape == (5, 1, 64, 64)
    np.testing.assert_array_equal(up[2, 0], manual_resize(small[2], 64))
    padded = cached_images(ds, 64, cache_dir=tmp_path, progress=False, resize="pad")
    assert padded.shape == (5, 1, 64, 64)
    np.testing.assert_array_equal(padded[2, 0, 18:46, 18:46], small[2])
    assert padded[:, :, :18].max() == 0 and padded[:, :, 46:].max() == 0
    assert cache_key(ds, 64) != cache_key(ds, 64, "pad")  # two caches, not one overwriting the other
    with pytest.raises(DataError, match="data.resize"):
        cached_images(ds, 64, cache_dir=tmp_path, progress=False, resize="stretch")


def test_pad_shrinks_a_larger_image_keeping_its_aspect(tmp_path, rng):
    wide = rng.integers(1, 256, (1, 40, 80), dtype=np.uint8)
    from medtransfer.data.cache import resize_uint8

    out = resize_uint8(wide, 32, "pad")
    assert out.shape == (1, 32, 32)
    assert out[0, :8].max() == 0 and out[0, 24:].max() == 0 and out[0, 8:24].min() > 0
