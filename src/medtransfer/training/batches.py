"""Batches from the uint8 image cache: no ``DataLoader`` workers, no per-item Python objects.

Shuffling and augmentation draw from generators seeded by ``(seed, epoch)``, so epoch ``e`` is the same
whether or not the run was interrupted before it.

On CUDA the host only gathers the batch's uint8 rows from the memmap into pinned memory; the copy to the device
is asynchronous (``non_blocking=True``) and the uint8 → float conversion, augmentation and normalisation run on
the device. Nothing in :meth:`Batches.epoch` waits for the device, so the host prepares batch ``k + 1`` while the
device still computes step ``k``.
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Iterator

import numpy as np
import torch

from medtransfer.data.transforms import normalize


class Batches:
    """Iterate ``(x, y)`` batches over ``images[indices]`` with optional shuffling and augmentation.

    ``images``: uint8 array ``(N, C, S, S)`` (a memmap of the cache); ``labels``: float ``(N, K)``.
    ``augment(x, generator)`` maps a ``[0, 1]`` batch to the augmented batch, normalised afterwards; it may add
    an axis after the first (:class:`~medtransfer.pretrain.ssl.ContrastiveViews`: ``(B, 2, C, S, S)`` view pairs).

    Example:
        >>> images = np.zeros((10, 1, 8, 8), np.uint8); labels = np.zeros((10, 1), np.float32)
        >>> b = Batches(images, labels, np.arange(10), 4, [0.5], [0.25], torch.device("cpu"), shuffle=True)
        >>> [tuple(x.shape) for x, _ in b.epoch(seed=0, epoch=0)]
        [(4, 1, 8, 8), (4, 1, 8, 8), (2, 1, 8, 8)]
    """

    def __init__(
        self,
        images: np.ndarray,
        labels: np.ndarray,
        indices: np.ndarray,
        batch_size: int,
        mean: list[float],
        std: list[float],
        device: torch.device,
        augment: Callable[[torch.Tensor, torch.Generator], torch.Tensor] | None = None,
        shuffle: bool = False,
        drop_last: bool = False,
    ) -> None:
        self.images, self.labels, self.indices = images, labels, np.asarray(indices, dtype=np.int64)
        self.batch_size, self.mean, self.std, self.device = batch_size, mean, std, device
        self.augment, self.shuffle = augment, shuffle
        # dropping a last batch of 1 keeps BatchNorm from failing on tiny subsets, never the whole set
        self.drop_last = drop_last and len(self.indices) > batch_size
        self.pin = device.type == "cuda"
        # made once on the device: building them from Python lists at every batch would be a blocking
        # host → device copy (a full stream synchronisation on CUDA); the values are the same float32 numbers
        self._mean = torch.as_tensor(mean, dtype=torch.float32, device=device)
        self._std = torch.as_tensor(std, dtype=torch.float32, device=device)

    max_batches: int | None = None  # set by training.fitting.cap_epochs: an epoch stops after this many batches

    def with_augment(self, augment: Callable[[torch.Tensor, torch.Generator], torch.Tensor] | None) -> Batches:
        """The same batches (same order, no shuffling change) with another augmentation: test-time views."""

        other = copy.copy(self)
        other.augment = augment
        return other

    def __len__(self) -> int:
        n = len(self.indices)
        full = n // self.batch_size if self.drop_last else -(-n // self.batch_size)
        return full if self.max_batches is None else min(full, self.max_batches)

    def epoch(self, seed: int, epoch: int) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        """The batches of epoch ``epoch``: shuffled and augmented from seeds derived from ``(seed, epoch)``."""
        state = int(np.random.SeedSequence([seed, epoch]).generate_state(1)[0])
        g = torch.Generator().manual_seed(state)
        order = self.indices[torch.randperm(len(self.indices), generator=g).numpy()] if self.shuffle else self.indices
        aug_g = g if not self.pin else _device_generator(self.device, seed, epoch)
        for b in range(len(self)):
            idx = order[b * self.batch_size : (b + 1) * self.batch_size]
            sorted_idx = np.sort(idx)  # sequential reads from the memmap, then restore the order
            x = torch.from_numpy(self.images[sorted_idx][np.argsort(np.argsort(idx))])
            y = torch.from_numpy(self.labels[idx].astype(np.float32))
            if self.pin:
                x, y = x.pin_memory(), y.pin_memory()
            # uint8 crosses the bus (4x fewer bytes than float32); conversion happens on the device
            x = x.to(self.device, non_blocking=True).float().div_(255.0)
            y = y.to(self.device, non_blocking=True)
            if self.augment is not None:
                x = self.augment(x, aug_g)
            yield normalize(x, self._mean, self._std), y


def _device_generator(device: torch.device, seed: int, epoch: int) -> torch.Generator:
    """The augmentation generator of a CUDA epoch, seeded from ``(seed, epoch)`` like the CPU one.

    The augmentations draw their parameters with ``device=generator.device``; with a CPU generator they would be
    drawn on the host and copied to the device one by one, and each such copy from pageable memory synchronises
    the stream. A generator on the device keeps the draws there: the same seed gives the same augmentations on
    the same device (resume included), but not the same ones as a CPU run.
    """
    state = int(np.random.SeedSequence([seed, epoch, 3]).generate_state(1)[0])
    return torch.Generator(device=device).manual_seed(state)
