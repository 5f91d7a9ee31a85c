"""FCOS decoding: per-level candidate selection, box decoding, class-aware NMS, per-image top-k."""

from typing import List, Optional, Sequence, Tuple

import torch
from detectron2.structures import Boxes, Instances
from torchvision.ops import batched_nms

from centermask.layers.nms import batched_nms_topk

from .targets import level_indices as location_level_indices

__all__ = ["select_candidates", "ml_nms", "keep_top_k_with_ties", "fcos_detections"]


def _flatten_level(x: torch.Tensor) -> torch.Tensor:
    """(N, C, H, W) -> (N, H*W, C), location order of :func:`compute_locations_per_level`."""
    n, c = x.shape[:2]
    return x.permute(0, 2, 3, 1).reshape(n, -1, c)


def select_candidates(
    cls_probs: torch.Tensor,
    ctr_probs: torch.Tensor,
    *,
    score_thresh: float,
    pre_nms_topk: int,
    thresh_with_ctr: bool,
) -> Tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Candidates of one level for all images at once, without a host-device sync.

    A (location, class) pair is a candidate when its class probability (or class x centerness
    probability with ``thresh_with_ctr``) exceeds ``score_thresh``; of those, at most
    ``pre_nms_topk`` with the highest class x centerness are kept per image.

    Args:
        cls_probs: (N, L, K) sigmoid class probabilities.
        ctr_probs: (N, L) sigmoid centerness.

    Returns:
        scores (N, k) class x centerness, flat indices (N, k) into L*K and valid (N, k) bool,
        where k = min(pre_nms_topk, L*K) and invalid slots are padding.
    """
    n = cls_probs.shape[0]
    scores = (cls_probs * ctr_probs[:, :, None]).reshape(n, -1)
    is_candidate = (scores if thresh_with_ctr else cls_probs.reshape(n, -1)) > score_thresh
    # Non-candidates rank below every candidate (scores are >= 0), so the top k are exactly the
    # candidates when there are at most k of them, and their k best otherwise.
    ranked = torch.where(is_candidate, scores, torch.full_like(scores, -1.0))
    k = min(pre_nms_topk, ranked.shape[1])
    top_scores, top_indices = ranked.topk(k, dim=1, sorted=False)
    return top_scores, top_indices, is_candidate.gather(1, top_indices)


def ml_nms(instances: Instances, nms_thresh: float) -> Instances:
    """Class-aware NMS on ``pred_boxes``/``scores``/``pred_classes``; keeps descending score order."""
    if nms_thresh <= 0 or len(instances) == 0:
        return instances
    keep = batched_nms(
        instances.pred_boxes.tensor.float(), instances.scores, instances.pred_classes, nms_thresh
    )
    return instances[keep]


def keep_top_k_with_ties(instances: Instances, k: int) -> Instances:
    """Keep every detection scoring at least the k-th best score (ties can keep more than k)."""
    num = len(instances)
    if not num > k > 0:
        return instances
    # The k-th largest is the (num - k + 1)-th smallest; computed on the scores' own device.
    threshold = torch.kthvalue(instances.scores, num - k + 1).values
    return instances[instances.scores >= threshold]


def fcos_detections(
    locations: List[torch.Tensor],
    logits: List[torch.Tensor],
    bbox_reg: List[torch.Tensor],
    ctrness: List[torch.Tensor],
    strides: Sequence[int],
    image_sizes: List[Tuple[int, int]],
    *,
    score_thresh: float,
    pre_nms_topk: int,
    nms_thresh: float,
    post_nms_topk: int,
    thresh_with_ctr: bool = False,
    early_stop_nms: bool = False,
    top_feats: Optional[List[torch.Tensor]] = None,
) -> List[Instances]:
    """Decode FCOS head outputs into per-image detections.

    Args:
        locations: per level (L_l, 2).
        logits, bbox_reg, ctrness: per level (N, K, H, W), (N, 4, H, W) in stride units and
            (N, 1, H, W), as returned by :class:`FCOSHead`.
        strides: per level.
        image_sizes: per image (h, w), stored as the Instances' image size.
        score_thresh, pre_nms_topk: candidate threshold and per-level, per-image cap.
        nms_thresh: IoU threshold of the class-aware NMS.
        post_nms_topk: per-image cap after NMS (ties at the cut are all kept); <= 0 for none.
        thresh_with_ctr: threshold class x centerness instead of class probability.
        early_stop_nms: use :func:`centermask.layers.nms.batched_nms_topk`, which stops once the
            ``post_nms_topk`` best survivors are known: same detections (equal scores may swap
            places), much faster on the CPU with thousands of candidates.
        top_feats: per level (N, D, H, W) outputs of a per-location head on the box tower
            (CondInst's controller); each detection then carries its location's D values.

    Returns:
        per image Instances with ``pred_boxes`` (XYXY, not clipped), ``scores`` =
        sqrt(class x centerness), ``pred_classes`` and ``locations``, in descending score order;
        with ``top_feats`` also ``top_feat`` (n, D) and ``fpn_levels`` (n,) int64 (0 = finest).
    """
    num_classes = logits[0].shape[1]
    level_scores, level_indices, level_valid = [], [], []
    offset = 0
    for level_logits, level_ctr in zip(logits, ctrness):
        cls_probs = _flatten_level(level_logits).sigmoid()
        ctr_probs = _flatten_level(level_ctr).squeeze(2).sigmoid()
        scores, indices, valid = select_candidates(
            cls_probs,
            ctr_probs,
            score_thresh=score_thresh,
            pre_nms_topk=pre_nms_topk,
            thresh_with_ctr=thresh_with_ctr,
        )
        level_scores.append(scores)
        level_indices.append(indices + offset * num_classes)
        level_valid.append(valid)
        offset += cls_probs.shape[1]
    scores = torch.cat(level_scores, dim=1)  # (N, k_total)
    flat_indices = torch.cat(level_indices, dim=1)
    valid = torch.cat(level_valid, dim=1)

    # Box decoding for all levels at once.
    all_locations = torch.cat(locations, dim=0)  # (L, 2)
    location_strides = torch.cat(
        [loc.new_full((len(loc), 1), float(s)) for loc, s in zip(locations, strides)]
    )
    distances = torch.cat([_flatten_level(r) for r in bbox_reg], dim=1) * location_strides
    location_index = flat_indices // num_classes
    classes = flat_indices % num_classes
    cand_locations = all_locations[location_index]  # (N, k_total, 2)
    cand_distances = distances.gather(1, location_index[:, :, None].expand(-1, -1, 4))
    x, y = cand_locations.unbind(dim=2)
    left, top, right, bottom = cand_distances.unbind(dim=2)
    boxes = torch.stack((x - left, y - top, x + right, y + bottom), dim=2)
    if top_feats is not None:
        location_levels = location_level_indices(locations)
        cand_levels = location_levels[location_index]  # (N, k_total)
        all_top_feats = torch.cat([_flatten_level(t) for t in top_feats], dim=1)  # (N, L, D)
        cand_top_feats = all_top_feats.gather(
            1, location_index[:, :, None].expand(-1, -1, all_top_feats.shape[2])
        )

    results = []
    for i, image_size in enumerate(image_sizes):
        keep = valid[i]
        instances = Instances(image_size)
        instances.pred_boxes = Boxes(boxes[i][keep])
        instances.scores = torch.sqrt(scores[i][keep])
        instances.pred_classes = classes[i][keep]
        instances.locations = cand_locations[i][keep]
        if top_feats is not None:
            instances.top_feat = cand_top_feats[i][keep]
            instances.fpn_levels = cand_levels[i][keep]
        if early_stop_nms and nms_thresh > 0:
            boxes_i = instances.pred_boxes.tensor.float()
            kept = batched_nms_topk(
                boxes_i, instances.scores, instances.pred_classes, nms_thresh, post_nms_topk
            )
            results.append(instances[kept])
            continue
        instances = ml_nms(instances, nms_thresh)
        results.append(keep_top_k_with_ties(instances, post_nms_topk))
    return results
