"""CondInst's mask losses: dice loss on the dynamic masks, focal loss of the semantic head."""

import torch
from fvcore.nn import sigmoid_focal_loss_jit
from torch.nn import functional as F

__all__ = ["dice_loss", "semantic_focal_loss"]


def dice_loss(mask_probs: torch.Tensor, targets: torch.Tensor, eps: float = 1e-5) -> torch.Tensor:
    """Per-instance dice loss 1 - 2*sum(x*t) / (sum(x^2) + sum(t^2) + eps).

    Args:
        mask_probs: (n, ...) probabilities.
        targets: (n, ...) 0/1 targets of the same shape.

    Returns:
        (n,) losses.
    """
    x = mask_probs.flatten(1)
    t = targets.flatten(1).to(x.dtype)
    intersection = (x * t).sum(dim=1)
    union = (x * x).sum(dim=1) + (t * t).sum(dim=1) + eps
    return 1.0 - 2.0 * intersection / union


def semantic_focal_loss(
    logits: torch.Tensor, targets: torch.Tensor, *, alpha: float = 0.25, gamma: float = 2.0
) -> torch.Tensor:
    """Sigmoid focal loss of the semantic head, summed and divided by max(#positives, 1).

    Args:
        logits: (N, K, h, w) class logits.
        targets: (N, h, w) int64 class + 1, 0 for background.
    """
    num_classes = logits.shape[1]
    one_hot = F.one_hot(targets, num_classes + 1)[..., 1:].permute(0, 3, 1, 2).to(logits.dtype)
    num_pos = one_hot.sum().clamp(min=1.0)
    loss = sigmoid_focal_loss_jit(logits, one_hot, alpha=alpha, gamma=gamma, reduction="sum")
    return loss / num_pos
