"""The marginal loss for partially annotated volumes (Shi et al., MedIA 2021): cross-entropy + soft Dice.

In a volume that annotates only some classes, label 0 means "background *or* one of the classes this volume does
not annotate". Two ways to train on it:

* Masking (treat 0 as background, or drop the unannotated channels): treating 0 as background teaches the
  network that unannotated organs are background, the wrong negatives; ignoring every 0 voxel instead throws
  away all negative supervision of the volume and the network over-segments.
* Marginal (what :func:`partial_label_loss` does): the probabilities of the unannotated classes are merged into
  background, ``p'(bg) = p(bg) + sum_u p(u)``, and label-0 voxels are scored by ``-log p'(bg)``. A label-0 voxel
  still says "none of the annotated foreground classes", but nothing about background versus an unannotated
  class. Soft Dice runs over the annotated foreground classes only (their probabilities are not merged).

What this guarantees (tested): in a volume where class ``u`` is not annotated the loss depends on the logits only
through ``p'(bg)`` and the annotated classes' probabilities. So (1) relabelling ``u``'s voxels as 0 changes
nothing (they are merged into background on entry anyway); (2) moving probability mass between background and
``u`` changes nothing; (3) at every voxel the gradients of the merged logits are proportional to their
probabilities (``dL/dz_u / p_u == dL/dz_bg / p_bg``), so the loss never pushes a voxel from background toward ``u``
or back. It does not zero ``u``'s gradient: at label-0 voxels ``u`` is pushed up *together with* background
relative to the annotated classes, as it should be.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F


def annotated_mask(annotated: Sequence[Sequence[int]], n_classes: int) -> torch.Tensor:
    """A ``(B, K)`` bool mask from each volume's annotated class indices; background is always annotated.

    Example:
        >>> annotated_mask([(0, 1, 2), (0, 2)], 3).tolist()
        [[True, True, True], [True, False, True]]
    """
    mask = torch.zeros(len(annotated), n_classes, dtype=torch.bool)
    for b, classes in enumerate(annotated):
        mask[b, list(classes)] = True
    mask[:, 0] = True
    return mask


def partial_label_loss(
    logits: torch.Tensor,
    target: torch.Tensor,
    annotated: torch.Tensor,
    *,
    ce_weight: float = 1.0,
    dice_weight: float = 1.0,
    smooth: float = 1e-5,
) -> torch.Tensor:
    """Marginal cross-entropy + soft Dice for a batch of partially annotated volumes (see the module docstring).

    Cross-entropy is the mean over all voxels of ``-log p(label)``, with ``p'(bg)`` (background merged with the
    volume's unannotated classes) for label-0 voxels. Dice is ``1 - (2|P∩G| + smooth) / (|P| + |G| + smooth)``
    per volume and annotated foreground class, averaged over those (volume, class) pairs. With every class
    annotated this is exactly MONAI's ``DiceCELoss(to_onehot_y=True, softmax=True, include_background=False)``.

    Args:
        logits: ``(B, K, *spatial)`` raw network outputs.
        target: ``(B, *spatial)`` (or ``(B, 1, *spatial)``) integer labels; labels of unannotated classes count as 0.
        annotated: ``(B, K)`` bool, which classes each volume annotates (column 0 is forced to True).
        ce_weight, dice_weight: weights of the two terms.
        smooth: Dice smoothing (numerator and denominator), MONAI's default.

    Example:
        >>> logits = torch.zeros(1, 3, 4, 4, 4, requires_grad=True)
        >>> target = torch.zeros(1, 4, 4, 4, dtype=torch.long); target[0, :2] = 1
        >>> loss = partial_label_loss(logits, target, annotated_mask([(0, 1)], 3))   # class 2 not annotated
        >>> loss.backward()
    """
    b, k = logits.shape[:2]
    if target.ndim == logits.ndim and target.shape[1] == 1:
        target = target[:, 0]
    if target.shape != (b, *logits.shape[2:]):
        raise ValueError(f"target must be (B, *spatial) = {(b, *logits.shape[2:])}, got {tuple(target.shape)}")
    annotated = torch.as_tensor(annotated, dtype=torch.bool, device=logits.device).clone()
    if annotated.shape != (b, k):
        raise ValueError(f"annotated must be (B, K) = {(b, k)}, got {tuple(annotated.shape)}")
    annotated[:, 0] = True
    target = target.long()
    if target.min() < 0 or target.max() >= k:
        raise ValueError(f"target values must be in 0..{k - 1}, got {int(target.min())}..{int(target.max())}")
    flat = target.reshape(b, -1)
    target = torch.where(annotated.gather(1, flat), flat, torch.zeros_like(flat)).view_as(target)

    view = (b, k) + (1,) * (logits.ndim - 2)
    log_p = torch.log_softmax(logits, dim=1)
    merged = (~annotated).clone()
    merged[:, 0] = True
    log_bg = torch.logsumexp(log_p.masked_fill(~merged.view(view), float("-inf")), dim=1)
    log_label = log_p.gather(1, target.unsqueeze(1)).squeeze(1)
    ce = -torch.where(target == 0, log_bg, log_label).mean()

    p = log_p.exp()
    onehot = F.one_hot(target, k).movedim(-1, 1).to(p.dtype)
    dims = tuple(range(2, logits.ndim))
    intersection = (p * onehot).sum(dims)
    denominator = p.sum(dims) + onehot.sum(dims)
    dice = 1.0 - (2.0 * intersection + smooth) / (denominator + smooth)
    foreground = annotated.clone()
    foreground[:, 0] = False
    dice_loss = dice[foreground].mean() if foreground.any() else dice.sum() * 0.0
    return ce_weight * ce + dice_weight * dice_loss
