"""NT-Xent against a hand computation, the contrastive augmentation, and SimCLR through the training loop: view
pairs, resume equal to an uninterrupted run, gradient accumulation that keeps both views of an image together."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from medtransfer.config import PretrainConfig, from_dict
from medtransfer.data.transforms import ContrastiveAugment
from medtransfer.models.backbones import build_model
from medtransfer.pretrain import ssl
from medtransfer.pretrain.ssl import ContrastiveTask, ContrastiveViews, nt_xent, simclr_fit
from medtransfer.training.batches import Batches
from medtransfer.training.loop import forward_backward


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


# --------------------------------------------------------------------------- SimCLR through training.loop.fit
def simclr_setup(seed: int = 0, n: int = 48, **train):
    """A tiny backbone, random uint8 images and a 2-epoch SimCLR config (3 steps of 16 images per epoch)."""
    torch.manual_seed(seed)
    model = build_model("tiny", num_outputs=1, in_chans=1)
    images = np.random.default_rng(0).integers(0, 256, size=(n, 1, 32, 32), dtype=np.uint8)
    cfg = from_dict(
        PretrainConfig,
        {
            "seed": 3,
            "model": {"backbone": "tiny"},
            "train": {"epochs": 2, "batch_size": 16, "lr": 0.01, **train},
            "pretrain": {"method": "simclr"},
        },
    )
    return model, images, cfg


def test_simclr_batches_are_view_pairs_of_the_same_images():
    images = np.random.default_rng(0).integers(0, 256, size=(10, 1, 16, 16), dtype=np.uint8)
    batches = Batches(
        images, np.zeros((10, 0), np.float32), np.arange(10), 4, [0.0], [1.0], torch.device("cpu"),
        augment=ContrastiveViews(lambda x, g: x),  # no augmentation: both views are the image itself
        shuffle=True, drop_last=True,
    )  # fmt: skip
    (x, y), *_ = batches.epoch(seed=0, epoch=0)
    assert x.shape == (4, 2, 1, 16, 16) and y.shape == (4, 0)
    torch.testing.assert_close(x[:, 0], x[:, 1])
    pool = torch.as_tensor(images, dtype=torch.float32).div(255).flatten(1)
    assert all(((pool - view).abs().amax(dim=1) < 1e-6).any() for view in x[:, 0].flatten(1))
    views = ContrastiveViews()(x[:, 0], torch.Generator().manual_seed(0))
    assert views.shape == x.shape and not torch.equal(views[:, 0], views[:, 1])  # two independent draws


def test_simclr_resumed_after_an_epoch_equals_an_uninterrupted_run(tmp_path, monkeypatch):
    model, images, cfg = simclr_setup()
    straight = simclr_fit(model, images, np.arange(len(images)), cfg, tmp_path / "straight", torch.device("cpu"), False)
    assert straight["epochs_run"] == 2 and [r["epoch"] for r in straight["history"]] == [0, 1]
    assert all(math.isfinite(r["train_loss"]) for r in straight["history"])

    real, calls = ssl.nt_xent, {"n": 0}

    def killed_in_epoch_2(*args, **kwargs):  # the process dies in the first step of the second epoch
        calls["n"] += 1
        if calls["n"] == 4:
            raise KeyboardInterrupt
        return real(*args, **kwargs)

    part = tmp_path / "part"
    first, _, _ = simclr_setup()
    monkeypatch.setattr(ssl, "nt_xent", killed_in_epoch_2)
    with pytest.raises(KeyboardInterrupt):
        simclr_fit(first, images, np.arange(len(images)), cfg, part, torch.device("cpu"), False)
    monkeypatch.setattr(ssl, "nt_xent", real)
    resumed, _, _ = simclr_setup(seed=99)  # a new process: other initial weights, read from the checkpoint
    again = simclr_fit(resumed, images, np.arange(len(images)), cfg, part, torch.device("cpu"), False)
    assert again["epochs_run"] == 2
    assert [{**r, "seconds": 0} for r in again["history"]] == [{**r, "seconds": 0} for r in straight["history"]]
    ours, theirs = resumed.backbone.state_dict(), model.backbone.state_dict()
    assert set(ours) == set(theirs)
    for k in theirs:
        torch.testing.assert_close(ours[k], theirs[k], rtol=0, atol=0, msg=k)


def test_simclr_with_grad_accum_keeps_both_views_of_an_image_together(tmp_path, monkeypatch):
    model, images, cfg = simclr_setup(grad_accum=2)
    before = {k: v.clone() for k, v in model.backbone.state_dict().items()}
    real, seen = ssl.nt_xent, []

    def recording(z1, z2, temperature):
        seen.append((z1.shape[0], z2.shape[0]))
        return real(z1, z2, temperature=temperature)

    monkeypatch.setattr(ssl, "nt_xent", recording)
    fit = simclr_fit(model, images, np.arange(len(images)), cfg, tmp_path / "accum", torch.device("cpu"), False)
    assert seen == [(8, 8)] * 12  # 2 epochs x 3 steps x 2 micro-batches of 8 images, each with both its views
    assert all(math.isfinite(r["train_loss"]) for r in fit["history"])
    after = model.backbone.state_dict()
    assert any(not torch.equal(before[k], after[k]) for k in before if after[k].is_floating_point())


@pytest.mark.parametrize("n", [8, 7])
def test_grad_accum_micro_batches_hold_whole_view_pairs(n):
    # view v of image i is the constant image i + v / 10: a micro-batch must hold 0.0 and 0.1 of image 0, ...
    image, view = torch.arange(n, dtype=torch.float32), torch.tensor([0.0, 0.1])
    x = (image[:, None] + view).view(n, 2, 1, 1, 1).expand(n, 2, 1, 4, 4)
    pairs = []

    class Recording(ContrastiveTask):
        def loss(self, z, y=None):
            pairs.append(z[..., 0].detach().clone())
            return z.float().pow(2).mean()

    class MeanPixel(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.w = torch.nn.Parameter(torch.ones(()))

        def forward(self, x):
            return (self.w * x).mean(dim=(2, 3, 4)).unsqueeze(-1)  # (B, 2, 1)

    forward_backward(MeanPixel(), Recording(), x, torch.zeros(n, 0), grad_accum=3)
    assert sum(len(p) for p in pairs) == n and len(pairs) == 3
    for p in pairs:
        torch.testing.assert_close(p[:, 1] - p[:, 0], torch.full((len(p),), 0.1))
