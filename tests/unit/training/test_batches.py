"""Batches: the epoch cap of train.max_steps."""

from __future__ import annotations

import numpy as np
import torch

from medtransfer.training.batches import Batches


def test_max_batches_shortens_each_epoch_with_a_new_draw():
    images = np.arange(40, dtype=np.uint8).reshape(40, 1, 1, 1).repeat(4, 2).repeat(4, 3)
    b = Batches(images, np.zeros((40, 1)), np.arange(40), 4, [0.0], [1.0], torch.device("cpu"), shuffle=True)
    assert len(b) == 10
    b.max_batches = 3
    seen = [
        {int(v) for x, _ in b.epoch(seed=0, epoch=e) for v in (x[:, 0, 0, 0] * 255).round().tolist()} for e in range(3)
    ]
    assert len(b) == 3 and all(len(s) == 12 for s in seen)
    assert seen[0] != seen[1] != seen[2]  # each epoch draws its batches from a new permutation
