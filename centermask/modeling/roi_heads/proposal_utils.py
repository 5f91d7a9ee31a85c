"""Turning FCOS detections into training proposals for the ROI heads."""

import math
from typing import List

import torch
from detectron2.structures import Boxes, Instances

__all__ = ["GT_PROPOSAL_SCORE", "detections_to_proposals", "add_ground_truth_to_detections"]

# Score given to GT boxes appended as proposals: the logit of a probability of 1 - 1e-10.
GT_PROPOSAL_SCORE = math.log((1.0 - 1e-10) / 1e-10)


def detections_to_proposals(detections: Instances) -> Instances:
    """A copy of FCOS ``detections`` whose ``pred_boxes`` field is named ``proposal_boxes``.

    Args:
        detections: Instances with ``pred_boxes``, ``scores``, ``pred_classes``, ``locations``
            (already renamed ones are passed through).
    """
    if detections.has("proposal_boxes"):
        return detections
    fields = dict(detections.get_fields())
    if not fields:  # an empty Instances without any field
        return Instances(detections.image_size, proposal_boxes=Boxes(torch.zeros((0, 4))))
    if "pred_boxes" not in fields:
        raise ValueError(
            "CenterROIHeads expects proposals with a 'pred_boxes' field (FCOS detections), "
            f"got fields {sorted(fields)}."
        )
    fields["proposal_boxes"] = fields.pop("pred_boxes")
    return Instances(detections.image_size, **fields)


def add_ground_truth_to_detections(
    targets: List[Instances], proposals: List[Instances]
) -> List[Instances]:
    """Append every GT box of an image after its proposals.

    The GT proposals get ``scores = GT_PROPOSAL_SCORE``, ``pred_classes = gt_classes`` and
    ``locations = 1``, so that they can be concatenated with the FCOS fields.

    Args:
        targets: per image, Instances with ``gt_boxes`` and ``gt_classes``.
        proposals: per image, Instances with ``proposal_boxes``, ``scores``, ``pred_classes``,
            ``locations``.
    """
    if len(targets) != len(proposals):
        raise ValueError(f"Got {len(targets)} target lists for {len(proposals)} proposal lists.")
    merged = []
    for targets_per_image, proposals_per_image in zip(targets, proposals):
        device = targets_per_image.gt_boxes.device
        num_gt = len(targets_per_image)
        gt_fields = {
            "proposal_boxes": targets_per_image.gt_boxes.to(device),
            "scores": torch.full((num_gt,), GT_PROPOSAL_SCORE, device=device),
            "pred_classes": targets_per_image.gt_classes.to(device),
            "locations": torch.ones((num_gt, 2), device=device),
        }
        for name, value in proposals_per_image.get_fields().items():
            if name not in gt_fields:
                if not isinstance(value, torch.Tensor):
                    raise ValueError(
                        f"Cannot append GT boxes to proposals with the non-tensor field {name!r}."
                    )
                # Any other per-detection tensor gets a neutral value for the GT proposals.
                gt_fields[name] = value.new_zeros((num_gt,) + tuple(value.shape[1:]))
            elif isinstance(value, torch.Tensor):
                gt_fields[name] = gt_fields[name].to(value.dtype)
        gt_proposals = Instances(proposals_per_image.image_size, **gt_fields)
        if len(proposals_per_image) == 0:
            merged.append(gt_proposals)
        else:
            merged.append(Instances.cat([proposals_per_image, gt_proposals]))
    return merged
