"""Sliding-window inference: output shape equals the input's, overlapping windows stitch back exactly."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from medtransfer.data.volumes import sliding_window_predict
from medtransfer.segmentation.networks import build_seg_network


class Constant(nn.Module):
    """Returns the same logits at every voxel, whatever the input."""

    def __init__(self, logits: list[float]) -> None:
        super().__init__()
        self.logits = nn.Parameter(torch.tensor(logits))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        shape = (x.shape[0], len(self.logits), *x.shape[2:])
        return self.logits.view(1, -1, 1, 1, 1).expand(shape)


@pytest.mark.parametrize("shape", [(20, 23, 17), (5, 6, 7)], ids=["not-a-multiple", "smaller-than-patch"])
def test_identity_model_is_reconstructed_exactly(shape: tuple[int, int, int]) -> None:
    image = torch.randn(2, *shape)
    out = sliding_window_predict(nn.Identity(), image, (8, 8, 8), overlap=0.5, sw_batch_size=3, softmax=False)
    assert out.shape == image.shape
    torch.testing.assert_close(out, image, rtol=1e-5, atol=1e-5)


def test_constant_model_gives_constant_probabilities() -> None:
    model = Constant([1.0, 2.0, 3.0])
    out = sliding_window_predict(model, np.zeros((1, 19, 10, 13), np.float32), (8, 8, 8), overlap=0.25)
    assert out.shape == (3, 19, 10, 13)
    expected = torch.softmax(torch.tensor([1.0, 2.0, 3.0]), 0).view(3, 1, 1, 1).expand_as(out)
    torch.testing.assert_close(out, expected)


def test_unet_probabilities_and_mode_restored() -> None:
    torch.manual_seed(0)
    model = build_seg_network("tiny_unet", in_channels=1, n_classes=3).train()
    out = sliding_window_predict(model, torch.randn(1, 37, 21, 16), (32, 16, 16))
    assert out.shape == (3, 37, 21, 16) and not out.requires_grad
    torch.testing.assert_close(out.sum(0), torch.ones(37, 21, 16))
    assert model.training
    with pytest.raises(ValueError, match=r"\(C, D, H, W\)"):
        sliding_window_predict(model, torch.randn(37, 21, 16), (32, 16, 16))
