"""One colour rule for a whole dataset: every image reaches the model with the same number of channels.

An archive often mixes colour modes (greyscale PNGs, RGB JPEGs of grey films, a stray RGBA screenshot). The readers
(:func:`~medtransfer.data.readers.read_pixels`) first bring each file to its *natural* channels:

* RGBA → RGB, alpha dropped (not composited: the stored colour values are kept); LA → L; 1-bit → L;
* palette (P, PA) → expanded through its palette to RGB, then treated like any RGB image;
* RGB (after the two steps above, or a colour DICOM) whose three channels are equal → 1 channel (grey content);
* 16-bit and 32-bit grey (I;16, I), float (F), DICOM and NIfTI: 1 channel, as :mod:`~medtransfer.data.readers` reads
  them.

Then :func:`conform` brings the natural channels to the dataset's channels (``data.channels``):

* target 1: a truly colour image (channels differ) → grey by the ITU-R 601 luma weights
  (``L = 0.299 R + 0.587 G + 0.114 B``, PIL's ``convert('L')``);
* target 3: a grey image → the same values copied to 3 channels.

``data.channels: null`` takes the channels most images have (:func:`decide_channels`): the colour mode in the header of
every image (up to :data:`HEADERS_READ` evenly spaced ones, no pixel decode) and, among those whose mode can hold colour
(RGB, RGBA, P, colour DICOM), the pixels of up to :data:`PIXELS_READ` evenly spaced ones to tell grey content from
colour. Colour wins a tie (nothing is lost by copying grey to 3 channels).

Training (the decoded-image cache) and ``data inspect`` both read through :func:`conform` and describe what it did with
:func:`describe_conversions`, so the two never disagree.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass

import numpy as np
from PIL import Image

from medtransfer.data.dataset import ImageSource
from medtransfer.errors import DataError

CHANNELS = (1, 3)
HEADERS_READ = 1000  # headers read to decide the majority (all images in a smaller set)
PIXELS_READ = 32  # images whose mode can hold colour, decoded to tell grey content from colour

GREY_CONTENT = "grey content"  # stored in a colour mode, channels equal: read as 1 channel
LUMA = "luma"  # truly colour, converted to grey for a 1-channel dataset
REPLICATED = "replicated"  # stored grey, copied to 3 channels for a 3-channel dataset

_GREY_PIL_MODES = ("1", "L", "LA", "La", "I", "F")


def may_hold_colour(mode: str) -> bool:
    """Whether a file stored in ``mode`` (a PIL mode, ``DICOM <PhotometricInterpretation>`` or ``NIfTI``) can hold
    colour: RGB, RGBA, P, CMYK, colour DICOM ... but not L, LA, 1, I;16, I, F, MONOCHROME1/2 or NIfTI."""
    if mode == "NIfTI" or mode.startswith("I;16"):
        return False
    if mode.startswith("DICOM"):
        return "MONOCHROME" not in mode
    return mode not in _GREY_PIL_MODES


@dataclass(frozen=True)
class ColourNote:
    """How one image was read: the mode its file stores and what :func:`conform` did (``None``: nothing)."""

    mode: str
    natural: int  # channels after the readers' rules (1 = grey content)
    action: str | None = None

    @property
    def label(self) -> str:
        """``RGB``, ``RGB (grey content)``, ``L`` ...: what ``data inspect`` counts."""
        return f"{self.mode} (grey content)" if self.natural == 1 and may_hold_colour(self.mode) else self.mode


def to_grey(img: np.ndarray) -> np.ndarray:
    """A ``(3, H, W)`` colour image → ``(1, H, W)`` by the ITU-R 601 luma weights (PIL's ``convert('L')`` for uint8,
    the same weights in float for other dtypes, which keep their dtype)."""
    if img.dtype == np.uint8:
        return np.asarray(Image.fromarray(np.moveaxis(img, 0, -1)).convert("L"))[None]
    r, g, b = (img[k].astype(np.float64) for k in range(3))
    grey = (r * 299 + g * 587 + b * 114) / 1000
    if np.issubdtype(img.dtype, np.integer):
        grey = np.rint(grey)
    return grey.astype(img.dtype)[None]


def conform(img: np.ndarray, mode: str, channels: int) -> tuple[np.ndarray, ColourNote]:
    """Image ``(C, H, W)`` with its natural channels (1 or 3) → ``(channels, H, W)``, and a note of what was done.

    Example:
        >>> grey = np.zeros((1, 2, 2), np.uint8)
        >>> out, note = conform(grey, "L", 3)
        >>> out.shape, note.action
        ((3, 2, 2), 'replicated')
    """
    natural = img.shape[0]
    if natural not in CHANNELS or channels not in CHANNELS:
        raise DataError(f"cannot bring a {natural}-channel image to {channels} channel(s); data.channels is 1 or 3")
    action = None
    if channels == 1 and natural == 3:
        img, action = to_grey(img), LUMA
    elif channels == 1 and may_hold_colour(mode):
        action = GREY_CONTENT
    elif channels == 3 and natural == 1:
        img = np.repeat(img, 3, axis=0)
        action = None if may_hold_colour(mode) else REPLICATED  # grey-content RGB: back to what the file holds
    return img, ColourNote(mode, natural, action)


def describe_conversions(channels: int, actions: Mapping[str | None, int]) -> str:
    """What :func:`conform` did to a set of images, in one line (``data inspect`` prints it, training logs it).

    Example:
        >>> describe_conversions(1, {"grey content": 30, "luma": 2})
        'channels=1: 30 RGB images whose channels are equal read as grey; 2 colour images converted to grey (luma)'
    """
    parts = []
    if actions.get(GREY_CONTENT):
        parts.append(f"{actions[GREY_CONTENT]} RGB images whose channels are equal read as grey")
    if actions.get(LUMA):
        parts.append(f"{actions[LUMA]} colour images converted to grey (luma)")
    if actions.get(REPLICATED):
        parts.append(f"{actions[REPLICATED]} grey images copied to 3 channels")
    return f"channels={channels}: " + ("; ".join(parts) if parts else "every image read as stored")


def decide_channels(
    n: int,
    header_mode: Callable[[int], str],
    read_natural: Callable[[int], np.ndarray],
    headers: int = HEADERS_READ,
    pixels: int = PIXELS_READ,
) -> int:
    """The channels most of ``n`` images have: 1 or 3 (see the module docstring for what is read).

    ``header_mode(i)`` gives image ``i``'s stored mode without decoding, ``read_natural(i)`` its natural ``(C, H, W)``
    pixels; both raise :class:`DataError` for a broken file. Broken files are skipped here (the decode reports them);
    only when no header at all can be read is the first error raised.

    Example:
        >>> decide_channels(3, lambda i: ["L", "L", "RGB"][i], lambda i: np.zeros((3, 2, 2)))
        1
    """
    idx = _evenly(n, headers)
    modes: dict[int, str] = {}
    first: DataError | None = None
    for i in idx:
        try:
            modes[i] = header_mode(i)
        except DataError as e:
            first = first or e
    if not modes:
        if first is not None:
            raise first
        return 1  # no images at all: the caller reports that
    maybe = [i for i, m in modes.items() if may_hold_colour(m)]
    if not maybe:
        return 1
    colour = checked = 0
    for k in _evenly(len(maybe), pixels):
        try:
            colour += read_natural(maybe[k]).shape[0] == 3
            checked += 1
        except DataError:
            continue
    share = colour / checked if checked else 1.0  # none decodes: trust the headers
    return 3 if 2 * len(maybe) * share >= len(modes) else 1


def _evenly(n: int, k: int) -> list[int]:
    if n <= k:
        return list(range(n))
    return sorted(set(np.linspace(0, n - 1, k).astype(int).tolist()))


class ConformedSource(ImageSource):
    """Another source's images brought to ``channels`` by :func:`conform`: ``data.channels`` for a source whose images
    all come in one mode (MedMNIST, NIH, synthetic); the folder source applies the rule per image itself."""

    def __init__(self, parent: ImageSource, channels: int) -> None:
        self.parent = parent
        self.channels = channels

    def __len__(self) -> int:
        return len(self.parent)

    def load(self, i: int) -> np.ndarray:
        return self.load_with_note(i)[0]

    def load_with_note(self, i: int) -> tuple[np.ndarray, ColourNote]:
        img = self.parent.load(i)
        return conform(img, "RGB" if img.shape[0] == 3 else "L", self.channels)

    @property
    def identity(self) -> str:
        return f"channels={self.channels}:{self.parent.identity}"

    def describe(self, i: int) -> str:
        return self.parent.describe(i)

    @property
    def content(self) -> str | None:
        return self.parent.content  # the same images, whatever channels they are read with
