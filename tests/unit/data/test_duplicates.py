"""Exact and near-duplicate images: hashes, the near-pair search, the thumbnail check and the groups."""

from __future__ import annotations

import io

import imagehash
import numpy as np
from PIL import Image

from medtransfer.data.duplicates import (
    NEAR_DISTANCE,
    Duplicates,
    components,
    confirm,
    find_duplicates,
    near_pairs,
    phashes,
    pixel_digest,
    thumbnail,
)


def scan(seed: int, size: int = 64) -> np.ndarray:
    """A smooth ``(1, size, size)`` uint8 image: a bright disc and two blobs at seeded places on a gradient."""
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:size, 0:size] / size
    img = 60 + 60 * x
    for _ in range(3):
        cy, cx, r = rng.uniform(0.2, 0.8), rng.uniform(0.2, 0.8), rng.uniform(0.08, 0.25)
        img = img + rng.uniform(60, 120) * np.exp(-((y - cy) ** 2 + (x - cx) ** 2) / r**2)
    return np.clip(img, 0, 255).astype(np.uint8)[None]


def resized(img: np.ndarray, w: int, h: int) -> np.ndarray:
    return np.asarray(Image.fromarray(img[0]).resize((w, h), Image.BILINEAR))[None]


def jpeg(img: np.ndarray, quality: int = 60) -> np.ndarray:
    buf = io.BytesIO()
    Image.fromarray(img[0]).save(buf, "JPEG", quality=quality)
    return np.asarray(Image.open(io.BytesIO(buf.getvalue())))[None]


def test_phash_is_imagehash_phash_bit_for_bit(rng):
    images = [rng.integers(0, 256, (1, s, s + 7), dtype=np.uint8) for s in (9, 28, 64)] + [scan(1), scan(2, 100)]
    colour = rng.integers(0, 256, (3, 40, 30), dtype=np.uint8)
    ours = phashes(np.stack([thumbnail(im) for im in [*images, colour]]))
    pil = [Image.fromarray(im[0]) for im in images] + [Image.fromarray(np.moveaxis(colour, 0, -1))]
    theirs = [int(str(imagehash.phash(p)), 16) for p in pil]
    assert ours.tolist() == theirs


def test_pixel_digest_is_about_pixels_dtype_and_shape():
    a = scan(0)
    assert pixel_digest(a) == pixel_digest(a.copy())
    assert pixel_digest(a) != pixel_digest(a.astype(np.uint16))
    assert pixel_digest(a) != pixel_digest(a.reshape(1, 32, 128))
    b = a.copy()
    b[0, 0, 0] ^= 1
    assert pixel_digest(a) != pixel_digest(b)


def test_an_exact_copy_a_resized_copy_and_a_different_image():
    a, other = scan(0), scan(7)
    dup = find_duplicates([a, other, a.copy(), resized(a, 100, 80), jpeg(a), resized(a, 48, 48)])
    (group,) = dup.groups()
    assert group.tolist() == [0, 2, 3, 4, 5]  # the copy, resized up and down, and re-encoded; not the other image
    assert dup.group.tolist() == [0, 1, 0, 0, 0, 0]
    assert not dup.is_exact(group) and dup.is_exact(np.array([0, 2]))
    exact_only = find_duplicates([a, other, a.copy()])
    assert [g.tolist() for g in exact_only.groups()] == [[0, 2]] and exact_only.is_exact(exact_only.groups()[0])


def test_rgb_copy_of_a_grey_image_is_a_near_copy():
    a = scan(3)
    dup = find_duplicates([a, np.repeat(a, 3, axis=0), scan(4)])
    assert dup.group.tolist() == [0, 0, 2]


def test_thumbnail_check_takes_close_thumbnails_only(rng):
    t = thumbnail(scan(5))
    noisy = np.clip(t + rng.integers(-2, 3, t.shape), 0, 255).astype(np.uint8)  # a re-encoding's small errors
    brighter = np.clip(t.astype(int) + 20, 0, 255).astype(np.uint8)  # the same layout, 20 grey levels apart
    thumbs = np.stack([t, noisy, brighter, thumbnail(scan(6)), np.full_like(t, 90), np.full_like(t, 90)])
    i, j = np.array([0, 0, 0, 4]), np.array([1, 2, 3, 5])
    assert confirm(thumbs, i, j).tolist() == [True, False, False, False]  # flat images: exact copies only


def test_flat_images_are_only_exact_copies():
    grey = [np.full((1, 16, 16), v, np.uint8) for v in (100, 102, 100)]
    assert find_duplicates(grey).group.tolist() == [0, 1, 0]


def test_near_pairs_equals_brute_force(rng):
    base = rng.integers(0, 2**63, 60, dtype=np.uint64)
    flips = [base ^ (np.uint64(1) << rng.integers(0, 64, 60).astype(np.uint64)) for _ in range(3)]
    hashes = np.concatenate([base, *flips, base[:5]])  # within 1-3 bits, and some identical
    i, j = near_pairs(hashes, NEAR_DISTANCE)
    d = np.bitwise_count(hashes[:, None] ^ hashes[None, :])
    bi, bj = np.nonzero(np.triu(d <= NEAR_DISTANCE, k=1))
    assert sorted(zip(i.tolist(), j.tolist(), strict=True)) == sorted(zip(bi.tolist(), bj.tolist(), strict=True))
    assert [len(a) for a in near_pairs(hashes[:1])] == [0, 0]


def test_components_name_groups_by_their_first_member():
    assert components(6, np.array([4, 2, 5]), np.array([5, 4, 1])).tolist() == [0, 1, 1, 3, 1, 1]
    assert components(3, np.zeros(0, int), np.zeros(0, int)).tolist() == [0, 1, 2]


def test_groups_are_listed_largest_first():
    dup = Duplicates(np.array([0, 1, 0, 1, 1, 5]), *np.zeros((2, 6), np.uint64), np.ones(6, bool))
    assert [g.tolist() for g in dup.groups()] == [[1, 3, 4], [0, 2]]
    assert dup.any and not Duplicates(np.arange(3), *np.zeros((2, 3), np.uint64), np.ones(3, bool)).any


def test_tiny_chest_films_give_phash_candidates_but_no_near_copies(shared_data):
    """28-px chest X-rays: phash alone pairs different films; the thumbnail check keeps only real copies."""
    images = np.load(shared_data / "pneumoniamnist" / "pneumoniamnist_trainval.npz")["train_images"][:2000]
    thumbs = np.stack([thumbnail(im[None]) for im in images])
    i, j = near_pairs(phashes(thumbs))
    different = np.array([not np.array_equal(images[a], images[b]) for a, b in zip(i, j, strict=True)], bool)
    assert different.sum() >= 5  # candidates that are not copies ...
    assert not confirm(thumbs, i[different], j[different]).any()
    dup = find_duplicates(images[:, None])
    assert all(dup.is_exact(g) for g in dup.groups())  # ... and no group of near copies
