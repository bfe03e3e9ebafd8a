"""Deterministic radiograph-like phantoms of two anatomical sites (``chest``, ``hand``), data format ``synthetic``.

The dataset "path" is a spec string::

    synthetic:SITE[,key=value...]      e.g.  synthetic:chest,n=400,visibility=0.4,seed=1

``SITE`` is ``chest``, ``hand`` or ``both`` (alias ``mixed``); keys: ``n`` (512), ``size`` (64),
``visibility`` (0.5; lesion contrast, 0 = invisible, 1 = obvious), ``prevalence`` (0.5), ``seed`` (0) and
``labels``: ``lesion`` (binary, the default for one site), ``site`` (multi-class ``chest``/``hand``, the default
for ``both``), ``age`` (regression: one column ``age``, the hand's age in years; only for ``hand``, e.g.
``synthetic:hand,labels=age,n=500``) or ``none`` (an unlabelled archive for self-supervised pretraining).

* chest: a PA film: body outline and neck, two lungs (apex medial, base wide) cut by diaphragm domes (the
  patient's right one higher), mediastinum and spine, a heart bulging to the patient's left (image right) with
  the aortic knob, clavicles, posterior and anterior rib arcs, vessel markings fanning out from the hila.
  Lesion: a round soft opacity inside a lung field, about as bright as a rib.
* hand: a PA film of a left hand: five digits radiating from the wrist (the thumb angled, with two phalanges)
  whose metacarpals and phalanges have bright cortex, darker marrow and joint spaces; carpal bones, radius and
  ulna, and the soft-tissue envelope. Lesion: a lytic (dark) focus in a metacarpal or proximal phalanx.
  Every hand has an age, uniform on [1, 18] years per pseudo-patient, that drives its skeletal maturity (the
  soft-tissue outline stays the same): the ossified shafts of the metacarpals and phalanges lengthen into the
  cartilage at their ends (about two thirds of the adult bone at 1 year); their epiphyses (at the base of each
  phalanx and of the thumb's metacarpal, at the head of the other metacarpals) appear at 1.3-2.4 years as small
  round nuclei and widen to the shaft's width by about 10, separated from the shaft by a growth-plate gap that
  narrows through childhood and closes from 13.5 to 17 years; the carpal centres ossify one by one (capitate
  and hamate in the first year, triquetrum 2.5, lunate 3.5, trapezium 4.5, trapezoid 5, scaphoid 5.5,
  pisiform 10) and each grows to full size over the next six years; the distal radius epiphysis grows from
  the first year and the ulna's from 6, both fusing by 18; the cortex thickens a little (marrow from 62 % to
  50 % of a shaft's width by 13).
* every film: random pose (rotation, translation, scale), patient build, exposure (curve, window/level), edge
  blur and Poisson-like quantum noise; ``uint8`` ``(1, size, size)``.

Image ``i`` is drawn from ``np.random.default_rng([seed, site_code, i])`` plus its pseudo-patient's anatomy
(row ``patient % 1024`` of ``default_rng([seed, 10 + site_code, patient // 1024])``), so any image can be made
lazily, in any order, identically every time. Every draw happens whether or not the image has a lesion, so at
``visibility=0`` a positive film is bit-identical to its negative twin. Lesion labels, the grouping into
pseudo-patients of 1-3 films, each patient's age and, for ``both``, each patient's site come from seeded
vectors whose prefix does not depend on ``n``.
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

GENERATOR_VERSION = "phantom-v2"  # bump whenever the pictures change (it is part of the cache identity)
SITES = ("chest", "hand")
_SITE_CODE = {"chest": 1, "hand": 2}
_PLAN_CODE = {"chest": 21, "hand": 22, "both": 23}  # seeded vectors: labels, patients, patient site, hand age
_LABEL_KINDS = ("lesion", "site", "age", "none")
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
        hint = f"valid keys: {valid} (site: chest|hand|both, labels: {'|'.join(_LABEL_KINDS)}); e.g. {_EXAMPLE}"
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
        if self.label_kind == "age" and self.site != "hand":
            return "labels=age needs site=hand (only hands have an age)"
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
_EPI_ONSET = (1.8, 1.3, 2.0, 1.6)  # age (years) at which a bone's epiphysis ossifies, by bone (+0.1 per digit)
_GAPS = (0.024, 0.029, 0.034)  # joint-space widths (one look-up table each)
_HAND_BIN = 0.005
_HAND_NBINS = 400  # profiles along each digit from the focal point, up to 2 units
_FY = 0.42  # the digits radiate from a focal point at the wrist, (0, _FY) in the canonical frame

AGE_RANGE = (1.0, 18.0)  # a hand's age in years: uniform on this range, per pseudo-patient
_AGE_STEP = 0.25  # the digit look-up tables are tabulated at this age step (a fraction of a bin of growth)
_AGE_LEVELS = round((AGE_RANGE[1] - AGE_RANGE[0]) / _AGE_STEP) + 1

# carpal ossification: the bones sit on a lattice of 3 rows (distal -1, 0, proximal 1) × 8 columns (radial
# side first); each cell has a squared radius (in cell units) and the age (years) at which its centre appears
_CARPAL_R = np.array([0.2, 0.23, 0.17, 0.22, 0.19, 0.24, 0.18, 0.2] * 3, dtype=np.float32)
_CARPAL_ONSET = (
    # row -1: slivers between the distal row and the metacarpal bases
    (9.0, 6.0, 4.0, 6.0, 9.0, 9.0, 9.0, 9.0),
    # row 0 (distal): ..., trapezium, trapezoid, capitate, hamate, ...
    (6.0, 4.5, 5.0, 0.3, 0.6, 3.0, 9.0, 9.0),
    # row 1 (proximal): ..., (scaphoid tubercle), scaphoid, lunate, triquetrum, pisiform, ...
    (9.0, 7.0, 5.5, 3.5, 2.5, 10.0, 9.0, 9.0),
)
_CARPAL_STEP = 0.05  # the carpal table is tabulated at this age step
_CARPAL_ABSENT = -100.0  # squared radius of a cell not yet ossified (nothing is drawn at any film size)


def _ramp(x: np.ndarray | float) -> np.ndarray:
    return np.clip(x, 0.0, 1.0)


def _smoothstep(x: np.ndarray | float) -> np.ndarray:
    x = np.clip(x, 0.0, 1.0)
    return x * x * (3 - 2 * x)


def _growth(age: np.ndarray | float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Shared maturation curves: childhood (0 at 1 year → 1 at 13), hand physis closure (13.5 → 17 years) and
    marrow fraction of a shaft's half-width (0.62 → 0.5: the cortex thickens with age)."""
    child = _ramp((np.asarray(age, dtype=np.float64) - 1.0) / 12.0)
    fused = _smoothstep((np.asarray(age, dtype=np.float64) - 13.5) / 3.5)
    return child, fused, 0.62 - 0.12 * child


