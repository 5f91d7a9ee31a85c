"""CondInst's ground truth: GT masks rasterised on the padded batch canvas, their point-sampled
stride-4 copies, mask centroids (FCOS center sampling) and the semantic-head targets."""

from typing import List, Tuple

import numpy as np
import torch
from detectron2.structures import BitMasks, Instances, PolygonMasks, polygons_to_bitmask

__all__ = ["full_bitmasks", "add_bitmasks", "mask_centroids", "semantic_targets"]


def full_bitmasks(gt_masks, padded_size: Tuple[int, int], device: torch.device) -> torch.Tensor:
    """(G, H_pad, W_pad) float32 0/1 masks of one image on the padded batch canvas.

    Args:
        gt_masks: the image's ``gt_masks`` (PolygonMasks or BitMasks); G may be 0.
        padded_size: (H_pad, W_pad) of the batch tensor; every mask lies in its top-left corner.
    """
    height, width = padded_size
    if isinstance(gt_masks, PolygonMasks):
        # Rasterised on the padded canvas (AdelaiDet's: a polygon reaching past the image keeps
        # its pixels in the padding), bool on the host; converted on the device.
        masks = [polygons_to_bitmask(p, height, width) for p in gt_masks.polygons]
        array = np.stack(masks) if masks else np.zeros((0, height, width), dtype=bool)
        return torch.from_numpy(array).to(device).float()
    if isinstance(gt_masks, BitMasks):
        tensor = gt_masks.tensor.to(device)
        h, w = tensor.shape[1:]
        if h > height or w > width:
            raise ValueError(
                f"gt_masks of size {h}x{w} are larger than the padded image {height}x{width}; "
                "masks must have the size of the (resized) image they belong to"
            )
        # Copied as they are (bool), converted and padded on the device.
        out = torch.zeros((tensor.shape[0], height, width), device=device)
        out[:, :h, :w] = tensor
        return out
    raise TypeError(
        f"CondInst needs gt_masks as PolygonMasks or BitMasks (INPUT.MASK_FORMAT 'polygon' or "
        f"'bitmask'), got {type(gt_masks).__name__}"
    )


def mask_centroids(bitmasks: torch.Tensor) -> torch.Tensor:
    """(G, H, W) 0/1 masks -> (G, 2) (x, y) centroids in pixel indices (no +0.5); an empty mask
    gives (0, 0)."""
    height, width = bitmasks.shape[1:]
    xs = torch.arange(width, dtype=torch.float32, device=bitmasks.device)
    ys = torch.arange(height, dtype=torch.float32, device=bitmasks.device)
    area = bitmasks.sum(dim=(1, 2)).clamp(min=1e-6)
    center_x = (bitmasks.sum(dim=1) * xs).sum(dim=1) / area
    center_y = (bitmasks.sum(dim=2) * ys).sum(dim=1) / area
    return torch.stack((center_x, center_y), dim=1)


def add_bitmasks(
    gt_instances: List[Instances], padded_size: Tuple[int, int], mask_out_stride: int
) -> None:
    """Give every image's GT, in place, the fields CondInst trains with:

    * ``gt_bitmasks_full`` (G, H_pad, W_pad): the masks on the padded canvas;
    * ``gt_bitmasks`` (G, H_pad/s, W_pad/s): its pixels (s//2 + k*s), s = ``mask_out_stride``,
      (point sampling, no pooling), the targets of the dice loss;
    * ``gt_centers`` (G, 2): the mask centroids, FCOS's center-sampling centres.

    Images without annotations get (0, ...) tensors (the reference crashed on them).
    """
    start = mask_out_stride // 2
    for instances in gt_instances:
        if not instances.has("gt_masks"):
            raise ValueError(
                "CondInst trains on instance masks: the ground truth has no 'gt_masks' "
                "(are the annotations' 'segmentation' fields missing?)"
            )
        device = instances.gt_boxes.device
        full = full_bitmasks(instances.gt_masks, padded_size, device)
        instances.gt_bitmasks_full = full
        instances.gt_bitmasks = full[:, start::mask_out_stride, start::mask_out_stride]
        instances.gt_centers = mask_centroids(full)


def semantic_targets(gt_instances: List[Instances], stride: int) -> torch.Tensor:
    """(N, H_pad/stride, W_pad/stride) int64 class + 1 of the smallest-area GT mask covering
    each sampled pixel (stride//2 + k*stride), 0 where no mask covers it.

    Areas are counted on the full-resolution masks; on equal areas the first GT wins.
    """
    start = stride // 2
    targets = []
    for instances in gt_instances:
        full = instances.gt_bitmasks_full
        sampled = full[:, start::stride, start::stride]  # (G, h, w)
        target = torch.zeros(sampled.shape[1:], dtype=torch.int64, device=full.device)
        if len(full) > 0:
            areas = full.sum(dim=(1, 2))[:, None, None].expand_as(sampled)
            covered_areas = torch.where(sampled > 0, areas, torch.full_like(areas, float("inf")))
            min_area, index = covered_areas.min(dim=0)
            classes = instances.gt_classes.to(full.device)[index] + 1
            target = torch.where(torch.isinf(min_area), target, classes)
        targets.append(target)
    return torch.stack(targets)
