"""FCOS locations and training-target assignment.

Every feature-map cell is a *location*: the input-image point at the centre of its receptive field.
A location is assigned to a GT box when it lies in the box's central region (or in the box itself
without center sampling), when the box's largest regression distance falls in the size range of
the location's level, and when no smaller box also claims it.
"""

import functools
from typing import List, Optional, Sequence, Tuple, Union

import torch
from detectron2.structures import Instances

__all__ = [
    "compute_locations_per_level",
    "level_indices",
    "compute_locations",
    "size_ranges_for_levels",
    "fcos_targets_per_image",
    "fcos_targets",
]

# Upper bound of the last level's size range.
_UNBOUNDED_SIZE = 100000000.0


def compute_locations_per_level(
    height: int, width: int, stride: int, device: torch.device
) -> torch.Tensor:
    """(H*W, 2) float32 (x, y) = (j*stride + stride//2, i*stride + stride//2), row-major."""
    shifts_x = torch.arange(0, width * stride, step=stride, dtype=torch.float32, device=device)
    shifts_y = torch.arange(0, height * stride, step=stride, dtype=torch.float32, device=device)
    shift_y, shift_x = torch.meshgrid(shifts_y, shifts_x, indexing="ij")
    return torch.stack((shift_x.reshape(-1), shift_y.reshape(-1)), dim=1) + stride // 2


def compute_locations(features: List[torch.Tensor], strides: Sequence[int]) -> List[torch.Tensor]:
    """Per level (H_l*W_l, 2) locations for features of shape (N, C, H_l, W_l)."""
    return [
        compute_locations_per_level(f.shape[-2], f.shape[-1], s, f.device)
        for f, s in zip(features, strides)
    ]


@functools.lru_cache(maxsize=32)
def _level_indices(sizes: Tuple[int, ...], device: torch.device) -> torch.Tensor:
    # Made on the device (a tensor made on the host and copied would wait for the device), as a
    # normal tensor even under inference_mode, so that training can read it too.
    with torch.inference_mode(False):
        return torch.cat(
            [torch.full((n,), i, dtype=torch.int64, device=device) for i, n in enumerate(sizes)]
        )


def level_indices(locations: List[torch.Tensor]) -> torch.Tensor:
    """(L,) int64 level of each location of the levels ``locations`` (L_l, 2) concatenated, on
    their device; cached per device and level sizes (which repeat from batch to batch). Read
    only."""
    return _level_indices(tuple(len(loc) for loc in locations), locations[0].device)


def size_ranges_for_levels(sizes_of_interest: Sequence[float]) -> List[Tuple[float, float]]:
    """[(-1, s0), (s0, s1), ..., (s_last, unbounded)]: the accepted range of the largest
    regression distance per level, both ends inclusive."""
    bounds = [-1.0, *[float(s) for s in sizes_of_interest], _UNBOUNDED_SIZE]
    return list(zip(bounds[:-1], bounds[1:]))