def _bone_profile(
    ages: np.ndarray, t: np.ndarray, length: float, half_width: float, epi_first: bool, onset: float
) -> tuple[np.ndarray, np.ndarray]:
    """Half-widths of ossified bone and of marrow along one tubular bone, at each age: ``(len(ages), len(t))``.

    ``t`` runs along the bone's full (adult) extent, 0 at its proximal end; -1 where there is no bone. A child's
    bone is a shaft plus, at one end (``epi_first``: the proximal end), an epiphysis: the shaft's ossified part
    lengthens with age into unossified cartilage at both ends; the epiphysis appears at ``onset`` years as a
    small round nucleus, grows to the width of the shaft, and is separated from it by a growth-plate gap that
    narrows through childhood and closes (fuses) in the late teens, leaving the adult bone.
    """
    age = ages[:, None]
    child, fused, marrow_frac = _growth(age)
    te = t[None, :] if epi_first else 1.0 - t[None, :]  # measured from the epiphyseal end
    s = 2 * t[None, :] - 1
    base = half_width * (0.75 + 0.5 * s**4)
    physis = 0.17  # the physis (growth plate), as a fraction of the length from the epiphyseal end
    gap = (0.05 + 0.09 * (1 - child)) * (1 - fused)  # its width, in the same units
    closing = _ramp(gap * length / 0.01)  # 0 once fused: the pieces join without rounded ends
    far = 0.1 * (1 - child) ** 1.5  # unossified cartilage at the other end
    near = 0.06 * (1 - child)  # ... and around the epiphysis

    def rounded(d: np.ndarray, cap: np.ndarray | float) -> np.ndarray:  # sqrt ramp over the last `cap` units
        return np.sqrt(_ramp(d / np.maximum(cap, 1e-9)))

    # the shaft
    d_far = (1 - far - te) * length
    d_phys = (te - physis - gap / 2) * length
    shaft = base * rounded(d_far, 0.015) * rounded(d_phys, 0.006 * closing)
    shaft = np.where((d_far > 0) & (d_phys > 0), shaft, 0.0)
    # the epiphysis: a nucleus against the physis, from `near` of the end when fully grown
    mature = _ramp((age - onset) / 8.0) ** 0.6
    e1 = physis - gap / 2
    e0 = e1 - (e1 - near) * mature
    d_out, d_in = (te - e0) * length, (e1 - te) * length
    cap = np.minimum((e1 - e0) * length / 2, 0.015)
    epi = base * (0.45 + 0.55 * mature) * rounded(d_out, cap) * rounded(d_in, cap * closing)
    epi = np.where((d_out > 0) & (d_in > 0) & (mature > 0), epi, 0.0)
    bone = np.maximum(shaft, epi)
    marrow = (shaft + epi * mature) * marrow_frac * (1 - s**6)
    marrow = np.where(np.abs(s) < 0.85, marrow, 0.0)
    return np.where(bone > 0, bone, -1.0), np.where(marrow > 0, marrow, -1.0)


