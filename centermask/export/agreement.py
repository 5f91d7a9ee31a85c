"""How far the detections of an exported (e.g. int8) model agree with the original's."""

from dataclasses import dataclass
from typing import Optional, Tuple

import torch
from detectron2.structures import Instances
from torchvision.ops import box_iou

__all__ = ["DetectionAgreement", "detection_agreement", "MASK_IOU_AGREE", "MASK_PIXELS_AGREE"]

MASK_IOU_AGREE = 0.98
MASK_PIXELS_AGREE = 2


@dataclass(frozen=True)
class DetectionAgreement:
    """``matched`` one-to-one pairs out of ``num_reference`` / ``num_candidate`` detections.

    ``match_rate`` = matched / max(num_reference, num_candidate) (1.0 when both are empty), so
    missed and extra detections both lower it. Over the matched pairs with masks (None / 0
    without masks or pairs): ``mean_mask_iou`` and ``min_mask_iou``; ``masks_agreeing``, the
    pairs whose masks agree per instance (IoU >= ``MASK_IOU_AGREE`` or at most
    ``MASK_PIXELS_AGREE`` pixels differ, the parity tests' rule); ``empty_reference_masks``, the
    pairs whose reference mask has no pixel (there agreement proves nothing).
    """

    num_reference: int
    num_candidate: int
    matched: int
    mean_mask_iou: Optional[float] = None
    min_mask_iou: Optional[float] = None
    masks_agreeing: int = 0
    empty_reference_masks: int = 0
    pairs: Tuple[Tuple[int, int], ...] = ()  # (reference index, candidate index)

    @property
    def match_rate(self) -> float:
        total = max(self.num_reference, self.num_candidate)
        return self.matched / total if total else 1.0


def detection_agreement(
    reference: Instances, candidate: Instances, iou_threshold: float = 0.5
) -> DetectionAgreement:
    """Greedy one-to-one matching: each reference detection, by descending score, takes the
    unmatched candidate of the same class with the highest box IoU, if >= ``iou_threshold``.
    Both may live on any device (the comparison runs on the CPU)."""
    reference, candidate = reference.to("cpu"), candidate.to("cpu")
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
    if not (pairs and reference.has("pred_masks") and candidate.has("pred_masks")):
        return DetectionAgreement(len(reference), len(candidate), len(pairs), pairs=tuple(pairs))
    first = reference.pred_masks[[i for i, _ in pairs]].flatten(1).bool().cpu()
    second = candidate.pred_masks[[j for _, j in pairs]].flatten(1).bool().cpu()
    union = (first | second).sum(1)
    ious = (first & second).sum(1) / union.clamp(min=1)
    ious = torch.where(union > 0, ious, torch.ones_like(ious))  # two empty masks agree
    differing = (first != second).sum(1)
    agreeing = (ious >= MASK_IOU_AGREE) | (differing <= MASK_PIXELS_AGREE)
    return DetectionAgreement(
        len(reference),
        len(candidate),
        len(pairs),
        mean_mask_iou=float(ious.mean()),
        min_mask_iou=float(ious.min()),
        masks_agreeing=int(agreeing.sum()),
        empty_reference_masks=int((first.sum(1) == 0).sum()),
        pairs=tuple(pairs),
    )
