"""Exact and near-duplicate images, found by hashing every image once.

* **Exact copies** have the same decoded pixels: a 64-bit BLAKE2b digest of the dtype, the shape and the pixel bytes
  as the source reads them (:func:`pixel_digest`). A file saved again with other metadata or another lossless
  compression is still an exact copy; a copy saved again as JPEG is not (its pixels change) but is a near copy.
* **Near copies** (resized, re-encoded, RGB of a grey image) are found in two steps on a 32×32 grey thumbnail of each
  image (:func:`thumbnail`, imagehash's own: greyscale, Lanczos): candidates have perceptual hashes
  (:func:`phashes`, bit for bit ``imagehash.phash``) within Hamming distance :data:`NEAR_DISTANCE` (4 of 64 bits);
  a candidate pair counts only when the thumbnails also agree (:func:`confirm`: mean absolute difference at most
  :data:`MAX_MEAN_DIFF` grey levels and correlation at least :data:`MIN_CORRELATION`).

Why the second step (measured on shared/data): a perceptual hash of a tiny image is a hash of very few pixels. On
PneumoniaMNIST (28 px, 5,855 images with the test file) phash distance <= 4 alone pairs 255 images that are not copies
(their thumbnails differ by 10-33 grey levels on average) and groups 7 % of the set; on MedNIST (64 px) it puts 63 %
of the images in groups, the largest of 10,891 images across three classes. With the thumbnail check PneumoniaMNIST
keeps its exact copies only (none of the 205 + 4 candidate pairs of different pixels in its two files passes) and
MedNIST's X-ray classes (CXR, Hand) get no near pair; MedNIST's CT and MRI classes do get near copies: neighbouring
slices of one scan, which differ less than a resized copy does (1-3 grey levels), so 8,674 of 10,000 AbdomenCT images
fall in groups (the largest 763). Resized (x0.75 to x4, another aspect), JPEG-90 and RGB copies of the MedNIST folder
sample are all found, JPEG-50 99 %; of 28-px PneumoniaMNIST films 91 % of 3/4-size and 87 % of JPEG-50 copies (the
rest differ by more than 5 grey levels). Crops are not found: cutting 3 % off each side already moves a 64-px
thumbnail too far (1 % found).

Groups are the connected components (union-find) of exact and near pairs. The near-pair search is a multi-index
hash: 64 bits in 5 blocks, so any two hashes within distance 4 share one block exactly (pigeonhole); only those share
a bucket, and their full distance is then counted with vectorised popcounts. No loop over pairs in Python.

Example:
    >>> dup = find_duplicates(np.stack([img_a, img_a.copy(), img_b]))   # doctest: +SKIP
    >>> dup.groups()                                                      # doctest: +SKIP
    [array([0, 1])]
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable
from dataclasses import dataclass

import numpy as np
from PIL import Image
from scipy.fftpack import dct  # imagehash's own transform: the same floating-point sums, so the same bits
from scipy.sparse import coo_matrix
from scipy.sparse.csgraph import connected_components

RULE_VERSION = "1"
NEAR_DISTANCE = 4  # phash Hamming distance (of 64 bits) of a near-copy candidate
MAX_MEAN_DIFF = 5.0  # grey levels (of 255): mean |difference| of the 32×32 thumbnails of a near copy
MIN_CORRELATION = 0.95  # Pearson correlation of the 32×32 thumbnails of a near copy
THUMB = 32  # imagehash.phash's own thumbnail size (hash_size 8 × highfreq_factor 4)
FLAT_STD = 1.0  # a thumbnail whose grey levels vary less than this is flat: it is only ever an exact copy
RULE = (
    f"exact: same decoded pixels; near: phash distance <= {NEAR_DISTANCE} of 64 bits and 32x32 thumbnails within "
    f"{MAX_MEAN_DIFF:g} grey levels (mean) with correlation >= {MIN_CORRELATION:g}"
)


def pixel_digest(img: np.ndarray) -> int:
    """A 64-bit digest of an image's decoded pixels (dtype, shape and bytes): equal for exact copies.

    Example:
        >>> a = np.arange(16, dtype=np.uint8).reshape(1, 4, 4)
        >>> pixel_digest(a) == pixel_digest(a.copy()), pixel_digest(a) == pixel_digest(a.T.copy())
        (True, False)
    """
    img = np.ascontiguousarray(img)
    h = hashlib.blake2b(f"{img.dtype.str}{img.shape}".encode(), digest_size=8)
    h.update(img.tobytes())
    return int.from_bytes(h.digest(), "big")


def thumbnail(img: np.ndarray) -> np.ndarray:
    """A ``(C, H, W)`` uint8 image as the 32×32 grey thumbnail ``imagehash.phash`` hashes (PIL's ``L`` conversion of
    colour, Lanczos resampling).

    Example:
        >>> thumbnail(np.zeros((3, 100, 60), np.uint8)).shape
        (32, 32)
    """
    if img.dtype != np.uint8:
        raise ValueError(f"thumbnail() takes uint8 images, got {img.dtype}")
    if img.shape[0] == 3:
        pil = Image.fromarray(np.moveaxis(img, 0, -1), "RGB").convert("L")
    else:
        pil = Image.fromarray(img[0], "L")
    return np.asarray(pil.resize((THUMB, THUMB), Image.Resampling.LANCZOS), dtype=np.uint8)


def phashes(thumbs: np.ndarray) -> np.ndarray:
    """The 64-bit perceptual hashes of ``(N, 32, 32)`` thumbnails as ``uint64``, the bits ``imagehash.phash`` gives
    (``int(str(imagehash.phash(image)), 16)``), computed for all thumbnails at once.

    Example:
        >>> phashes(np.zeros((2, 32, 32), np.uint8)).dtype
        dtype('uint64')
    """
    rows = dct(thumbs.astype(np.float64), axis=1)[:, :8]  # only the 8 lowest vertical frequencies go on
    coeffs = dct(rows, axis=2)[:, :, :8].reshape(len(thumbs), 64)
    bits = coeffs > np.median(coeffs, axis=1, keepdims=True)
    return np.packbits(bits, axis=1).view(">u8").ravel().astype(np.uint64)


def hamming(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Bitwise Hamming distances of two ``uint64`` hash arrays (elementwise)."""
    return np.bitwise_count(np.bitwise_xor(a, b)).astype(np.int64)


