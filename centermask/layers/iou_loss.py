"""IoU-family losses on (left, top, right, bottom) distance boxes, as used by FCOS.

Both boxes of a pair share the same anchor point, so their intersection and enclosing box follow
from element-wise minima and maxima of the four distances. The IoU carries a +1 smoothing in the
numerator and denominator; FCOS feeds distances in units of the level stride, so the smoothing is
one stride squared.
"""

from typing import Optional

import torch
from torch import nn

__all__ = ["IOU_LOSS_TYPES", "iou_loss", "IOULoss"]

IOU_LOSS_TYPES = ("iou", "linear_iou", "giou")


def iou_loss(
    pred: torch.Tensor,
    target: torch.Tensor,
    weight: Optional[torch.Tensor] = None,
    *,
    loss_type: str = "giou",
    reduction: str = "sum",
) -> torch.Tensor:
    """IoU loss between distance boxes.

    Args:
        pred, target: (M, 4) non-negative distances (l, t, r, b) from a common point.
        weight: optional (M,) per-pair weight (FCOS uses the centerness target).
        loss_type: "iou" (-log IoU), "linear_iou" (1 - IoU) or "giou" (1 - GIoU).
        reduction: "sum", "mean" or "none".

    Returns:
        a scalar, or (M,) losses with ``reduction="none"``.
    """
    if loss_type not in IOU_LOSS_TYPES:
        raise ValueError(f"Unknown IoU loss type {loss_type!r}; expected one of {IOU_LOSS_TYPES}")
    pred_l, pred_t, pred_r, pred_b = pred.unbind(dim=1)
    tgt_l, tgt_t, tgt_r, tgt_b = target.unbind(dim=1)

    target_area = (tgt_l + tgt_r) * (tgt_t + tgt_b)
    pred_area = (pred_l + pred_r) * (pred_t + pred_b)
    inter_w = torch.min(pred_l, tgt_l) + torch.min(pred_r, tgt_r)
    inter_h = torch.min(pred_t, tgt_t) + torch.min(pred_b, tgt_b)
    intersection = inter_w * inter_h
    union = target_area + pred_area - intersection
    ious = (intersection + 1.0) / (union + 1.0)

    if loss_type == "iou":
        losses = -torch.log(ious)
    elif loss_type == "linear_iou":
        losses = 1.0 - ious
    else:
        enclosing_w = torch.max(pred_l, tgt_l) + torch.max(pred_r, tgt_r)
        enclosing_h = torch.max(pred_t, tgt_t) + torch.max(pred_b, tgt_b)
        enclosing = enclosing_w * enclosing_h
        gious = ious - (enclosing - union) / enclosing
        losses = 1.0 - gious

    if weight is not None:
        losses = losses * weight
    if reduction == "sum":
        return losses.sum()
    if reduction == "mean":
        return losses.mean()
    if reduction == "none":
        return losses
    raise ValueError(f"Unknown reduction {reduction!r}; expected 'sum', 'mean' or 'none'")


class IOULoss(nn.Module):
    """Module form of :func:`iou_loss` with a fixed loss type (summed over pairs)."""

    def __init__(self, loss_type: str = "giou"):
        super().__init__()
        if loss_type not in IOU_LOSS_TYPES:
            raise ValueError(
                f"Unknown IoU loss type {loss_type!r} (MODEL.FCOS.LOC_LOSS_TYPE); "
                f"expected one of {IOU_LOSS_TYPES}"
            )
        self.loss_type = loss_type

    def forward(
        self, pred: torch.Tensor, target: torch.Tensor, weight: Optional[torch.Tensor] = None
    ) -> torch.Tensor:
        return iou_loss(pred, target, weight, loss_type=self.loss_type, reduction="sum")

    def extra_repr(self) -> str:
        return f"loss_type={self.loss_type!r}"
