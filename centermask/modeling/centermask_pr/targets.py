"""Training targets of CenterMask-PR: centre heatmaps (CenterNet), offsets, sizes, masks."""

from typing import List, Optional, Tuple

import torch
from detectron2.structures import BitMasks, Instances, PolygonMasks
from torch.nn import functional as F

__all__ = [
    "gaussian_radius",
    "heatmap_targets",
    "center_targets",
    "gt_bitmasks",
    "mask_targets",
]


def gaussian_radius(heights: torch.Tensor, widths: torch.Tensor, min_overlap: float = 0.7):
    """CornerNet's radius (as used by CenterNet) for boxes of the given sizes (any shape).

    The smallest of the three radii that keep a box whose corners move by that radius at IoU >=
    ``min_overlap`` with the original (both corners inward, both outward, one of each), computed
    with the quadratic-root formula of CornerNet's code (roots halved rather than divided by 2a),
    which is what CenterNet's published models were trained with.
    """
    h, w, o = heights.float(), widths.float(), min_overlap
    b1 = h + w
    c1 = w * h * (1 - o) / (1 + o)
    r1 = (b1 + torch.sqrt(b1**2 - 4 * c1)) / 2
    b2 = 2 * (h + w)
    c2 = (1 - o) * w * h
    r2 = (b2 + torch.sqrt(b2**2 - 16 * c2)) / 2
    a3 = 4 * o
    b3 = -2 * o * (h + w)
    c3 = (o - 1) * w * h
    r3 = (b3 + torch.sqrt(b3**2 - 4 * a3 * c3)) / 2
    return torch.minimum(torch.minimum(r1, r2), r3)


def center_targets(
    boxes: torch.Tensor, stride: int, map_size: Tuple[int, int]
) -> Tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Where each box's centre falls on a stride-``stride`` map, and its regression targets.

    Args:
        boxes: (G, 4) x0, y0, x1, y1 in input-image pixels.
        map_size: (H, W) of the map; centres are clamped into it.

    Returns:
        cells (G, 2) long: integer (x, y) cell of the centre (floor of centre / stride);
        offsets (G, 2): (x, y) centre / stride minus that cell, in [0, 1);
        sizes (G, 2): (w, h) in map cells (box size / stride).
    """
    centers = (boxes[:, :2] + boxes[:, 2:]) / (2 * stride)
    height, width = map_size
    cells = centers.floor().long()
    cells[:, 0].clamp_(0, width - 1)
    cells[:, 1].clamp_(0, height - 1)
    offsets = centers - cells.float()
    sizes = (boxes[:, 2:] - boxes[:, :2]) / stride
    return cells, offsets, sizes


def heatmap_targets(
    boxes: torch.Tensor,
    classes: torch.Tensor,
    num_classes: int,
    stride: int,
    map_size: Tuple[int, int],
    min_overlap: float = 0.7,
) -> torch.Tensor:
    """CenterNet's class heatmap of one image: (num_classes, H, W) in [0, 1].

    Each object puts an unnormalised Gaussian exp(-(dx^2 + dy^2) / (2 sigma^2)), sigma = (2r + 1)
    / 6, r = max(0, floor(gaussian_radius(ceil(h), ceil(w)))) (h, w in map cells), on the square
    window |dx|, |dy| <= r about its centre cell (value 1 there); where objects of one class
    overlap, the maximum is kept.
    """
    height, width = map_size
    heat = torch.zeros((num_classes, height * width), device=boxes.device)
    if boxes.shape[0] == 0:
        return heat.view(num_classes, height, width)
    cells, _, sizes = center_targets(boxes, stride, map_size)
    radius = gaussian_radius(sizes[:, 1].ceil(), sizes[:, 0].ceil(), min_overlap)
    radius = radius.floor().clamp(min=0)
    sigma = (2 * radius + 1) / 6
    xs = torch.arange(width, device=boxes.device, dtype=torch.float32)
    ys = torch.arange(height, device=boxes.device, dtype=torch.float32)
    dx = xs[None, :] - cells[:, 0:1].float()  # (G, W)
    dy = ys[None, :] - cells[:, 1:2].float()  # (G, H)
    gauss = torch.exp(
        -(dy[:, :, None] ** 2 + dx[:, None, :] ** 2) / (2 * sigma[:, None, None] ** 2)
    )
    window = (dy.abs() <= radius[:, None])[:, :, None] & (dx.abs() <= radius[:, None])[:, None, :]
    gauss = (gauss * window).view(boxes.shape[0], -1)
    # Per class the maximum of its objects' Gaussians (all >= 0, so the zeros they start from
    # change nothing), without reading the classes on the host.
    index = classes.long()[:, None].expand_as(gauss)
    heat.scatter_reduce_(0, index, gauss, reduce="amax", include_self=True)
    return heat.view(num_classes, height, width)


def gt_bitmasks(
    instances: Instances, padded_size: Tuple[int, int], device: Optional[torch.device] = None
) -> torch.Tensor:
    """(G, H_pad, W_pad) float 0/1 masks of an image's ``gt_masks`` (polygons, bitmasks or
    anything detectron2's ``BitMasks`` holds), zero-padded to the batch's padded size, on
    ``device`` (default: where the masks are). Polygons are rasterised on the host at the image
    size; the bool masks go to the device, which converts and pads them (a quarter of the bytes
    of float masks, and no padding, cross to it)."""
    masks = instances.gt_masks
    height, width = instances.image_size
    if isinstance(masks, PolygonMasks):
        masks = BitMasks.from_polygon_masks(masks, height, width)
    if not isinstance(masks, BitMasks):
        raise TypeError(
            f"gt_masks must be PolygonMasks or BitMasks (INPUT.MASK_FORMAT 'polygon' or "
            f"'bitmask'), got {type(masks).__name__}"
        )
    tensor = masks.tensor.to(device) if device is not None else masks.tensor
    out = torch.zeros((tensor.shape[0], *padded_size), device=tensor.device)
    out[:, : tensor.shape[1], : tensor.shape[2]] = tensor
    return out


def mask_targets(
    gt_instances: List[Instances], padded_size: Tuple[int, int], stride: int
) -> torch.Tensor:
    """(G_total, H_pad / stride, W_pad / stride) soft GT masks of every instance of the batch
    (images concatenated in order): the fraction of each stride x stride cell the mask covers."""
    device = gt_instances[0].gt_boxes.device if gt_instances else torch.device("cpu")
    masks = [gt_bitmasks(inst, padded_size, device) for inst in gt_instances if len(inst) > 0]
    if not masks:
        shape = (0, padded_size[0] // stride, padded_size[1] // stride)
        return torch.zeros(shape, device=device)
    return F.avg_pool2d(torch.cat(masks)[:, None], kernel_size=stride, stride=stride)[:, 0]
