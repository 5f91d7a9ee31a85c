"""Pasting fixed-size mask probabilities into the image, batched, with detectron2's exact results.

detectron2's ``paste_masks_in_image`` pastes one mask at a time on the CPU (about fifteen small
tensor operations per mask). :func:`paste_masks_batched` produces the same bool masks, bit for
bit, with one ``grid_sample`` per group of masks: each mask is still sampled only on its own
region (its box grown by one pixel and clipped to the image), using the same float32 arithmetic
for the sampling grid, but the regions of a group are padded to a common size and sampled
together. Only the copy of each region into the output stays a per-mask slice assignment.
"""

from typing import List, Tuple

import torch
import torch.nn.functional as F
from detectron2.layers import paste_masks_in_image

__all__ = ["paste_masks_batched", "paste_regions"]

# Padded pixels sampled per grid_sample call: bounds the float32 grid (2 values per pixel) and
# the sampled values to ~100 MB.
_MAX_PIXELS_PER_GROUP = 8_000_000
# Padding waste below this many pixels is ignored (small masks always share a group).
_SMALL_REGION_PIXELS = 4096


def paste_regions(boxes: torch.Tensor, image_shape: Tuple[int, int]) -> torch.Tensor:
    """Integer region ``[x0, y0, x1, y1)`` pasted for each box: the box grown by one pixel,
    rounded outwards and clipped to the image, as detectron2 does for a single mask.

    Args:
        boxes: (N, 4) float XYXY boxes in image pixels.
        image_shape: (height, width) of the image.

    Returns:
        (N, 4) int64 regions; empty regions have x1 <= x0 or y1 <= y0.
    """
    height, width = image_shape
    x0y0 = torch.clamp(boxes[:, :2].floor() - 1, min=0).to(torch.int32)
    x1 = torch.clamp(boxes[:, 2].ceil() + 1, max=width).to(torch.int32)
    y1 = torch.clamp(boxes[:, 3].ceil() + 1, max=height).to(torch.int32)
    return torch.cat([x0y0, x1[:, None], y1[:, None]], dim=1).to(torch.int64)


def _groups(sizes: List[Tuple[int, int]], order: List[int]) -> List[List[int]]:
    """Split ``order`` (mask indices by decreasing area) into groups sampled together.

    A group is padded to its largest height and width; a mask starts a new group when adding it
    would more than double the sampled pixels (wide and tall boxes do not share a group) or
    exceed the memory bound.
    """
    groups, current, max_h, max_w, actual = [], [], 0, 0, 0
    for index in order:
        h, w = sizes[index]
        new_h, new_w = max(max_h, h), max(max_w, w)
        padded = (len(current) + 1) * new_h * new_w
        too_sparse = padded > 2 * (actual + h * w) + _SMALL_REGION_PIXELS
        if current and (too_sparse or padded > _MAX_PIXELS_PER_GROUP):
            groups.append(current)
            current, new_h, new_w, actual = [], h, w, 0
        current.append(index)
        max_h, max_w, actual = new_h, new_w, actual + h * w
    if current:
        groups.append(current)
    return groups


def _sample_group(
    masks: torch.Tensor, boxes: torch.Tensor, regions: torch.Tensor, height: int, width: int
) -> torch.Tensor:
    """Probabilities (n, height, width) of n masks on their regions, each starting at its own
    region origin (pixels past a region's own extent are computed but unused)."""
    x0, y0, x1, y1 = boxes.split(1, dim=1)  # each (n, 1)
    # Same float32 operations, in the same order, as detectron2's _do_paste_mask.
    offsets_y = torch.arange(height, device=boxes.device, dtype=torch.float32)
    offsets_x = torch.arange(width, device=boxes.device, dtype=torch.float32)
    img_y = regions[:, 1:2].to(torch.float32) + offsets_y + 0.5
    img_x = regions[:, 0:1].to(torch.float32) + offsets_x + 0.5
    img_y = (img_y - y0) / (y1 - y0) * 2 - 1
    img_x = (img_x - x0) / (x1 - x0) * 2 - 1
    n = masks.shape[0]
    grid_x = img_x[:, None, :].expand(n, height, width)
    grid_y = img_y[:, :, None].expand(n, height, width)
    grid = torch.stack([grid_x, grid_y], dim=3)
    if not masks.dtype.is_floating_point:
        masks = masks.float()
    return F.grid_sample(masks[:, None], grid.to(masks.dtype), align_corners=False)[:, 0]


def paste_masks_batched(
    masks: torch.Tensor, boxes: torch.Tensor, image_shape: Tuple[int, int], threshold: float = 0.5
) -> torch.Tensor:
    """Drop-in for detectron2's ``paste_masks_in_image`` (with ``threshold >= 0``), same output.

    Args:
        masks: (N, S, S) probabilities in [0, 1].
        boxes: (N, 4) XYXY boxes in image pixels (a detectron2 ``Boxes`` is accepted too).
        image_shape: (height, width) of the output.
        threshold: a pixel is on when its bilinearly sampled probability is >= threshold.

    Returns:
        (N, height, width) bool masks.
    """
    if not isinstance(boxes, torch.Tensor):
        boxes = boxes.tensor
    if masks.device.type != "cpu" or threshold < 0 or torch.jit.is_scripting():
        # detectron2 already pastes in large chunks on the GPU; keep its code path there.
        return paste_masks_in_image(masks, boxes, image_shape, threshold)
    if masks.dim() != 3 or masks.shape[-1] != masks.shape[-2]:
        raise ValueError(f"masks must be (N, S, S), got {tuple(masks.shape)}")
    if len(boxes) != len(masks):
        raise ValueError(f"got {len(masks)} masks but {len(boxes)} boxes")
    height, width = int(image_shape[0]), int(image_shape[1])
    output = torch.zeros((len(masks), height, width), dtype=torch.bool)
    if len(masks) == 0:
        return output

    regions = paste_regions(boxes, (height, width))
    bounds = regions.tolist()
    sizes = [(max(y1 - y0, 0), max(x1 - x0, 0)) for x0, y0, x1, y1 in bounds]
    order = sorted(
        (i for i, (h, w) in enumerate(sizes) if h > 0 and w > 0),
        key=lambda i: sizes[i][0] * sizes[i][1],
        reverse=True,
    )
    for group in _groups(sizes, order):
        group_h = max(sizes[i][0] for i in group)
        group_w = max(sizes[i][1] for i in group)
        index = torch.tensor(group, dtype=torch.int64)
        sampled = _sample_group(masks[index], boxes[index], regions[index], group_h, group_w)
        on = sampled >= threshold
        for row, i in enumerate(group):
            x0, y0, x1, y1 = bounds[i]
            output[i, y0:y1, x0:x1] = on[row, : y1 - y0, : x1 - x0]
    return output
