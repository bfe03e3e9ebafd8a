"""Deterministic radiograph-like phantoms of two anatomical sites (``chest``, ``hand``), data format ``synthetic``.

The dataset "path" is a spec string::

    synthetic:SITE[,key=value...]      e.g.  synthetic:chest,n=400,visibility=0.4,seed=1

``SITE`` is ``chest``, ``hand`` or ``both`` (alias ``mixed``); keys: ``n`` (512), ``size`` (64),
``visibility`` (0.5; lesion contrast, 0 = invisible, 1 = obvious), ``prevalence`` (0.5), ``seed`` (0) and
``labels``: ``lesion`` (binary, the default for one site), ``site`` (multi-class ``chest``/``hand``, the default
for ``both``) or ``none`` (an unlabelled archive for self-supervised pretraining).

* chest: a PA film: body outline and neck, two lungs (apex medial, base wide) cut by diaphragm domes (the
  patient's right one higher), mediastinum and spine, a heart bulging to the patient's left (image right) with
  the aortic knob, clavicles, posterior and anterior rib arcs, vessel markings fanning out from the hila.
  Lesion: a round soft opacity inside a lung field, about as bright as a rib.
* hand: a PA film of a left hand: five digits radiating from the wrist (the thumb angled, with two phalanges)
  whose metacarpals and phalanges have bright cortex, darker marrow and joint spaces; carpal bones, radius and
  ulna, and the soft-tissue envelope. Lesion: a lytic (dark) focus in a metacarpal or proximal phalanx.
* every film: random pose (rotation, translation, scale), patient build, exposure (curve, window/level), edge
  blur and Poisson-like quantum noise; ``uint8`` ``(1, size, size)``.

Image ``i`` is drawn from ``np.random.default_rng([seed, site_code, i])`` plus its pseudo-patient's anatomy
(row ``patient % 1024`` of ``default_rng([seed, 10 + site_code, patient // 1024])``), so any image can be made
lazily, in any order, identically every time. Every draw happens whether or not the image has a lesion, so at
``visibility=0`` a positive film is bit-identical to its negative twin. Lesion labels, the grouping into
pseudo-patients of 1-3 films and, for ``both``, each patient's site come from seeded vectors whose prefix does
not depend on ``n``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, fields
from functools import lru_cache
from pathlib import Path

import numpy as np
import pandas as pd

from medtransfer.data.dataset import GeneratedSource, ImageDataset, one_hot
from medtransfer.data.sources.base import DATA_SOURCES, DataSource, SourceOptions
from medtransfer.errors import DataError

GENERATOR_VERSION = "phantom-v1"  # bump whenever the pictures change (it is part of the cache identity)
SITES = ("chest", "hand")
_SITE_CODE = {"chest": 1, "hand": 2}
_PLAN_CODE = {"chest": 21, "hand": 22, "both": 23}  # seeded vectors: labels, patient grouping, patient site
_LABEL_KINDS = ("lesion", "site", "none")
_EXAMPLE = "synthetic:chest,n=400,visibility=0.4,seed=1"

# Lesion peak contrast at visibility=1, in the same units as the anatomy (ribs ~0.13, lung/soft tissue ~0.3).
_CHEST_LESION_GAIN = 0.26
_HAND_LESION_GAIN = 0.40


@dataclass(frozen=True)
class SyntheticSpec:
    """A parsed ``synthetic:`` spec; :meth:`canonical` is the normalised string (part of the cache identity)."""

    site: str = "chest"
    n: int = 512
    size: int = 64
    visibility: float = 0.5
    prevalence: float = 0.5
    seed: int = 0
    labels: str = ""  # "" = the site's default (lesion for one site, site for both)

    @classmethod
    def parse(cls, text: str) -> SyntheticSpec:
        """Parse ``synthetic:SITE[,key=value...]``; raise :class:`DataError` (one line) on anything invalid.

        Example:
            >>> SyntheticSpec.parse("synthetic:chest,n=400,visibility=0.4").n
            400
        """
        text = str(text).strip()
        valid = ", ".join(f.name for f in fields(cls))
        hint = f"valid keys: {valid} (site: chest|hand|both, labels: lesion|site|none); e.g. {_EXAMPLE}"
        if not text.startswith("synthetic:"):
            raise DataError(f"bad synthetic spec '{text}': must start with 'synthetic:'; {hint}")
        values: dict[str, str] = {}
        for k, token in enumerate(t.strip() for t in text[len("synthetic:") :].split(",")):
            if not token:
                continue
            key, sep, value = token.partition("=")
            key, value = (key.strip().lower(), value.strip()) if sep else ("site", key.strip())
            if k > 0 and not sep:
                raise DataError(f"bad synthetic spec '{text}': '{token}' is not key=value; {hint}")
            if key not in {f.name for f in fields(cls)}:
                raise DataError(f"bad synthetic spec '{text}': unknown key '{key}'; {hint}")
            if key in values:
                raise DataError(f"bad synthetic spec '{text}': key '{key}' given twice; {hint}")
            values[key] = value
        try:
            site = values.get("site", "chest").lower()
            site = "both" if site == "mixed" else site
            spec = cls(
                site=site,
                n=int(values.get("n", cls.n)),
                size=int(values.get("size", cls.size)),
                visibility=float(values.get("visibility", cls.visibility)),
                prevalence=float(values.get("prevalence", cls.prevalence)),
                seed=int(values.get("seed", cls.seed)),
                labels=values.get("labels", "").lower(),
            )
        except ValueError as exc:
            raise DataError(f"bad synthetic spec '{text}': {exc}; {hint}") from None
        problem = spec._problem()
        if problem:
            raise DataError(f"bad synthetic spec '{text}': {problem}; {hint}")
        return spec

    def _problem(self) -> str:
        if self.site not in (*SITES, "both"):
            return f"unknown site '{self.site}'"
        if not 1 <= self.n <= 10_000_000:
            return f"n={self.n} must be in 1..10000000"
        if not 16 <= self.size <= 1024:
            return f"size={self.size} must be in 16..1024"
        if not (0.0 <= self.visibility <= 1.0 and 0.0 <= self.prevalence <= 1.0):
            return "visibility and prevalence must be in [0, 1]"
        if not 0 <= self.seed < 2**32:
            return f"seed={self.seed} must be in 0..2**32-1"
        if self.labels and self.labels not in _LABEL_KINDS:
            return f"unknown labels '{self.labels}'"
        if self.label_kind == "site" and self.site != "both":
            return "labels=site needs site=both"
        return ""

    @property
    def label_kind(self) -> str:
        return self.labels or ("site" if self.site == "both" else "lesion")

    def canonical(self, labels: bool = True) -> str:
        """The normalised spec; ``labels=False`` leaves out what does not change the images."""
        text = (
            f"synthetic:{self.site},n={self.n},size={self.size},visibility={self.visibility:g},"
            f"prevalence={self.prevalence:g},seed={self.seed}"
        )
        return f"{text},labels={self.label_kind}" if labels else text


# --------------------------------------------------------------------------------------------- shared pieces
#
# Speed notes: a 64 × 64 film is small enough that numpy's per-call overhead rivals the arithmetic, so the
# drawing code works in place, folds constants into as few calls as possible, uses the clip ufunc directly
# (np.clip's Python wrapper doubles its cost) and draws small structures on windows of the film.

try:
    from numpy._core.umath import clip as _clip  # numpy >= 2
except ImportError:  # pragma: no cover - numpy 1.x
    from numpy.core.umath import clip as _clip


@lru_cache(maxsize=8)
def _grid(size: int) -> tuple[np.ndarray, np.ndarray]:
    """Pixel-centre coordinates in [-1, 1] (x to the right, y downwards), float32, read-only."""
    c = ((np.arange(size, dtype=np.float32) + 0.5) / size * 2 - 1).astype(np.float32)
    y, x = np.meshgrid(c, c, indexing="ij")
    x.flags.writeable = y.flags.writeable = False
    return x, y


@lru_cache(maxsize=1)
def _noise_bank() -> np.ndarray:
    """A fixed bank of standard normals; each film reads a random window (far cheaper than fresh normals)."""
    bank = np.random.default_rng(20240917).standard_normal(2**21, dtype=np.float32)
    bank.flags.writeable = False
    return bank


class _Film:
    """One film's geometry: the pixel grid mapped into the phantom's canonical frame, and windows onto it.

    The canonical frame has x to the right and y downwards with the anatomy inside about [-1, 1]²; a pose
    (rotation, scale, translation) places it on the detector. :meth:`window` finds the pixels a canonical box
    can reach, so small structures are drawn on small sub-arrays.
    """

    def __init__(self, size: int, rot: float, tx: float, ty: float, scale: float, edge: float) -> None:
        gx, gy = _grid(size)
        self.size, self.tx, self.ty, self.scale = size, tx, ty, scale
        self.cos, self.sin = math.cos(rot), math.sin(rot)
        xt, yt = gx - tx, gy - ty
        c, s = self.cos / scale, self.sin / scale
        self.x = xt * c
        self.x += yt * s
        self.y = yt * c
        self.y -= xt * s
        # the anti-aliasing edge width in canonical units: one pixel times a random blur factor
        self.px = 2.0 / (size * scale) * edge

    def window(self, x0: float, x1: float, y0: float, y1: float) -> tuple[slice, slice] | None:
        """Row and column slices covering the canonical box ``[x0, x1] × [y0, y1]`` (None when off the film)."""
        mx, my, hx, hy = (x0 + x1) / 2, (y0 + y1) / 2, (x1 - x0) / 2, (y1 - y0) / 2
        c, s, k = self.cos, self.sin, self.scale
        gx, gy = k * (c * mx - s * my) + self.tx, k * (s * mx + c * my) + self.ty  # the box centre on the film
        ex, ey = k * (abs(c) * hx + abs(s) * hy), k * (abs(s) * hx + abs(c) * hy)  # half-extents once rotated
        h, n = self.size / 2, self.size
        c0, c1 = max(0, int((gx - ex + 1) * h) - 1), min(n, int((gx + ex + 1) * h) + 2)
        r0, r1 = max(0, int((gy - ey + 1) * h) - 1), min(n, int((gy + ey + 1) * h) + 2)
        if c0 >= c1 or r0 >= r1:
            return None
        return slice(r0, r1), slice(c0, c1)


def _inside(d: np.ndarray, px: float) -> np.ndarray:
    """Signed distance ``d`` (positive inside; overwritten) → anti-aliased mask in [0, 1]."""
    d *= 1.0 / px
    d += 0.5
    return _clip(d, 0.0, 1.0, out=d)


def _below(e: np.ndarray, c: float, px: float) -> np.ndarray:
    """Soft mask of ``e < c`` (``e`` in canonical units, left untouched): ``_inside(c - e)`` in fewer calls."""
    m = e * (-1.0 / px)
    m += c / px + 0.5
    return _clip(m, 0.0, 1.0, out=m)


def _ellipse(x: np.ndarray, y: np.ndarray, cx: float, cy: float, ax: float, ay: float, px: float) -> np.ndarray:
    """Soft mask of an axis-aligned ellipse, using 1 - f ≈ 2·distance/radius near the boundary."""
    k = 0.5 * min(ax, ay) / px
    sk = math.sqrt(k)
    u = x - cx
    u *= sk / ax
    u *= u
    v = y - cy
    v *= sk / ay
    v *= v
    u += v
    np.subtract(k + 0.5, u, out=u)
    return _clip(u, 0.0, 1.0, out=u)


def _blob(film: _Film, cx: float, cy: float, radius: float, profile: str):
    """Window and values of a round lesion: ``sphere`` (projected thickness) or ``disc`` (flat, soft edge)."""
    win = film.window(cx - radius, cx + radius, cy - radius, cy + radius)
    if win is None:
        return None, None
    dx = film.x[win] - cx
    dy = film.y[win] - cy
    dx *= dx
    dy *= dy
    dx += dy
    if profile == "sphere":
        dx *= -1.0 / radius**2
        dx += 1.0
        _clip(dx, 0.0, 1.0, out=dx)
        return win, np.sqrt(dx, out=dx)
    dx *= -3.0 / radius**2
    dx += 3.0
    return win, _clip(dx, 0.0, 1.0, out=dx)


def _expose(img: np.ndarray, r: list[float], size: int) -> np.ndarray:
    """Characteristic curve, window/level and Poisson-like noise (``r``: four uniforms) → uint8 (1, size, size).

    (Blur happens upstream: every edge is drawn with a random softness.)
    """
    _clip(img, 0.0, 1.0, out=img)
    # a gamma-like monotone curve x + k·x·(1 - x), |k| ≤ 0.3, then window/level
    t = 1.0 - img
    t *= img
    t *= 0.6 * (r[0] - 0.5)
    img += t
    img *= (0.88 + 0.12 * r[1] - 0.06 * r[2]) * 255.0
    img += 0.06 * r[2] * 255.0
    # quantum noise with std ∝ sqrt(signal), read from a random window of a fixed bank (deterministic, cheap)
    bank = _noise_bank()
    n = size * size
    start = int(r[3] * (bank.size - n))
    noise = bank[start : start + n].reshape(size, size)
    np.sqrt(img + 5.0, out=t)
    t *= noise
    img += t * (math.sqrt(255.0) / math.sqrt(300.0 + 900.0 * ((r[3] * 7.31) % 1.0)))
    img += 0.5
    _clip(img, 0.0, 255.0, out=img)
    return img.astype(np.uint8)[None]


# --------------------------------------------------------------------------------------------- chest


_PATIENT_BLOCK = 1024


@lru_cache(maxsize=64)
def _patient_block(seed: int, code: int, block: int) -> np.ndarray:
    return np.random.default_rng([seed, 10 + code, block]).random((_PATIENT_BLOCK, 12))


def _anatomy(seed: int, code: int, patient: int) -> list[float]:
    """Patient-level anatomy (12 uniforms: habitus, organ sizes, rib spacing, digit lengths ...), shared by
    the patient's films; drawn in blocks of patients so that a new patient does not cost a new generator."""
    return _patient_block(seed, code, patient // _PATIENT_BLOCK)[patient % _PATIENT_BLOCK].tolist()


def _render_chest(rng: np.random.Generator, seed: int, patient: int, lesion: bool, visibility: float, size: int):
    """One PA chest film, ``uint8`` ``(1, size, size)``."""
    r = rng.random(32).tolist()
    a = _anatomy(seed, _SITE_CODE["chest"], patient)
    body_w = 0.84 + 0.1 * a[0]
    lung_w = 0.29 + 0.05 * a[1]
    lung_h = 0.56 + 0.08 * a[2] + 0.05 * (r[0] - 0.5)  # inspiration varies per film
    heart = 0.85 + 0.35 * a[3]
    spacing = (0.1 + 0.025 * a[4]) * (1 + 0.04 * (r[0] - 0.5))
    lung_x, cy = 0.38 + 0.03 * (a[5] - 0.5), -0.12  # lung centres at (±lung_x, cy)
    dome = 0.33 - 0.05 * r[6]  # the diaphragm under the right lung; the left one is lower
    dome_step = 0.06 + 0.04 * r[7]
    rib_tilt = 0.1 + 0.25 * a[6]
    film = _Film(
        size, 0.1 * (r[1] - 0.5), 0.1 * (r[2] - 0.5), 0.08 * (r[3] - 0.5) + 0.03, 0.93 + 0.1 * r[4], 1.0 + r[5]
    )
    x, y, px = film.x, film.y, film.px

    # body: a boxy torso (u⁴ + v⁴ < 1) with rounded shoulders, and the neck
    u = x * (1 / body_w)
    u *= u
    u *= u
    v = y - 0.22
    v *= 1 / 1.1
    v *= v
    v *= v
    u += v
    body = _below(u, 1.0, px * 4.0 / body_w)  # 1 - u ≈ 4·distance/width near the edge
    win = film.window(-0.3, 0.3, -1.3, -0.6)
    if win:
        ys = y[win]
        neck = np.abs(x[win])
        np.fmax(neck, ys + 0.82, out=neck)
        bv = body[win]
        np.fmax(bv, _below(neck, 0.2, px), out=bv)
    img = body * (0.5 + 0.06 * a[8])
    img += 0.05

    # the thorax is drawn in one window, mirrored about the midline (ax = |x|): lungs, then ribs
    win = film.window(-body_w, body_w, -0.9, 0.8)
    lungs = np.zeros_like(x)
    thorax = win if win is not None else (slice(0, 0), slice(0, 0))
    xs, ys, lv = x[thorax], y[thorax], lungs[thorax]
    ax = np.abs(xs)
    right = xs > 0  # the patient's left

    # lungs: apex narrow and medial, base wide, cut by the diaphragm domes (the patient's right one, on
    # the image left, sits higher) and medially by the mediastinum
    k = 0.5 * min(lung_w, lung_h) / px
    sk = math.sqrt(k)
    t = ys - cy
    t *= 1 / lung_h  # -1 at the apex, 1 at the base
    m = t * -0.07
    m += ax
    m -= lung_x
    m /= t * 0.22 + 1.0
    m *= sk / lung_w
    m *= m
    t *= sk
    t *= t
    m += t
    np.subtract(k + 0.5, m, out=m)
    _clip(m, 0.0, 1.0, out=m)
    dd = ax - (lung_x - 0.03)
    dd *= dd
    dd *= -0.9
    dd += ys
    dd -= right * dome_step
    m *= _below(dd, dome, px)
    m *= _below(-ax, -0.1, px)
    lv += m

    # the heart bulges to the patient's left (image right); the aortic knob sits above it
    hx, hy, hw, hh = 0.14 + 0.06 * (heart - 1), 0.24, 0.33 * heart, 0.22 * heart
    for cx, cy_, w, h, extra in ((hx, hy, hw, hh, 0.03), (0.1, -0.28, 0.08, 0.06, 0.0)):
        win = film.window(cx - w, cx + w, cy_ - h, cy_ + h)
        if win is None:
            continue
        m = _ellipse(x[win], y[win], cx, cy_, w, h, px)
        if extra:
            img[win] += m * extra
        hv = lungs[win]
        np.subtract(1.0, m, out=m)
        hv *= m

    # vessel markings: sparse streaks indexed by a pseudo-angle around each hilum, fading outwards
    streaks = rng.random(96).astype(np.float32)
    streaks *= streaks > 0.55
    pang = ys + 0.02
    rad = np.abs(ax - 0.13)
    rad += np.abs(pang)
    rad += 1e-3
    pang /= rad  # a pseudo-angle in [-1, 1]
    pang *= 23.5
    pang += right * 48.0
    pang += 23.5
    ves = streaks[pang.astype(np.intp)]
    ves *= _below(rad, 1 / 3, 2 / 3)  # fades linearly to nothing at 2/3 from the hilum
    ves *= lv
    ves *= 0.12
    img[thorax] += ves

    img -= lungs * (0.32 + 0.06 * a[7])

    # posterior ribs: arcs leaving the spine, rising a little, then curving down along the chest wall,
    # brighter against aerated lung; anterior ribs: fainter, sloping down towards the sternum
    q = ax * -0.85
    q += rib_tilt
    q *= ax
    q += ys
    q *= 1 / spacing
    q += r[8]
    dist = q - np.floor(q)
    dist -= 0.5
    np.abs(dist, out=dist)  # 0 on a rib's axis, 0.5 half-way between ribs
    rib = _below(dist, 0.17, px / spacing)
    rib -= _below(dist, 0.07, px / spacing) * 0.4  # bright cortex, darker marrow
    rib *= _ellipse(xs, ys, 0.0, -0.1, body_w * 0.93, 0.8, px)
    rib *= lv * 0.09 + 0.05
    ax *= -0.45
    ax += ys
    ax *= 1 / (1.3 * spacing)
    ax += r[9]
    dist = ax - np.floor(ax)
    dist -= 0.5
    np.abs(dist, out=dist)
    ant = _below(dist, 0.15, 1.5 * px / spacing)
    ant *= lv
    ant *= 0.04
    rib += ant
    img[thorax] += rib

    # clavicles
    win = film.window(-0.75, 0.75, -0.95, -0.45)
    if win:
        xs, ys = x[win], y[win]
        ax = np.abs(xs)
        t = ax - 0.07
        cl = t * 0.12
        cl -= 0.22
        cl *= t
        cl -= ys
        cl += -0.6 - 0.04 * r[10]
        clav = _below(np.abs(cl, out=cl), 0.04, px)
        np.fmin(t, 0.59 - t, out=t)
        clav *= _inside(t, px)
        clav *= 0.2
        img[win] += clav

    # spine: a column of vertebrae, seen through the mediastinum
    win = film.window(-0.12, 0.12, -1.2, 1.2)
    if win:
        xs, ys = x[win], y[win]
        sp = _below(np.abs(xs), 0.07, px)
        vert = np.cos(ys * (2 * math.pi / (0.95 * spacing)))
        vert *= 0.025
        vert += 0.06
        sp *= vert
        sp *= body[win]
        img[win] += sp

    # lesion: a round opacity inside a lung field, clear of the heart; every draw happens even without one
    side = -1 if r[11] < 0.5 else 1
    cx = side * lung_x
    ang = 2 * math.pi * r[12]
    rho = 0.75 * math.sqrt(r[13])
    lx = cx + rho * lung_w * math.cos(ang)
    ly = cy + 0.1 + rho * lung_h * 0.8 * math.sin(ang)
    if side > 0 and ((lx - hx) / hw) ** 2 + ((ly - hy) / hh) ** 2 < 1.2:
        ly -= 0.4  # out of the heart shadow
    radius = 0.045 + 0.075 * r[14]
    if lesion and visibility > 0:
        win, blob = _blob(film, lx, ly, radius, "sphere")
        if win:
            blob *= lungs[win] * 0.7 + 0.3
            blob *= _CHEST_LESION_GAIN * visibility
            img[win] += blob
    return _expose(img, r[24:28], size)


# --------------------------------------------------------------------------------------------- hand

# per digit (thumb .. little): angle from vertical (deg), start radius, bone lengths, bone half-widths
_DIGIT_ANGLE = np.array([-40.0, -15.0, -3.0, 9.0, 21.0])
_DIGIT_R0 = np.array([0.16, 0.2, 0.2, 0.2, 0.2])
_DIGIT_LEN = np.array(
    [  # metacarpal, proximal, middle, distal phalanx
        [0.27, 0.19, 0.0, 0.14],
        [0.39, 0.25, 0.15, 0.11],
        [0.38, 0.28, 0.18, 0.12],
        [0.36, 0.26, 0.17, 0.12],
        [0.32, 0.2, 0.12, 0.1],
    ]
)
_DIGIT_HW = np.array(
    [
        [0.05, 0.046, 0.0, 0.038],
        [0.043, 0.043, 0.036, 0.03],
        [0.045, 0.045, 0.037, 0.03],
        [0.041, 0.042, 0.035, 0.029],
        [0.037, 0.037, 0.031, 0.026],
    ]
)
_CARPAL_R = np.array([0.2, 0.23, 0.17, 0.22, 0.19, 0.24, 0.18, 0.2] * 2, dtype=np.float32)  # squared radii
_GAPS = (0.024, 0.029, 0.034)  # joint-space widths (one look-up table each)
_HAND_BIN = 0.005
_HAND_NBINS = 400  # profiles along each digit from the focal point, up to 2 units
_FY = 0.42  # the digits radiate from a focal point at the wrist, (0, _FY) in the canonical frame


@lru_cache(maxsize=len(_GAPS))
def _digit_profiles(gap_level: int) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Look-up tables along each digit: bone, marrow and soft-tissue half-widths (flat, 5 × ``_HAND_NBINS``).

    The along-digit coordinate is measured from the focal point and divided by the digit's length factor,
    so one table per joint-space width serves every patient. Missing tissue is -1 (so nothing is drawn).
    Also returns where each bone starts, shape (5, 4).
    """
    gap = _GAPS[gap_level]
    u = (np.arange(_HAND_NBINS) + 0.5) * _HAND_BIN
    bone = np.full((5, _HAND_NBINS), -1.0)
    marrow = np.full((5, _HAND_NBINS), -1.0)
    soft = np.full((5, _HAND_NBINS), -1.0)
    starts = np.zeros((5, 4))
    for k in range(5):
        pos = _DIGIT_R0[k]
        for j in range(4):
            length = _DIGIT_LEN[k, j]
            if length == 0:
                continue
            starts[k, j] = pos
            t = (u - pos) / length
            inside = (t >= 0) & (t <= 1)
            s = 2 * t - 1
            end = np.sqrt(np.clip((1 - np.abs(s)) * length / 0.03, 0, 1))  # rounded bone ends
            hw = _DIGIT_HW[k, j] * (0.75 + 0.5 * s**4) * end
            bone[k] = np.where(inside, hw, bone[k])
            marrow[k] = np.where(inside & (np.abs(s) < 0.85), hw * 0.5 * (1 - s**6), marrow[k])
            pos += length + gap
        tip = pos - gap + 0.035
        cap = 0.06
        # wide near the base so that neighbouring digits merge into the palm (thumb: the thenar eminence)
        mcp = starts[k, 1]
        if k == 0:
            knots, widths = [0.0, 0.5 * (_DIGIT_R0[0] + mcp), mcp, tip - cap], [0.15, 0.13, 0.085, 0.075]
        else:
            web = mcp + 0.35 * _DIGIT_LEN[k, 1]
            knots, widths = [0.0, mcp - 0.02, web, tip - cap], [0.12, 0.12, 0.085, 0.07]
        sw = np.interp(u, knots, widths)
        rounded = sw * np.sqrt(np.clip(1 - ((u - (tip - cap)) / cap) ** 2, 0, 1))
        soft[k] = np.where(u < tip - cap, sw, np.where(u <= tip, rounded, -1.0))
    out = tuple(t.astype(np.float32).ravel() for t in (bone, marrow, soft)) + (starts,)
    for t in out:
        t.flags.writeable = False
    return out


def _render_hand(rng: np.random.Generator, seed: int, patient: int, lesion: bool, visibility: float, size: int):
    """One PA film of a left hand, ``uint8`` ``(1, size, size)``."""
    r = rng.random(32).tolist()
    a = _anatomy(seed, _SITE_CODE["hand"], patient)
    lens = [0.93 + 0.14 * v for v in a[:5]]  # digit length factors
    bone_lut, marrow_lut, soft_lut, starts = _digit_profiles(min(int(a[5] * len(_GAPS)), len(_GAPS) - 1))
    spread = 0.75 + 0.5 * r[0]
    scale = 1.0 + 0.12 * r[2] + 0.06 * (a[6] - 0.5)
    film = _Film(size, 0.2 * (r[1] - 0.5), 0.1 * (r[3] - 0.5), 0.06 * (r[4] - 0.5) + 0.02, scale, 1.0 + r[5])
    x, y, px = film.x, film.y, film.px
    angles = [math.radians(d * spread + 5 * (r[6 + k] - 0.5)) for k, d in enumerate(_DIGIT_ANGLE.tolist())]
    sa, ca = [math.sin(t) for t in angles], [math.cos(t) for t in angles]

    bone = np.zeros_like(x)
    marrow = np.zeros_like(x)
    soft = np.zeros_like(x)

    # digits: each pixel belongs to the nearest ray (by a pseudo-angle, no arctan); its distance along the
    # ray indexes 1-D profiles of bone, marrow and soft-tissue half-width, compared with its distance across
    win = film.window(-1.2, 1.2, -1.5, _FY)
    if win:
        xs, ys = x[win], y[win]
        up = _FY - ys
        pa = np.abs(xs)
        pa += np.abs(up)
        pa += 1e-6
        np.divide(xs, pa, out=pa)
        ray_pa = [s / (abs(s) + abs(c)) for s, c in zip(sa, ca, strict=True)]
        k = (pa > 0.5 * (ray_pa[0] + ray_pa[1])).astype(np.intp)
        for j in range(1, 4):
            k += pa > 0.5 * (ray_pa[j] + ray_pa[j + 1])
        sk = np.array(sa, dtype=np.float32)[k]
        ck = np.array(ca, dtype=np.float32)[k]
        along = xs * sk
        along += up * ck
        across = xs * ck
        across -= up * sk
        np.abs(across, out=across)
        along *= np.array([1 / (_HAND_BIN * v) for v in lens], dtype=np.float32)[k]
        _clip(along, 0, _HAND_NBINS - 1, out=along)
        ub = along.astype(np.intp)
        ub += k * _HAND_NBINS
        for lut, dest in ((bone_lut, bone), (marrow_lut, marrow), (soft_lut, soft)):
            d = lut[ub]
            d -= across
            dest[win] = _inside(d, px)

    # wrist and forearm soft tissue (the palm comes from the digits' wide soft tissue near their bases)
    win = film.window(-0.5, 0.5, _FY - 0.2, 1.5)
    if win:
        xs, ys = x[win], y[win]
        e = np.abs(xs + 0.01)
        np.fmax(e, (_FY - 0.12 + 0.25 + 0.04 * a[7]) - ys, out=e)
        sv = soft[win]
        np.fmax(sv, _below(e, 0.25 + 0.04 * a[7], px), out=sv)

    # carpal bones: two staggered rows of rounded bones of varying size with thin joint spaces
    win = film.window(-0.25, 0.25, _FY - 0.15, _FY + 0.12)
    if win:
        xs, ys = x[win], y[win]
        cv = ys - (_FY - 0.055)
        cv *= 1 / 0.09
        row = np.floor(cv)
        cu = xs * (1 / 0.085)
        cu += row * 0.5
        col = np.floor(cu)
        cell_r = _CARPAL_R[(col.astype(np.intp) + 3 + 8 * (row.astype(np.intp) & 1)) & 15]
        cu -= col
        cu -= 0.5
        cv -= row
        cv -= 0.5
        cu *= cu
        cv *= cv
        cu += cv
        cell_r -= cu
        carpal = _inside(cell_r, px / 0.085)
        carpal *= _ellipse(xs, ys, 0.0, _FY, 0.19, 0.1, px)
        inner = _below(cu, 0.07, px / 0.085)
        inner *= carpal
        bv = bone[win]
        np.fmax(bv, carpal, out=bv)
        marrow[win] += inner

    # radius and ulna, flaring at their distal ends
    win = film.window(-0.35, 0.35, _FY + 0.05, 1.5)
    if win:
        xs, ys = x[win], y[win]
        t = ys * -4.0
        t += 4 * (_FY + 0.1) + 1.0
        _clip(t, 0.0, 1.0, out=t)
        t *= t  # 1 at the distal end, 0 from 0.25 below it
        e_rad = np.abs(xs + 0.11)
        e_uln = np.abs(xs - 0.13)
        rad = _below(e_rad - t * 0.045, 0.075, px)
        np.fmax(rad, _below(e_uln - t * 0.015, 0.05, px), out=rad)
        rad *= _below(-ys, -(_FY + 0.12), px)
        bv = bone[win]
        np.fmax(bv, rad, out=bv)
        mr = _below(e_rad, 0.04, px)
        mr += _below(e_uln, 0.022, px)
        mr *= rad
        marrow[win] += mr

    img = soft * (0.24 + 0.05 * a[8])
    img += 0.04
    img += bone * 0.46
    img -= marrow * 0.16

    # lesion: a lytic (dark) focus in a metacarpal or proximal phalanx; every draw happens even without one
    dk = min(int(r[12] * 5), 4)
    dj = 0 if r[13] < 0.5 else 1
    along = (starts[dk, dj] + _DIGIT_LEN[dk, dj] * (0.3 + 0.4 * r[14])) * lens[dk]
    half = float(_DIGIT_HW[dk, dj])
    off = half * 0.5 * (r[15] - 0.5)
    lx = float(along * sa[dk] + off * ca[dk])
    ly = float(_FY - along * ca[dk] + off * sa[dk])
    radius = half * (1.0 + 0.5 * r[16])
    if lesion and visibility > 0:
        win, blob = _blob(film, lx, ly, radius, "disc")
        if win:
            blob *= bone[win]
            blob *= _HAND_LESION_GAIN * visibility
            img[win] -= blob
    return _expose(img, r[24:28], size)


# --------------------------------------------------------------------------------------------- the archive


class SyntheticArchive:
    """The plan for one spec (labels, patients, sites) and ``make(i)`` for its images.

    Example:
        >>> arc = SyntheticArchive(SyntheticSpec.parse("synthetic:hand,n=8"))
        >>> arc.make(3).shape, arc.make(3).dtype
        ((1, 64, 64), dtype('uint8'))
    """

    def __init__(self, spec: SyntheticSpec) -> None:
        self.spec = spec
        n, seed, plan = spec.n, spec.seed, _PLAN_CODE[spec.site]
        self.lesion = np.random.default_rng([seed, plan, 0]).random(n) < spec.prevalence
        sizes = np.random.default_rng([seed, plan, 1]).integers(1, 4, size=n)  # ≥ n patients, 1-3 images each
        self.patient = np.repeat(np.arange(n, dtype=np.int32), sizes)[:n]
        if spec.site == "both":
            patient_site = np.random.default_rng([seed, plan, 2]).random(n) < 0.5
            self.site_code = np.where(patient_site[self.patient], 2, 1).astype(np.int8)
        else:
            self.site_code = np.full(n, _SITE_CODE[spec.site], dtype=np.int8)

    def make(self, i: int) -> np.ndarray:
        spec, code = self.spec, int(self.site_code[i])
        rng = np.random.default_rng([spec.seed, code, i])
        p = int(self.patient[i])
        render = _render_chest if code == 1 else _render_hand
        return render(rng, spec.seed, p, bool(self.lesion[i]), spec.visibility, spec.size)

    def dataset(self) -> ImageDataset:
        spec = self.spec
        sites = np.array(SITES)[self.site_code - 1]
        image_id = [f"{s}-{i:06d}" for i, s in enumerate(sites)]
        patient_id = [f"{s}-p{p:06d}" for s, p in zip(sites, self.patient, strict=True)]
        meta = pd.DataFrame({"image_id": image_id, "patient_id": patient_id, "site": sites})
        kind = spec.label_kind
        if kind == "lesion":
            labels, names, task = self.lesion.astype(np.float32)[:, None], ("lesion",), "binary"
        elif kind == "site":
            labels, names, task = one_hot(self.site_code - 1, 2), SITES, "multiclass"
        else:
            labels, names, task = np.zeros((spec.n, 0), np.float32), (), "unlabelled"
        canonical = spec.canonical()
        images = GeneratedSource(spec.n, self.make, identity=f"{spec.canonical(labels=False)}|{GENERATOR_VERSION}")
        info = {"spec": canonical, "generator": GENERATOR_VERSION, "patients": int(self.patient[-1]) + 1}
        return ImageDataset(canonical, images, labels, names, task, meta, info)


@DATA_SOURCES.register("synthetic")
class SyntheticSource(DataSource):
    """Radiograph-like chest/hand phantoms with an optional lesion label, from a ``synthetic:`` spec."""

    name = "synthetic"
    description = "deterministic chest/hand radiograph phantoms, e.g. synthetic:chest,n=400,visibility=0.4"

    @staticmethod
    def detect(path: Path) -> bool:
        return str(path).startswith("synthetic:")

    def load(self, path: Path, options: SourceOptions) -> ImageDataset:
        return SyntheticArchive(SyntheticSpec.parse(str(path))).dataset()


def load_synthetic(spec: str) -> ImageDataset:
    """Shortcut for ``load_dataset(spec)`` without the registry.

    Example:
        >>> load_synthetic("synthetic:both,n=10").label_names
        ('chest', 'hand')
    """
    return SyntheticArchive(SyntheticSpec.parse(spec)).dataset()