def near_pairs(hashes: np.ndarray, max_distance: int = NEAR_DISTANCE) -> tuple[np.ndarray, np.ndarray]:
    """All index pairs ``i < j`` whose ``uint64`` hashes lie within ``max_distance`` bits, without comparing every pair.

    A multi-index hash: the 64 bits are cut into ``max_distance + 1`` blocks; two hashes within the distance agree
    exactly on at least one block, so only hashes that share a block value are compared.

    Example:
        >>> near_pairs(np.array([0b000, 0b001, 0b111, 0b011], np.uint64), 1)  # 0-1, 1-3 and 2-3 differ by one bit
        (array([0, 1, 2]), array([1, 3, 3]))
    """
    h = np.asarray(hashes, dtype=np.uint64)
    n = len(h)
    if n < 2:
        return np.zeros(0, np.int64), np.zeros(0, np.int64)
    blocks = max_distance + 1
    edges = np.linspace(0, 64, blocks + 1).round().astype(int)
    found = []
    for lo, hi in zip(edges[:-1], edges[1:], strict=True):
        key = (h >> np.uint64(lo)) & np.uint64((1 << (hi - lo)) - 1)
        order = np.argsort(key, kind="stable")
        i, j = _pairs_within_runs(key[order])
        i, j = order[i], order[j]
        close = hamming(h[i], h[j]) <= max_distance
        found.append(np.minimum(i, j)[close] * n + np.maximum(i, j)[close])
    flat = np.unique(np.concatenate(found))
    return flat // n, flat % n


