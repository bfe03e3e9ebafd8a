"""The marginal partial-label loss: plain CE + Dice when everything is annotated, and exactly what it promises for
an unannotated class (no distinction between it and background, in value or in gradient)."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from medtransfer.segmentation.losses import annotated_mask, partial_label_loss

K, SHAPE = 3, (6, 7, 5)


def _batch(seed: int = 0, b: int = 2) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    logits = torch.randn(b, K, *SHAPE, generator=g) * 2
    target = torch.zeros(b, *SHAPE, dtype=torch.long)
    target[:, 1:3, 1:4, 1:3] = 1
    target[:, 3:6, 3:7, 2:5] = 2
    return logits, target


def _grad(logits: torch.Tensor, target: torch.Tensor, annotated: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    z = logits.clone().requires_grad_(True)
    loss = partial_label_loss(z, target, annotated)
    loss.backward()
    return loss.detach(), z.grad


def test_fully_annotated_equals_monai_dice_ce() -> None:
    from monai.losses import DiceCELoss

    logits, target = _batch()
    ours = partial_label_loss(logits, target, torch.ones(2, K, dtype=torch.bool))
    monai = DiceCELoss(to_onehot_y=True, softmax=True, include_background=False)(logits, target[:, None])
    torch.testing.assert_close(ours, monai)


def test_fully_annotated_equals_a_straightforward_ce_plus_dice() -> None:
    logits, target = _batch(1)
    p = torch.softmax(logits, 1)
    onehot = F.one_hot(target, K).movedim(-1, 1).float()
    dice = 1 - (2 * (p * onehot).sum((2, 3, 4)) + 1e-5) / (p.sum((2, 3, 4)) + onehot.sum((2, 3, 4)) + 1e-5)
    expected = F.cross_entropy(logits, target) + dice[:, 1:].mean()
    torch.testing.assert_close(partial_label_loss(logits, target[:, None], annotated_mask([(1, 2)] * 2, K)), expected)


def test_relabelling_an_unannotated_class_as_background_changes_nothing() -> None:
    logits, target = _batch(2)
    annotated = annotated_mask([(0, 1), (0, 1)], K)  # class 2 is not annotated
    relabelled = torch.where(target == 2, 0, target)
    loss_a, grad_a = _grad(logits, target, annotated)
    loss_b, grad_b = _grad(logits, relabelled, annotated)
    torch.testing.assert_close(loss_a, loss_b)
    torch.testing.assert_close(grad_a, grad_b)


def test_splitting_mass_between_background_and_an_unannotated_class_changes_nothing() -> None:
    logits, target = _batch(3)
    target = torch.where(target == 2, 0, target)
    annotated = annotated_mask([(0, 1), (0, 1)], K)
    # Same p(bg) + p(class 2) at every voxel, split at random between the two.
    merged = torch.logsumexp(logits[:, [0, 2]], dim=1)
    share = torch.rand(merged.shape, generator=torch.Generator().manual_seed(0)).clamp(0.01, 0.99)
    resplit = logits.clone()
    resplit[:, 0], resplit[:, 2] = merged + share.log(), merged + (1 - share).log()
    torch.testing.assert_close(
        partial_label_loss(resplit, target, annotated), partial_label_loss(logits, target, annotated)
    )
    swapped = logits[:, [2, 1, 0]]
    torch.testing.assert_close(
        partial_label_loss(swapped, target, annotated), partial_label_loss(logits, target, annotated)
    )


def test_no_gradient_between_background_and_an_unannotated_class() -> None:
    """At every voxel, dL/dz / p is the same for background and the unannotated class: the loss never moves
    probability from one to the other (it still moves both against the annotated classes)."""
    logits, target = _batch(4)
    annotated = annotated_mask([(0, 1, 2), (0, 1)], K)  # volume 0 fully annotated, volume 1 lacks class 2
    _, grad = _grad(logits, target, annotated)
    p = torch.softmax(logits, 1)
    ratio_bg, ratio_unannotated = grad[:, 0] / p[:, 0], grad[:, 2] / p[:, 2]
    torch.testing.assert_close(ratio_bg[1], ratio_unannotated[1], rtol=1e-4, atol=1e-9)
    assert grad[1, 2].abs().sum() > 0  # not zero: pushed up together with background at label-0 voxels
    # Volume 0 annotates class 2, so its label-0 voxels do say "background, not class 2".
    assert not torch.allclose(ratio_bg[0], ratio_unannotated[0], rtol=1e-2)


def test_plain_ce_on_partial_labels_would_teach_the_wrong_negatives() -> None:
    logits, target = _batch(5, b=1)
    target = torch.where(target == 2, 0, target)
    z = logits.clone().requires_grad_(True)
    F.cross_entropy(z, target).backward()
    p = torch.softmax(logits, 1)
    assert not torch.allclose(z.grad[:, 0] / p[:, 0], z.grad[:, 2] / p[:, 2], rtol=1e-2)


def test_no_annotated_foreground_and_shape_checks() -> None:
    logits, target = _batch(6, b=1)
    loss, grad = _grad(logits, torch.zeros_like(target), annotated_mask([(0,)], K))
    assert torch.isfinite(loss) and torch.isfinite(grad).all()
    with pytest.raises(ValueError, match="annotated must be"):
        partial_label_loss(logits, target, torch.ones(2, K, dtype=torch.bool))
    with pytest.raises(ValueError, match="target values"):
        partial_label_loss(logits, target + 5, torch.ones(1, K, dtype=torch.bool))
