"""How far the detections of an exported (e.g. int8) model agree with the original's."""

from dataclasses import dataclass
from typing import Optional

import torch
from detectron2.structures import Instances
from torchvision.ops import box_iou

__all__ = ["DetectionAgreement", "detection_agreement"]


@dataclass(frozen=True)
class DetectionAgreement:
    """``matched`` one-to-one pairs out of ``num_reference`` / ``num_candidate`` detections.

    ``match_rate`` = matched / max(num_reference, num_candidate) (1.0 when both are empty), so
    missed and extra detections both lower it; ``mean_mask_iou`` is over the matched pairs (None
    without masks or pairs).
    """

    num_reference: int
    num_candidate: int
    matched: int
    mean_mask_iou: Optional[float] = None

    @property
    def match_rate(self) -> float:
        total = max(self.num_reference, self.num_candidate)
        return self.matched / total if total else 1.0


def detection_agreement(
    reference: Instances, candidate: Instances, iou_threshold: float = 0.5
) -> DetectionAgreement:
    """Greedy one-to-one matching: each reference detection, by descending score, takes the
    unmatched candidate of the same class with the highest box IoU, if >= ``iou_threshold``."""
    ious = box_iou(reference.pred_boxes.tensor, candidate.pred_boxes.tensor)
    same_class = reference.pred_classes[:, None] == candidate.pred_classes[None, :]
    ious = torch.where(same_class, ious, torch.full_like(ious, -1.0))
    taken = torch.zeros(len(candidate), dtype=torch.bool)
    pairs = []
    for i in torch.argsort(reference.scores, descending=True).tolist():
        if not len(candidate):
            break
        row = ious[i].masked_fill(taken, -1.0)
        best = int(row.argmax())
        if row[best] >= iou_threshold:
            taken[best] = True
            pairs.append((i, best))
    mask_iou = None
    if pairs and reference.has("pred_masks") and candidate.has("pred_masks"):
        first = reference.pred_masks[[i for i, _ in pairs]].flatten(1).bool()
        second = candidate.pred_masks[[j for _, j in pairs]].flatten(1).bool()
        union = (first | second).sum(1).clamp(min=1)
        mask_iou = float(((first & second).sum(1) / union).mean())
    return DetectionAgreement(len(reference), len(candidate), len(pairs), mask_iou)