@lru_cache(maxsize=1)
def _digit_profiles() -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Look-up tables along each digit: bone and marrow half-widths by age level and joint-space width
    (``(_AGE_LEVELS, len(_GAPS), 5 × _HAND_NBINS)``), soft-tissue half-width by joint-space width.

    The along-digit coordinate is measured from the focal point and divided by the digit's length factor,
    so one table per age level and joint-space width serves every patient. Missing tissue is -1 (so nothing
    is drawn). Also returns where each bone starts, shape ``(len(_GAPS), 5, 4)``.
    """
    ages = AGE_RANGE[0] + _AGE_STEP * np.arange(_AGE_LEVELS)
    u = (np.arange(_HAND_NBINS) + 0.5) * _HAND_BIN
    bone = np.full((_AGE_LEVELS, len(_GAPS), 5, _HAND_NBINS), -1.0, dtype=np.float32)
    marrow = np.full_like(bone, -1.0)
    soft = np.full((len(_GAPS), 5, _HAND_NBINS), -1.0)
    starts = np.zeros((len(_GAPS), 5, 4))
    for g, gap in enumerate(_GAPS):
        for k in range(5):
            pos = _DIGIT_R0[k]
            for j in range(4):
                if _DIGIT_LEN[k, j] > 0:
                    starts[g, k, j] = pos
                    pos += _DIGIT_LEN[k, j] + gap
    for k in range(5):
        for j in range(4):
            length = _DIGIT_LEN[k, j]
            if length == 0:
                continue
            # one profile per bone serves all joint-space levels (only the bins it falls on differ)
            cols = [np.flatnonzero((u >= pos) & (u <= pos + length)) for pos in starts[:, k, j]]
            t = np.concatenate([(u[c] - pos) / length for c, pos in zip(cols, starts[:, k, j], strict=True)])
            epi_first = j > 0 or k == 0  # phalanges and the thumb's metacarpal: at the base; others: head
            b, m = _bone_profile(ages, t, length, _DIGIT_HW[k, j], epi_first, _EPI_ONSET[j] + 0.1 * k)
            split = np.cumsum([len(c) for c in cols])[:-1]
            pieces = zip(cols, np.split(b, split, axis=1), np.split(m, split, axis=1), strict=True)
            for g, (c, bg, mg) in enumerate(pieces):
                bone[:, g, k, c], marrow[:, g, k, c] = bg, mg
    for g in range(len(_GAPS)):
        for k in range(5):
            last = 3  # the distal phalanx
            tip = starts[g, k, last] + _DIGIT_LEN[k, last] + 0.035
            cap = 0.06
            # wide near the base so that neighbouring digits merge into the palm (thumb: the thenar eminence)
            mcp = starts[g, k, 1]
            if k == 0:
                knots, widths = [0.0, 0.5 * (_DIGIT_R0[0] + mcp), mcp, tip - cap], [0.15, 0.13, 0.085, 0.075]
            else:
                web = mcp + 0.35 * _DIGIT_LEN[k, 1]
                knots, widths = [0.0, mcp - 0.02, web, tip - cap], [0.12, 0.12, 0.085, 0.07]
            sw = np.interp(u, knots, widths)
            rounded = sw * np.sqrt(np.clip(1 - ((u - (tip - cap)) / cap) ** 2, 0, 1))
            soft[g, k] = np.where(u < tip - cap, sw, np.where(u <= tip, rounded, -1.0))
    out = (
        bone.reshape(_AGE_LEVELS, len(_GAPS), -1),
        marrow.reshape(_AGE_LEVELS, len(_GAPS), -1),
        soft.astype(np.float32).reshape(len(_GAPS), -1),
        starts,
    )
    for t in out:
        t.flags.writeable = False
    return out


@lru_cache(maxsize=1)
def _carpal_table() -> np.ndarray:
    """Squared radius of each carpal lattice cell by age level, ``(levels, 32)``: absent before the cell's
    onset, then a centre growing from a fifth of its full radius to all of it over six years."""
    ages = AGE_RANGE[0] + _CARPAL_STEP * np.arange(round((AGE_RANGE[1] - AGE_RANGE[0]) / _CARPAL_STEP) + 1)
    onset = np.full(32, np.inf)
    onset[:24] = np.array(_CARPAL_ONSET).ravel()
    grown = _ramp((ages[:, None] - onset[None, :]) / 6.0) ** 0.8
    radius2 = np.zeros(32)
    radius2[:24] = _CARPAL_R
    table = np.where(ages[:, None] >= onset[None, :], radius2 * (0.2 + 0.8 * grown) ** 2, _CARPAL_ABSENT)
    table = table.astype(np.float32)
    table.flags.writeable = False
    return table


def _render_hand(
    rng: np.random.Generator, seed: int, patient: int, lesion: bool, visibility: float, size: int, age: float
):
    """One PA film of a left hand of a child or young adult ``age`` years old, ``uint8`` ``(1, size, size)``."""
    r = rng.random(32).tolist()
    a = _anatomy(seed, _SITE_CODE["hand"], patient)
    age = min(max(float(age), AGE_RANGE[0]), AGE_RANGE[1])
    lens = [0.93 + 0.14 * v for v in a[:5]]  # digit length factors
    bone_luts, marrow_luts, soft_luts, starts = _digit_profiles()
    gap_level = min(int(a[5] * len(_GAPS)), len(_GAPS) - 1)
    age_level = round((age - AGE_RANGE[0]) / _AGE_STEP)
    bone_lut, marrow_lut = bone_luts[age_level, gap_level], marrow_luts[age_level, gap_level]
    soft_lut, starts = soft_luts[gap_level], starts[gap_level]
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

    # carpal bones: two staggered rows of rounded bones of varying size with thin joint spaces, each
    # ossifying at its own age and growing to full size over the following years
    win = film.window(-0.25, 0.25, _FY - 0.15, _FY + 0.12)
    if win:
        xs, ys = x[win], y[win]
        cv = ys - (_FY - 0.055)
        cv *= 1 / 0.09
        row = np.floor(cv)
        cu = xs * (1 / 0.085)
        cu += row * 0.5
        col = np.floor(cu)
        cell = row.astype(np.intp)
        cell += 1
        cell &= 3
        cell *= 8
        ci = col.astype(np.intp)
        ci += 3
        ci &= 7
        cell += ci
        cell_r = _carpal_table()[round((age - AGE_RANGE[0]) / _CARPAL_STEP)][cell]
        cu -= col
        cu -= 0.5
        cv -= row
        cv -= 0.5
        cu *= cu
        cv *= cv
        cu += cv
        inner = cell_r * 0.35
        cell_r -= cu
        carpal = _inside(cell_r, px / 0.085)
        carpal *= _ellipse(xs, ys, 0.0, _FY, 0.19, 0.1, px)
        inner -= cu
        inner = _inside(inner, px / 0.085)
        inner *= carpal
        bv = bone[win]
        np.fmax(bv, carpal, out=bv)
        marrow[win] += inner

    # radius and ulna, flaring at their distal ends; until their physes close (late teens) the distal
    # epiphyses are separate domes beyond a growth-plate gap, the ulna's appearing only at school age
    child, _, marrow_frac = _growth(age)
    child, marrow_frac = float(child), float(marrow_frac) / 0.5
    phys = _FY + 0.18  # the physis; the mature radius reaches 0.06 beyond it, as far as _FY + 0.12
    gap = (0.012 + 0.025 * (1 - child)) * (1 - float(_smoothstep((age - 14.5) / 3.5)))
    win = film.window(-0.35, 0.35, _FY + 0.05, 1.5)
    if win:
        xs, ys = x[win], y[win]
        t = ys * -4.0
        t += 4 * (phys - 0.02) + 1.0
        _clip(t, 0.0, 1.0, out=t)
        t *= t  # 1 near the distal end, 0 from 0.25 below it
        e_rad = np.abs(xs + 0.11)
        e_uln = np.abs(xs - 0.13)
        rad = _below(e_rad - t * 0.045, 0.075, px)
        np.fmax(rad, _below(e_uln - t * 0.015, 0.05, px), out=rad)
        rad *= _below(-ys, -(phys + gap / 2), px)
        bv = bone[win]
        np.fmax(bv, rad, out=bv)
        mr = _below(e_rad, 0.04 * marrow_frac, px)
        mr += _below(e_uln, 0.022 * marrow_frac, px)
        mr *= rad
        marrow[win] += mr
    w_rad = float(_ramp((age - 0.8) / 10.0)) ** 0.7
    w_uln = float(_ramp((age - 6.0) / 8.0)) ** 0.7
    top = phys - gap / 2  # the epiphyses' flat face, against the physis
    win = film.window(-0.24, 0.2, top - 0.065, top) if w_rad > 0 else None
    if win:
        xs, ys = x[win], y[win]
        epi = _ellipse(xs, ys, -0.11, top, 0.115 * w_rad, 0.06 * w_rad, px)
        if w_uln > 0:
            np.fmax(epi, _ellipse(xs, ys, 0.13, top, 0.063 * w_uln, 0.05 * w_uln, px), out=epi)
        epi *= _below(ys, top, px)
        bv = bone[win]
        np.fmax(bv, epi, out=bv)

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
        # every image gets its patient's age in years (used only by hand films), float32 as labelled
        low, high = AGE_RANGE
        patient_age = low + (high - low) * np.random.default_rng([seed, plan, 3]).random(n)
        self.age = patient_age.astype(np.float32)[self.patient]

    def make(self, i: int) -> np.ndarray:
        spec, code = self.spec, int(self.site_code[i])
        rng = np.random.default_rng([spec.seed, code, i])
        p = int(self.patient[i])
        if code == 1:
            return _render_chest(rng, spec.seed, p, bool(self.lesion[i]), spec.visibility, spec.size)
        return _render_hand(rng, spec.seed, p, bool(self.lesion[i]), spec.visibility, spec.size, float(self.age[i]))

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
        elif kind == "age":
            labels, names, task = self.age[:, None].copy(), ("age",), "regression"
        else:
            labels, names, task = np.zeros((spec.n, 0), np.float32), (), "unlabelled"
        canonical = spec.canonical()
        images = GeneratedSource(spec.n, self.make, identity=f"{spec.canonical(labels=False)}|{GENERATOR_VERSION}")
        info = {"spec": canonical, "generator": GENERATOR_VERSION, "patients": int(self.patient[-1]) + 1}
        return ImageDataset(canonical, images, labels, names, task, meta, info)


@DATA_SOURCES.register("synthetic")
class SyntheticSource(DataSource):
    """Radiograph-like chest/hand phantoms with a lesion, site or (hand) age label, from a ``synthetic:`` spec."""

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
