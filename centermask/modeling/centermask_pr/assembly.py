"""CenterMask-PR mask assembly: M_k = sigmoid(L_k) * sigmoid(G_k) inside the box of instance k.

L_k is the instance's S x S local shape resized to its box, G_k the saliency map cropped to the box
(Wang et al., "CenterMask: Single Shot Instance Segmentation with Point Representation", Sec. 3).
Both are evaluated at the cell centres of a map of stride ``s`` of the network input (the mask
grid), so the same function serves the training loss and inference. Each instance is assembled on
its own rows and columns of that map: the whole map at inference, a window around its box in
training (:func:`box_windows`; outside its box a mask is 0 and has no loss).
"""

from typing import Optional, Tuple

import torch
from torch.nn import functional as F

__all__ = [
    "MASK_MODES",
    "cell_centers",
    "boxes_at_least_one_pixel",
    "box_windows",
    "full_map",
    "inside_box",
    "assemble_masks",
]

# "both": local shape x global saliency (the paper's model); "local" / "global": one branch only
# (the paper's ablation, Table 2).
MASK_MODES = ("both", "local", "global")


def cell_centers(index: torch.Tensor, stride: int) -> torch.Tensor:
    """Input-image coordinates of the centres of cells ``index`` (any shape) of a stride-``stride``
    map."""
    return (index.float() + 0.5) * stride


def boxes_at_least_one_pixel(boxes: torch.Tensor, stride: int) -> torch.Tensor:
    """Boxes (K, 4) widened about their centre to at least one cell (``stride`` input pixels).

    A half-open interval [a, a + stride) contains exactly one cell centre, so every instance
    keeps at least one mask pixel however small its box.
    """
    centers = (boxes[:, :2] + boxes[:, 2:]) / 2
    half = ((boxes[:, 2:] - boxes[:, :2]).clamp(min=stride)) / 2
    return torch.cat([centers - half, centers + half], dim=1)


def full_map(num: int, height: int, width: int, device=None) -> Tuple[torch.Tensor, torch.Tensor]:
    """Rows (num, height) and columns (num, width): every instance on the whole map."""
    rows = torch.arange(height, device=device).expand(num, height)
    cols = torch.arange(width, device=device).expand(num, width)
    return rows, cols


def box_windows(
    boxes: torch.Tensor, stride: int, map_size: Tuple[int, int]
) -> Tuple[torch.Tensor, torch.Tensor]:
    """Per box (K, 4, input pixels), the rows (K, h) and columns (K, w) of a window of the
    (H, W) map holding every cell whose centre lies in the box; h and w are the largest box's
    extent in cells (at least 1, at most the map's), windows shifted to stay inside the map."""
    height, width = map_size
    device = boxes.device
    # Cell i's centre (i + 0.5) * stride lies in [a, b) for ceil(a / s - 0.5) <= i < ceil(b / s
    # - 0.5).
    first = torch.ceil(boxes / stride - 0.5).long()
    extent = (first[:, 2:] - first[:, :2]).clamp(min=1)
    h, w = 1, 1
    if len(boxes):
        # Both extents in one copy to the host (one wait for the device).
        w, h = extent.amax(dim=0).tolist()
        h, w = min(h, height), min(w, width)
    top = first[:, 1].clamp(min=0, max=height - h)
    left = first[:, 0].clamp(min=0, max=width - w)
    rows = top[:, None] + torch.arange(h, device=device)
    cols = left[:, None] + torch.arange(w, device=device)
    return rows, cols


def inside_box(
    boxes: torch.Tensor, rows: torch.Tensor, cols: torch.Tensor, stride: int
) -> torch.Tensor:
    """(K, h, w) bool: whether the centres of cells ``rows`` (K, h) x ``cols`` (K, w) of a
    stride-``stride`` map lie in [x0, x1) x [y0, y1) of each box (K, 4, input pixels)."""
    xs, ys = cell_centers(cols, stride), cell_centers(rows, stride)
    in_x = (xs >= boxes[:, 0:1]) & (xs < boxes[:, 2:3])
    in_y = (ys >= boxes[:, 1:2]) & (ys < boxes[:, 3:4])
    return in_y[:, :, None] & in_x[:, None, :]


def _resize_to_boxes(
    shapes: torch.Tensor, boxes: torch.Tensor, rows: torch.Tensor, cols: torch.Tensor, stride: int
) -> torch.Tensor:
    """Bilinear resize of each S x S shape (K, S, S) to its box, sampled at the centres of cells
    ``rows`` (K, h) x ``cols`` (K, w): (K, h, w). For a box on whole cells this is
    ``F.interpolate(shape, size=(h, w), mode="bilinear", align_corners=False)`` placed in the box;
    outside the box the edge values repeat (the caller zeroes them)."""
    xs, ys = cell_centers(cols, stride), cell_centers(rows, stride)
    # Relative position in the box, in [0, 1] inside it; grid_sample wants [-1, 1].
    u = (xs - boxes[:, 0:1]) / (boxes[:, 2:3] - boxes[:, 0:1])
    v = (ys - boxes[:, 1:2]) / (boxes[:, 3:4] - boxes[:, 1:2])
    num, height, width = shapes.shape[0], rows.shape[1], cols.shape[1]
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
    rows: torch.Tensor,
    cols: torch.Tensor,
    stride: int,
) -> torch.Tensor:
    """Instance mask probabilities on cells ``rows`` x ``cols`` of the mask grid.

    Args:
        boxes: (K, 4) x0, y0, x1, y1 in input-image pixels (widened to at least one cell here).
        shape_logits: (K, S, S) local-shape logits, or None for the global-only model.
        saliency_logits: (K, h, w) each instance's saliency channel (its class's, or the single
            class-agnostic one) read at those cells, or None for the local-only model.
        rows, cols: (K, h) and (K, w) long, the cells of the mask grid each instance is
            assembled on (:func:`full_map` or :func:`box_windows`).
        stride: input pixels per cell of the mask grid.

    Returns:
        (K, h, w) probabilities: sigmoid(L_k) * sigmoid(G_k) (or the single factor available)
        inside the box, 0 outside.
    """
    if shape_logits is None and saliency_logits is None:
        raise ValueError("assemble_masks needs shape logits, saliency logits or both")
    boxes = boxes_at_least_one_pixel(boxes.float(), stride)
    inside = inside_box(boxes, rows, cols, stride)
    probs = inside.float()
    if shape_logits is not None:
        probs = probs * _resize_to_boxes(shape_logits, boxes, rows, cols, stride).sigmoid()
    if saliency_logits is not None:
        probs = probs * saliency_logits.sigmoid()
    return probs