def fcos_targets_per_image(
    locations: List[torch.Tensor],
    strides: Sequence[int],
    size_ranges: Sequence[Tuple[float, float]],
    gt_boxes: torch.Tensor,
    gt_classes: torch.Tensor,
    *,
    num_classes: int,
    center_sample: bool = True,
    radius: float = 1.5,
    gt_centers: Optional[torch.Tensor] = None,
    with_gt_index: bool = False,
) -> Union[Tuple[torch.Tensor, torch.Tensor], Tuple[torch.Tensor, torch.Tensor, torch.Tensor]]:
    """Assign every location of one image to a GT box or to background.

    Args:
        locations: per level (L_l, 2) (x, y).
        strides: per level stride.
        size_ranges: per level inclusive (lo, hi) range of a box's largest regression distance.
        gt_boxes: (G, 4) XYXY in input-image pixels; G may be 0.
        gt_classes: (G,) int64 class indices in [0, num_classes).
        num_classes: label of background locations.
        center_sample: positives must lie within ``radius`` strides of the box centre (clipped to
            the box) instead of anywhere inside the box.
        radius: center-sampling radius in strides.
        gt_centers: (G, 2) (x, y) centres of the center-sampling regions; None for the box
            centres (CenterMask). CondInst passes the GT mask centroids.
        with_gt_index: also return the index of each location's GT.

    Returns:
        labels (L,) int64, with ``num_classes`` for background;
        reg_targets (L, 4) float (l, t, r, b) distances to the assigned box in units of the
        location's stride (zeros on an image without GT, meaningless at background locations);
        with ``with_gt_index``, gt_index (L,) int64 index into ``gt_boxes`` (meaningless at
        background locations);
        levels concatenated in order (L = sum L_l).
    """
    if gt_boxes.numel() == 0:
        # The original decides "no GT" by testing whether the first box centre has x == 0, which
        # also turns a genuine box centred on x == 0 into an all-background image; an empty box
        # list is the right test.
        all_locations = torch.cat(locations, dim=0)
        labels = torch.full(
            (len(all_locations),), num_classes, dtype=torch.int64, device=all_locations.device
        )
        reg_targets = all_locations.new_zeros((len(all_locations), 4))
        if with_gt_index:
            return labels, reg_targets, torch.zeros_like(labels)
        return labels, reg_targets

    x0, y0, x1, y1 = gt_boxes[None].unbind(dim=2)  # (1, G) each
    areas = (x1 - x0) * (y1 - y0)  # as Boxes.area()
    if gt_centers is None:
        center_x, center_y = (x0 + x1) / 2, (y0 + y1) / 2
    else:
        center_x, center_y = gt_centers.to(gt_boxes.dtype)[None].unbind(dim=2)
    no_box = torch.full_like(areas, float("inf"))

    labels, reg_targets, gt_indices = [], [], []
    # Levels are independent; within a level everything is (locations x boxes) at once.
    for level_locations, stride, (lo, hi) in zip(locations, strides, size_ranges):
        xs, ys = level_locations[:, 0, None], level_locations[:, 1, None]  # (L_l, 1)
        left, top, right, bottom = xs - x0, ys - y0, x1 - xs, y1 - ys  # (L_l, G)
        if center_sample:
            # The central region: +-radius strides around the box centre, clipped to the box.
            half = stride * radius
            region_x0 = torch.max(center_x - half, x0)
            region_y0 = torch.max(center_y - half, y0)
            region_x1 = torch.min(center_x + half, x1)
            region_y1 = torch.min(center_y + half, y1)
            is_in_box = (
                (xs - region_x0 > 0)
                & (ys - region_y0 > 0)
                & (region_x1 - xs > 0)
                & (region_y1 - ys > 0)
            )
        else:
            is_in_box = (left > 0) & (top > 0) & (right > 0) & (bottom > 0)
        max_distance = torch.max(torch.max(left, right), torch.max(top, bottom))
        is_in_box &= (max_distance >= lo) & (max_distance <= hi)

        # Ambiguous locations go to the smallest box.
        min_area, gt_index = torch.where(is_in_box, areas, no_box).min(dim=1)  # (L_l,)
        level_labels = torch.where(torch.isinf(min_area), num_classes, gt_classes[gt_index])
        labels.append(level_labels)
        gt_indices.append(gt_index)

        x0_, y0_, x1_, y1_ = gt_boxes[gt_index].unbind(dim=1)
        xs, ys = xs[:, 0], ys[:, 0]
        reg = torch.stack((xs - x0_, ys - y0_, x1_ - xs, y1_ - ys), dim=1)
        reg_targets.append(reg / float(stride))
    if with_gt_index:
        return torch.cat(labels), torch.cat(reg_targets), torch.cat(gt_indices)
    return torch.cat(labels), torch.cat(reg_targets)


def fcos_targets(
    locations: List[torch.Tensor],
    gt_instances: List[Instances],
    *,
    strides: Sequence[int],
    size_ranges: Sequence[Tuple[float, float]],
    num_classes: int,
    center_sample: bool = True,
    radius: float = 1.5,
    with_gt_index: bool = False,
) -> Union[Tuple[torch.Tensor, torch.Tensor], Tuple[torch.Tensor, torch.Tensor, torch.Tensor]]:
    """Targets of a batch.

    Args:
        locations: per level (L_l, 2), as from :func:`compute_locations`.
        gt_instances: per image, with ``gt_boxes`` (Boxes) and ``gt_classes``, and optionally
            ``gt_centers`` (G, 2): the centres of the center-sampling regions (box centres when
            absent).
        strides, size_ranges: per level.
        with_gt_index: also return each location's GT index within its image.

    Returns:
        labels (N, L) and reg_targets (N, L, 4) (and gt_index (N, L)), levels concatenated in
        order (L = sum L_l).
    """
    if len(size_ranges) < len(locations):
        raise ValueError(
            f"{len(locations)} FCOS levels but only {len(size_ranges)} size ranges; "
            "MODEL.FCOS.SIZES_OF_INTEREST needs one entry less than MODEL.FCOS.IN_FEATURES"
        )
    per_image = []
    for instances in gt_instances:
        targets = fcos_targets_per_image(
            locations,
            strides,
            size_ranges,
            instances.gt_boxes.tensor.to(locations[0].dtype),
            instances.gt_classes,
            num_classes=num_classes,
            center_sample=center_sample,
            radius=radius,
            gt_centers=instances.gt_centers if instances.has("gt_centers") else None,
            with_gt_index=with_gt_index,
        )
        per_image.append(targets)
    return tuple(torch.stack(parts) for parts in zip(*per_image))