def _pairs_within_runs(sorted_keys: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Positions ``p < q`` of every pair of equal values in a sorted array."""
    n = len(sorted_keys)
    starts = np.flatnonzero(np.r_[True, sorted_keys[1:] != sorted_keys[:-1]])
    run_end = np.repeat(np.r_[starts[1:], n], np.diff(np.r_[starts, n]))  # end of each position's run
    after = run_end - np.arange(n) - 1  # how many later positions share the value
    first = np.repeat(np.arange(n), after)
    offset = np.arange(len(first)) - np.repeat(np.cumsum(after) - after, after) + 1
    return first, first + offset


def confirm(thumbs: np.ndarray, i: np.ndarray, j: np.ndarray, chunk: int = 4096) -> np.ndarray:
    """Which candidate pairs ``(i, j)`` are near copies by their thumbnails: mean absolute difference at most
    :data:`MAX_MEAN_DIFF` grey levels and correlation at least :data:`MIN_CORRELATION`. A flat thumbnail (standard
    deviation under :data:`FLAT_STD`) has no correlation to speak of: it is never a near copy, only an exact one."""
    flat = thumbs.reshape(len(thumbs), -1)
    pixels = flat.shape[1]
    centred = flat - flat.mean(axis=1, keepdims=True, dtype=np.float32)
    std = np.sqrt((centred**2).mean(axis=1))
    unit = centred / np.maximum(std, 1e-6)[:, None]
    ok = np.zeros(len(i), dtype=bool)
    for s in range(0, len(i), chunk):
        a, b = i[s : s + chunk], j[s : s + chunk]
        diff = np.abs(flat[a].astype(np.int16) - flat[b]).sum(axis=1) / pixels
        corr = np.einsum("ij,ij->i", unit[a], unit[b]) / pixels
        textured = (std[a] >= FLAT_STD) & (std[b] >= FLAT_STD)
        ok[s : s + chunk] = textured & (diff <= MAX_MEAN_DIFF) & (corr >= MIN_CORRELATION)
    return ok


def components(n: int, i: np.ndarray, j: np.ndarray) -> np.ndarray:
    """Union-find over ``n`` items joined by the pairs ``(i, j)``: each item's group, named by its smallest member.

    Example:
        >>> components(5, np.array([3, 1]), np.array([4, 3])).tolist()
        [0, 1, 2, 1, 1]
    """
    if len(i) == 0:
        return np.arange(n)
    graph = coo_matrix((np.ones(len(i), np.int8), (i, j)), shape=(n, n))
    _, label = connected_components(graph, directed=False)
    smallest = np.full(label.max() + 1, n, dtype=np.int64)
    np.minimum.at(smallest, label, np.arange(n))
    return smallest[label]


@dataclass(frozen=True)
class Duplicates:
    """Duplicate groups of N images, in the dataset's row order.

    ``group[k]`` names image k's group by its first member (``group[k] == k`` for an image in no group, or not read);
    ``digest`` and ``phash`` are the two hashes (0 for an image that could not be read, ``readable`` False)."""

    group: np.ndarray  # (N,) int64
    digest: np.ndarray  # (N,) uint64
    phash: np.ndarray  # (N,) uint64
    readable: np.ndarray  # (N,) bool

    def __len__(self) -> int:
        return len(self.group)

    def groups(self) -> list[np.ndarray]:
        """The member indices of every group of two or more images, largest first (ties: first member)."""
        if not len(self.group):
            return []
        sizes = np.bincount(self.group, minlength=len(self.group))
        heads = np.flatnonzero(sizes > 1)
        heads = heads[np.lexsort((heads, -sizes[heads]))]
        order = np.argsort(self.group, kind="stable")
        starts = np.searchsorted(self.group[order], heads)
        return [order[s : s + sizes[h]] for s, h in zip(starts, heads, strict=True)]

    def is_exact(self, members: np.ndarray) -> bool:
        """Whether a group's images are all exact copies of one another (else some are near copies)."""
        return len(np.unique(self.digest[members])) == 1

    @property
    def any(self) -> bool:
        return bool((self.group != np.arange(len(self.group))).any())

    def to_arrays(self) -> dict[str, np.ndarray]:
        return {"group": self.group, "digest": self.digest, "phash": self.phash, "readable": self.readable}

    @classmethod
    def from_arrays(cls, arrays) -> Duplicates:
        return cls(*(np.asarray(arrays[k]) for k in ("group", "digest", "phash", "readable")))


class DuplicateHasher:
    """Collects the two hashes and the thumbnail of each of ``n`` images as they are decoded (by the image cache or
    :func:`find_duplicates`), then groups them (:meth:`result`). An image never added counts as not read."""

    def __init__(self, n: int) -> None:
        self.digest = np.zeros(n, np.uint64)
        self.thumbs = np.zeros((n, THUMB, THUMB), np.uint8)
        self.readable = np.zeros(n, bool)

    def add(self, i: int, raw: np.ndarray, img8: np.ndarray) -> None:
        """Image ``i`` as decoded (``raw``, its own dtype: the exact hash) and as uint8 (``img8``: the thumbnail)."""
        self.digest[i] = pixel_digest(raw)
        self.thumbs[i] = thumbnail(img8)
        self.readable[i] = True

    def result(self) -> Duplicates:
        n = len(self.digest)
        phash = np.zeros(n, np.uint64)
        read = np.flatnonzero(self.readable)
        if not len(read):
            return Duplicates(np.arange(n), self.digest, phash, self.readable)
        phash[read] = phashes(self.thumbs[read])
        # exact copies first: each image joins the first image with its digest, and only those first images (one
        # per distinct content) are searched for near copies, so a thousand blank slices cost one comparison
        _, first, inverse = np.unique(self.digest[read], return_index=True, return_inverse=True)
        rep = read[first]
        exact_i, exact_j = rep[inverse], read
        ci, cj = near_pairs(phash[rep])
        ok = confirm(self.thumbs, rep[ci], rep[cj])
        i = np.concatenate([exact_i, rep[ci][ok]])
        j = np.concatenate([exact_j, rep[cj][ok]])
        return Duplicates(components(n, i, j), self.digest, phash, self.readable)


def find_duplicates(images: Iterable[np.ndarray] | np.ndarray) -> Duplicates:
    """Duplicate groups of uint8 images (each ``(C, H, W)``, or ``(H, W)``; sizes may differ).

    Example:
        >>> img = np.random.default_rng(0).integers(0, 256, (1, 40, 40), dtype=np.uint8)
        >>> find_duplicates([img, img.copy(), img[:, ::-1]]).group.tolist()
        [0, 0, 2]
    """
    imgs = [np.asarray(im)[None] if np.asarray(im).ndim == 2 else np.asarray(im) for im in images]
    hasher = DuplicateHasher(len(imgs))
    for k, img in enumerate(imgs):
        hasher.add(k, img, img)
    return hasher.result()
