"""Class-aware NMS that stops once the top-k survivors are known, with torchvision's decisions.

FCOS keeps at most ``post_nms_topk`` (50) detections per image after a class-aware NMS over up to
5 x 1000 candidates. torchvision's ``batched_nms`` runs one ``nms`` per class when there are more
than 1000 boxes (on the CPU), i.e. ~80 small calls plus indexing, and suppresses everything even
though only the best 50 survivors are used.

Greedy NMS decides a box only from the higher-scoring boxes, so the survivors among the best
``m`` candidates are the same whether the other candidates exist or not. :func:`batched_nms_topk`
therefore walks the candidates by decreasing score in blocks, suppressing each block against the
boxes kept so far (same class only), and stops as soon as k boxes are kept and the next candidate
scores below the k-th. The IoU uses the float32 arithmetic of torchvision's CPU kernel and compares
it with the threshold in float64 as that kernel does, so the kept set equals
``keep_top_k_with_ties(batched_nms(...))``. Up to 1000 boxes torchvision uses a coordinate-offset
trick (whose rounding can differ); that case is delegated to ``batched_nms`` itself.
"""

from typing import Optional

import numpy as np
import torch
from torchvision.ops import batched_nms

__all__ = ["batched_nms_topk", "VANILLA_NMS_MIN_BOXES"]

# torchvision's batched_nms runs the per-class loop on the CPU above this many boxes.
VANILLA_NMS_MIN_BOXES = 1001
_BLOCK = 256


def _pairwise_iou(a: np.ndarray, b: np.ndarray, area_a: np.ndarray, area_b: np.ndarray):
    """(n, m) float32 IoU with the operation order of torchvision's CPU nms kernel.

    numpy, not torch: these small element-wise ops run single-threaded, which avoids a thread
    wake-up per op on a busy CPU.
    """
    xx1 = np.maximum(a[:, None, 0], b[None, :, 0])
    yy1 = np.maximum(a[:, None, 1], b[None, :, 1])
    xx2 = np.minimum(a[:, None, 2], b[None, :, 2])
    yy2 = np.minimum(a[:, None, 3], b[None, :, 3])
    zero = np.float32(0)
    inter = np.maximum(zero, xx2 - xx1) * np.maximum(zero, yy2 - yy1)
    # Zero-area pairs give 0 / 0 = NaN, which (as in C++) never exceeds the threshold.
    with np.errstate(invalid="ignore", divide="ignore"):
        return inter / (area_a[:, None] + area_b[None, :] - inter)


def _keep_top_k_with_ties(keep: torch.Tensor, scores: torch.Tensor, k: int) -> torch.Tensor:
    if not len(keep) > k > 0:
        return keep
    threshold = torch.kthvalue(scores[keep], len(keep) - k + 1).values
    return keep[scores[keep] >= threshold]


def batched_nms_topk(
    boxes: torch.Tensor,
    scores: torch.Tensor,
    classes: torch.Tensor,
    iou_threshold: float,
    topk: Optional[int] = None,
) -> torch.Tensor:
    """Indices kept by class-aware NMS, then every survivor scoring at least the k-th best.

    Args:
        boxes: (N, 4) XYXY.
        scores: (N,).
        classes: (N,) int class of each box; boxes of different classes never suppress each other.
        iou_threshold: a box is suppressed by a kept box of its class with IoU > this.
        topk: keep the survivors scoring >= the k-th best survivor's score (ties can keep more);
            None or <= 0 keeps all survivors.

    Returns:
        (K,) int64 indices into the inputs, by decreasing score.
    """
    k = topk if topk is not None and topk > 0 else 0
    if len(boxes) < VANILLA_NMS_MIN_BOXES or boxes.device.type != "cpu":
        return _keep_top_k_with_ties(batched_nms(boxes, scores, classes, iou_threshold), scores, k)

    order = torch.sort(scores, descending=True, stable=True).indices
    sorted_boxes = boxes[order].float().cpu().numpy()
    sorted_scores = scores[order].cpu().numpy()
    sorted_classes = classes[order].cpu().numpy()
    areas = (sorted_boxes[:, 2] - sorted_boxes[:, 0]) * (sorted_boxes[:, 3] - sorted_boxes[:, 1])
    kept = np.zeros(len(sorted_boxes), dtype=bool)
    kept_scores = np.zeros((0,), dtype=sorted_scores.dtype)
    for start in range(0, len(sorted_boxes), _BLOCK):
        if k and len(kept_scores) >= k:
            # The k-th best survivor is known; later candidates matter only if they tie with it.
            if sorted_scores[start] < np.sort(kept_scores)[::-1][k - 1]:
                break
        block = slice(start, min(start + _BLOCK, len(sorted_boxes)))
        boxes_b, areas_b, classes_b = sorted_boxes[block], areas[block], sorted_classes[block]
        # The threshold test is done in float64, as torchvision compares float IoUs to a double.
        previous = np.flatnonzero(kept[:start])
        suppressed = np.zeros(len(boxes_b), dtype=bool)
        if len(previous):
            iou = _pairwise_iou(boxes_b, sorted_boxes[previous], areas_b, areas[previous])
            same = classes_b[:, None] == sorted_classes[previous][None, :]
            suppressed |= ((iou.astype(np.float64) > iou_threshold) & same).any(axis=1)
        iou = _pairwise_iou(boxes_b, boxes_b, areas_b, areas_b)
        overlaps = (iou.astype(np.float64) > iou_threshold) & (classes_b[:, None] == classes_b)
        block_kept = np.zeros(len(boxes_b), dtype=bool)
        for i in range(len(boxes_b)):
            if not suppressed[i]:
                block_kept[i] = True
                suppressed[i + 1 :] |= overlaps[i, i + 1 :]
        kept[block] = block_kept
        kept_scores = np.concatenate([kept_scores, sorted_scores[block][block_kept]])
    # Ascending input index, then the same (unstable) sort by score as batched_nms: identical
    # order when nothing was skipped; equal scores may come out in another order otherwise.
    keep = order[torch.from_numpy(np.flatnonzero(kept)).to(order.device)].sort().values
    keep = keep[scores[keep].sort(descending=True)[1]]
    return _keep_top_k_with_ties(keep, scores, k)
