"""FCOS losses: focal classification, centerness-weighted IoU regression, centerness BCE."""

from typing import Dict

import torch
from detectron2.utils import comm
from fvcore.nn import sigmoid_focal_loss_jit
from torch import distributed as dist
from torch.nn import functional as F

from centermask.layers.iou_loss import iou_loss

__all__ = ["centerness_targets", "average_over_workers", "fcos_losses"]


def centerness_targets(reg_targets: torch.Tensor) -> torch.Tensor:
    """sqrt((min(l, r) / max(l, r)) * (min(t, b) / max(t, b))) for (M, 4) (l, t, r, b) -> (M,)."""
    if reg_targets.numel() == 0:
        return reg_targets.new_zeros(reg_targets.shape[0])
    left_right = reg_targets[:, [0, 2]]
    top_bottom = reg_targets[:, [1, 3]]
    ratio = (left_right.min(dim=1).values / left_right.max(dim=1).values) * (
        top_bottom.min(dim=1).values / top_bottom.max(dim=1).values
    )
    return torch.sqrt(ratio)


def average_over_workers(value: torch.Tensor) -> torch.Tensor:
    """Mean of a tensor over all distributed workers (the tensor itself in a single process)."""
    world_size = comm.get_world_size()
    if world_size == 1:
        return value
    value = value.clone()
    dist.all_reduce(value, op=dist.ReduceOp.SUM)
    return value / world_size


def fcos_losses(
    logits: torch.Tensor,
    bbox_reg: torch.Tensor,
    ctrness: torch.Tensor,
    labels: torch.Tensor,
    reg_targets: torch.Tensor,
    *,
    focal_alpha: float = 0.25,
    focal_gamma: float = 2.0,
    loc_loss_type: str = "giou",
) -> Dict[str, torch.Tensor]:
    """FCOS losses over M locations (all images and levels, flattened the same way).

    Args:
        logits: (M, K) class logits.
        bbox_reg: (M, 4) predicted (l, t, r, b) in stride units.
        ctrness: (M,) centerness logits.
        labels: (M,) int64 in [0, K], K meaning background.
        reg_targets: (M, 4) target distances in stride units (used at positives only).
        focal_alpha, focal_gamma: sigmoid focal loss parameters.
        loc_loss_type: "iou", "linear_iou" or "giou".

    Returns:
        ``loss_fcos_cls``: focal loss summed, divided by the positives averaged over workers;
        ``loss_fcos_loc``: centerness-weighted IoU loss divided by the centerness-target sum
        averaged over workers;
        ``loss_fcos_ctr``: centerness BCE summed, divided by the averaged positives.
    """
    num_classes = logits.shape[1]
    positive = labels != num_classes
    pos_inds = torch.nonzero(positive).squeeze(1)

    # Normalisers stay tensors so that the loss needs no host-device synchronisation.
    num_pos_avg = average_over_workers(positive.sum().to(torch.float32)).clamp(min=1.0)

    class_target = torch.zeros_like(logits)
    class_target[pos_inds, labels[pos_inds]] = 1.0
    loss_cls = (
        sigmoid_focal_loss_jit(
            logits, class_target, alpha=focal_alpha, gamma=focal_gamma, reduction="sum"
        )
        / num_pos_avg
    )

    pos_reg_targets = reg_targets[pos_inds]
    ctr_targets = centerness_targets(pos_reg_targets)
    ctr_norm = average_over_workers(ctr_targets.sum()).clamp(min=1e-6)
    loss_loc = (
        iou_loss(
            bbox_reg[pos_inds],
            pos_reg_targets,
            ctr_targets,
            loss_type=loc_loss_type,
            reduction="sum",
        )
        / ctr_norm
    )
    loss_ctr = (
        F.binary_cross_entropy_with_logits(ctrness[pos_inds], ctr_targets, reduction="sum")
        / num_pos_avg
    )
    return {"loss_fcos_cls": loss_cls, "loss_fcos_loc": loss_loc, "loss_fcos_ctr": loss_ctr}
