import numpy as np
import torch

from medtransfer.data.transforms import RadiographAugment, normalize
from medtransfer.training.batches import Batches


def test_augment_is_deterministic_given_the_generator_and_stays_in_range():
    aug = RadiographAugment()
    x = torch.rand(6, 1, 24, 24)
    a = aug(x, torch.Generator().manual_seed(5))
    b = aug(x, torch.Generator().manual_seed(5))
    c = aug(x, torch.Generator().manual_seed(6))
    assert torch.equal(a, b) and not torch.equal(a, c)
    assert a.shape == x.shape and a.min() >= 0 and a.max() <= 1


def test_identity_parameters_leave_the_image_unchanged():
    aug = RadiographAugment(scale=(1, 1), ratio=(1, 1), degrees=0, translate=0, brightness=0, contrast=0)
    x = torch.rand(3, 1, 16, 16)
    assert torch.allclose(aug(x, torch.Generator().manual_seed(0)), x, atol=1e-5)


def test_no_horizontal_flip_by_default_but_available():
    x = torch.zeros(64, 1, 16, 16)
    x[..., :8] = 1.0  # bright left half
    kw = dict(scale=(1, 1), ratio=(1, 1), degrees=0, translate=0, brightness=0, contrast=0)
    kept = RadiographAugment(**kw)(x, torch.Generator().manual_seed(0))
    assert (kept[..., :8].mean(dim=(1, 2, 3)) > 0.9).all()
    flipped = RadiographAugment(hflip=True, **kw)(x, torch.Generator().manual_seed(0))
    assert (flipped[..., :8].mean(dim=(1, 2, 3)) < 0.1).any()


def test_normalize():
    x = torch.full((1, 1, 2, 2), 0.75)
    assert torch.allclose(normalize(x, [0.5], [0.25]), torch.ones(1, 1, 2, 2))


def test_batches_cover_every_index_once_and_repeat_per_epoch_seed():
    images = np.arange(10 * 4, dtype=np.uint8).reshape(10, 1, 2, 2)
    labels = np.arange(10, dtype=np.float32)[:, None]
    b = Batches(images, labels, np.arange(10), 3, [0.0], [1.0], torch.device("cpu"), shuffle=True)
    seen = torch.cat([y for _, y in b.epoch(0, 0)]).squeeze(1).long().tolist()
    assert sorted(seen) == list(range(10))
    again = torch.cat([y for _, y in b.epoch(0, 0)]).squeeze(1).long().tolist()
    other = torch.cat([y for _, y in b.epoch(0, 1)]).squeeze(1).long().tolist()
    assert seen == again and seen != other
    for x, y in b.epoch(0, 0):  # images stay paired with their labels
        assert torch.equal(x[:, 0, 0, 0], (y[:, 0] * 4) / 255.0)


def test_zoom_default_comes_from_the_task_kind():
    from medtransfer.config import TrainConfig
    from medtransfer.tasks.base import task_kind

    assert TrainConfig().zoom is None  # null: the kind decides
    kept = (1.0, 1.0)
    assert RadiographAugment.for_training(zoom=None, kind=task_kind("regression")).scale == kept  # lengths kept
    for name in ("binary", "multiclass", "multilabel"):
        assert RadiographAugment.for_training(zoom=None, kind=task_kind(name)).scale == RadiographAugment().scale
    assert RadiographAugment.for_training(zoom=None).scale == RadiographAugment().scale  # no kind: zoom on
    # an explicit setting wins over the kind's default
    assert RadiographAugment.for_training(zoom=True, kind=task_kind("regression")).scale == RadiographAugment().scale
    assert RadiographAugment.for_training(zoom=False, kind=task_kind("binary")).scale == kept
