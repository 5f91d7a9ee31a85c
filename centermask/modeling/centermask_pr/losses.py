"""CenterMask-PR losses: CenterNet's centre focal loss, the assembled-mask BCE, the saliency BCE."""

import torch
from torch.nn import functional as F

__all__ = ["center_focal_loss", "assembled_mask_loss", "saliency_loss"]


def center_focal_loss(
    logits: torch.Tensor, targets: torch.Tensor, alpha: float = 2.0, beta: float = 4.0
) -> torch.Tensor:
    """CenterNet's penalty-reduced focal loss, summed over all cells and divided by the number of
    object centres (cells whose target is exactly 1; by 1 when there are none).

    Positive cells: -(1 - p)^alpha log(p); other cells: -(1 - y)^beta p^alpha log(1 - p).

    Args:
        logits: (N, C, H, W) heatmap logits.
        targets: (N, C, H, W) Gaussian targets in [0, 1].
    """
    logits, targets = logits.float(), targets.float()
    prob = logits.sigmoid()
    # log(p) and log(1 - p) from the logits, finite where p rounds to 0 or 1.
    log_p, log_not_p = F.logsigmoid(logits), F.logsigmoid(-logits)
    positive = targets.eq(1).float()
    pos_loss = (1 - prob).pow(alpha) * log_p * positive
    neg_loss = (1 - targets).pow(beta) * prob.pow(alpha) * log_not_p * (1 - positive)
    num_pos = positive.sum().clamp(min=1)
    return -(pos_loss.sum() + neg_loss.sum()) / num_pos


def assembled_mask_loss(
    mask_probs: torch.Tensor, targets: torch.Tensor, inside: torch.Tensor
) -> torch.Tensor:
    """BCE between assembled masks and GT masks over the cells inside each box, averaged per
    instance, then over instances.

    Args:
        mask_probs: (K, H, W) assembled probabilities (:func:`assemble_masks`).
        targets: (K, H, W) GT masks in [0, 1] on the same grid.
        inside: (K, H, W) bool, the cells in each (widened) box; each row has at least one.
    """
    if mask_probs.shape[0] == 0:
        return mask_probs.sum() * 0
    # Written out rather than F.binary_cross_entropy, which raises on NaN inputs: a diverging
    # run must reach the trainer's non-finite-loss check, which names the loss.
    probs = mask_probs.float().clamp(1e-6, 1 - 1e-6)
    targets = targets.float()
    bce = -(targets * probs.log() + (1 - targets) * (1 - probs).log())
    inside = inside.float()
    per_instance = (bce * inside).flatten(1).sum(1) / inside.flatten(1).sum(1).clamp(min=1)
    return per_instance.mean()


def saliency_loss(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """Mean BCE of the class-specific saliency map (N, C, H, W) against the union of each class's
    GT masks (N, C, H, W) on the same grid."""
    return F.binary_cross_entropy_with_logits(logits.float(), targets.float())
