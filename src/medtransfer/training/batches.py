"""Batches from the uint8 image cache: no ``DataLoader`` workers, no per-item Python objects.

Shuffling and augmentation draw from a generator seeded by ``(seed, epoch)``, so epoch ``e`` is the same
whether or not the run was interrupted before it.
"""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np
import torch

from medtransfer.data.transforms import RadiographAugment, normalize


class Batches:
    """Iterate ``(x, y)`` batches over ``images[indices]`` with optional shuffling and augmentation.

    ``images``: uint8 array ``(N, C, S, S)`` (a memmap of the cache); ``labels``: float ``(N, K)``.
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
        augment: RadiographAugment | None = None,
        shuffle: bool = False,
        drop_last: bool = False,
    ) -> None:
        self.images, self.labels, self.indices = images, labels, np.asarray(indices, dtype=np.int64)
        self.batch_size, self.mean, self.std, self.device = batch_size, mean, std, device
        self.augment, self.shuffle = augment, shuffle
        # dropping a last batch of 1 keeps BatchNorm from failing on tiny subsets, never the whole set
        self.drop_last = drop_last and len(self.indices) > batch_size
        self.pin = device.type == "cuda"

    def __len__(self) -> int:
        n = len(self.indices)
        return n // self.batch_size if self.drop_last else -(-n // self.batch_size)

    def epoch(self, seed: int, epoch: int) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        g = torch.Generator().manual_seed(int(np.random.SeedSequence([seed, epoch]).generate_state(1)[0]))
        order = self.indices[torch.randperm(len(self.indices), generator=g).numpy()] if self.shuffle else self.indices
        for b in range(len(self)):
            idx = order[b * self.batch_size:(b + 1) * self.batch_size]
            sorted_idx = np.sort(idx)  # sequential reads from the memmap, then restore the order
            x = torch.from_numpy(self.images[sorted_idx][np.argsort(np.argsort(idx))])
            y = torch.from_numpy(self.labels[idx].astype(np.float32))
            if self.pin:
                x, y = x.pin_memory(), y.pin_memory()
            x = x.to(self.device, non_blocking=True).float().div_(255.0)
            y = y.to(self.device, non_blocking=True)
            if self.augment is not None:
                x = self.augment(x, g)
            yield normalize(x, self.mean, self.std), y
