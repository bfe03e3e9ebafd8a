"""NT-Xent against a hand computation, and the contrastive augmentation."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from medtransfer.data.transforms import ContrastiveAugment
from medtransfer.pretrain.ssl import nt_xent


def test_nt_xent_equals_hand_computation_for_two_pairs():
    # views: a1=(1,0), a2=(0,1) and their partners b1=(2,0) (same direction), b2=(1,1)
    z1 = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    z2 = torch.tensor([[2.0, 0.0], [1.0, 1.0]])
    t = 0.5
    r = 1 / math.sqrt(2)  # cos 45°
    e = lambda c: np.exp(c / t)  # noqa: E731
    # each view: -log( e(cos to its partner) / sum of e(cos) to the 3 other views )
    a1 = -np.log(e(1) / (e(0) + e(1) + e(r)))  # a1 vs a2, b1, b2
    a2 = -np.log(e(r) / (e(0) + e(0) + e(r)))  # a2 vs a1, b1, b2
    b1 = -np.log(e(1) / (e(1) + e(0) + e(r)))  # b1 vs a1, a2, b2
    b2 = -np.log(e(r) / (e(r) + e(r) + e(r)))  # b2 vs a1, a2, b1
    expected = (a1 + a2 + b1 + b2) / 4
    assert float(nt_xent(z1, z2, temperature=t)) == pytest.approx(expected, rel=1e-6)


def test_nt_xent_is_scale_invariant_and_prefers_matched_pairs():
    g = torch.Generator().manual_seed(0)
    z = torch.randn(8, 16, generator=g)
    noisy = z + 0.1 * torch.randn(8, 16, generator=g)
    matched = nt_xent(z, noisy)
    assert float(nt_xent(3 * z, noisy)) == pytest.approx(float(matched), rel=1e-5)
    assert matched < nt_xent(z, noisy[torch.randperm(8, generator=g)])


def test_contrastive_augment_is_reproducible_and_stays_in_range():
    x = torch.rand(6, 1, 32, 32, generator=torch.Generator().manual_seed(1))
    a = ContrastiveAugment()(x, torch.Generator().manual_seed(5))
    b = ContrastiveAugment()(x, torch.Generator().manual_seed(5))
    c = ContrastiveAugment()(x, torch.Generator().manual_seed(6))
    assert torch.equal(a, b) and not torch.equal(a, c)
    assert a.shape == x.shape and float(a.min()) >= 0 and float(a.max()) <= 1
