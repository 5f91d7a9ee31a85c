"""CenterMask-PR mask assembly: M_k = sigmoid(L_k) * sigmoid(G_k) inside the box of instance k.

L_k is the instance's S x S local shape resized to its box, G_k the saliency map cropped to the box
(Wang et al., "CenterMask: Single Shot Instance Segmentation with Point Representation", Sec. 3).
Both are evaluated on the pixel grid of the saliency map (stride ``s`` of the network input), so
the same function serves the training loss (grid = saliency map) and inference.
"""

from typing import Optional, Tuple

import torch
from torch.nn import functional as F

__all__ = ["MASK_MODES", "grid_centers", "boxes_at_least_one_pixel", "inside_box", "assemble_masks"]

# "both": local shape x global saliency (the paper's model); "local" / "global": one branch only
# (the paper's ablation, Table 2).
MASK_MODES = ("both", "local", "global")


def grid_centers(size: int, stride: int, device=None) -> torch.Tensor:
    """(size,) input-image coordinates of the centres of the cells of a stride-``stride`` map."""
    return (torch.arange(size, dtype=torch.float32, device=device) + 0.5) * stride


def boxes_at_least_one_pixel(boxes: torch.Tensor, stride: int) -> torch.Tensor:
    """Boxes (K, 4) widened about their centre to at least one cell (``stride`` input pixels).

    A half-open interval [a, a + stride) contains exactly one cell centre, so every instance
    keeps at least one mask pixel however small its box.
    """
    centers = (boxes[:, :2] + boxes[:, 2:]) / 2
    half = ((boxes[:, 2:] - boxes[:, :2]).clamp(min=stride)) / 2
    return torch.cat([centers - half, centers + half], dim=1)


def inside_box(boxes: torch.Tensor, height: int, width: int, stride: int) -> torch.Tensor:
    """(K, height, width) bool: the map cells whose centres lie in [x0, x1) x [y0, y1) of each
    box (K, 4), boxes in input-image pixels, map of stride ``stride``."""
    xs = grid_centers(width, stride, boxes.device)
    ys = grid_centers(height, stride, boxes.device)
    in_x = (xs[None, :] >= boxes[:, 0:1]) & (xs[None, :] < boxes[:, 2:3])
    in_y = (ys[None, :] >= boxes[:, 1:2]) & (ys[None, :] < boxes[:, 3:4])
    return in_y[:, :, None] & in_x[:, None, :]


def _resize_to_boxes(
    shapes: torch.Tensor, boxes: torch.Tensor, height: int, width: int, stride: int
) -> torch.Tensor:
    """Bilinear resize of each S x S shape (K, S, S) to its box, sampled at the cell centres of a
    (height, width) map: (K, height, width). For a box on whole cells this is
    ``F.interpolate(shape, size=(h, w), mode="bilinear", align_corners=False)`` placed in the box;
    outside the box the edge values repeat (the caller zeroes them)."""
    xs = grid_centers(width, stride, boxes.device)
    ys = grid_centers(height, stride, boxes.device)
    # Relative position in the box, in [0, 1] inside it; grid_sample wants [-1, 1].
    u = (xs[None, :] - boxes[:, 0:1]) / (boxes[:, 2:3] - boxes[:, 0:1])
    v = (ys[None, :] - boxes[:, 1:2]) / (boxes[:, 3:4] - boxes[:, 1:2])
    num = shapes.shape[0]
    grid = torch.stack(
        [
            (2 * u - 1)[:, None, :].expand(num, height, width),
            (2 * v - 1)[:, :, None].expand(num, height, width),
        ],
        dim=-1,
    )
    return F.grid_sample(
        shapes[:, None], grid, mode="bilinear", padding_mode="border", align_corners=False
    )[:, 0]


def assemble_masks(
    boxes: torch.Tensor,
    shape_logits: Optional[torch.Tensor],
    saliency_logits: Optional[torch.Tensor],
    map_size: Tuple[int, int],
    stride: int,
) -> torch.Tensor:
    """Instance mask probabilities on the grid of the saliency map.

    Args:
        boxes: (K, 4) x0, y0, x1, y1 in input-image pixels (widened to at least one cell here).
        shape_logits: (K, S, S) local-shape logits, or None for the global-only model.
        saliency_logits: (K, H, W) each instance's saliency channel (its class's, or the single
            class-agnostic one), or None for the local-only model.
        map_size: (H, W) of the saliency grid.
        stride: input pixels per saliency cell.

    Returns:
        (K, H, W) probabilities: sigmoid(L_k) * sigmoid(G_k) (or the single factor available)
        inside the box, 0 outside.
    """
    if shape_logits is None and saliency_logits is None:
        raise ValueError("assemble_masks needs shape logits, saliency logits or both")
    height, width = map_size
    boxes = boxes_at_least_one_pixel(boxes.float(), stride)
    probs = torch.ones((boxes.shape[0], height, width), device=boxes.device)
    if shape_logits is not None:
        probs = probs * _resize_to_boxes(shape_logits, boxes, height, width, stride).sigmoid()
    if saliency_logits is not None:
        probs = probs * saliency_logits.sigmoid()
    return probs * inside_box(boxes, height, width, stride)
