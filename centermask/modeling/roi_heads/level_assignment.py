"""Which FPN level each RoI is pooled from.

Two criteria, both returning the level index relative to ``min_level`` (0 means ``min_level``):

* ``"ratio"`` - CenterMask's adaptive RoI assignment (Eq. 2 of the paper): the level depends on
  the fraction of the image the box covers,
  ``k = clamp(ceil(k_max - log2(A_img / A_box + eps)), k_min, k_max)``.
  A box covering more than half the image goes to ``k_max``, more than a quarter to
  ``k_max - 1``, and so on. ``A_img`` is the area of the image *before* padding
  (``Instances.image_size``) and ``A_box`` the unclipped box area.
* ``"area"`` - the FPN paper's rule (Eq. 1), which only looks at the box size:
  ``k = clamp(floor(canonical_level + log2(sqrt(A_box) / canonical_box_size + eps)), ...)``.
"""

import sys
from typing import List, Sequence, Tuple

import torch
from detectron2.layers import cat
from detectron2.structures import Boxes

__all__ = ["ASSIGN_CRITERIA", "assign_levels_by_ratio", "assign_levels_by_area"]

ASSIGN_CRITERIA = ("ratio", "area")

# Keeps log2 finite for degenerate inputs; the value of the original implementation.
_EPS = sys.float_info.epsilon


def _box_areas(box_lists: Sequence[Boxes]) -> torch.Tensor:
    # A box with x1 < x0 would give a negative area and a NaN level; treat it as empty instead.
    return cat([boxes.area() for boxes in box_lists]).clamp(min=0)


def assign_levels_by_ratio(
    box_lists: Sequence[Boxes],
    image_sizes: Sequence[Tuple[int, int]],
    min_level: int,
    max_level: int,
) -> torch.Tensor:
    """CenterMask's adaptive level assignment (Eq. 2).

    Args:
        box_lists: N Boxes, one per image, in the coordinates of the network input.
        image_sizes: N (height, width) of the images before padding.
        min_level, max_level: the pyramid levels pooled from (3 and 5 for P3-P5).

    Returns:
        Tensor (M,) int64, M = total number of boxes: level index minus ``min_level``.
        Zero-area boxes give an infinite area ratio and land on ``min_level``.
    """
    if len(box_lists) != len(image_sizes):
        raise ValueError(
            f"assign_levels_by_ratio: got {len(box_lists)} box lists but {len(image_sizes)} "
            "image sizes; pass one (height, width) per image."
        )
    box_areas = _box_areas(box_lists)
    image_areas = cat(
        [
            torch.full((len(boxes),), float(h * w), dtype=box_areas.dtype, device=box_areas.device)
            for boxes, (h, w) in zip(box_lists, image_sizes)
        ]
    )
    levels = torch.ceil(max_level - torch.log2(image_areas / box_areas + _EPS))
    levels = levels.clamp(min=min_level, max=max_level)
    return levels.to(torch.int64) - min_level


def assign_levels_by_area(
    box_lists: Sequence[Boxes],
    min_level: int,
    max_level: int,
    canonical_box_size: int = 224,
    canonical_level: int = 4,
) -> torch.Tensor:
    """The FPN paper's level assignment (Eq. 1), as in detectron2's ROIPooler.

    Args:
        box_lists: N Boxes, one per image.
        min_level, max_level: the pyramid levels pooled from.
        canonical_box_size: sqrt(area) of a box that maps to ``canonical_level``.

    Returns:
        Tensor (M,) int64: level index minus ``min_level``.
    """
    box_sizes = torch.sqrt(_box_areas(box_lists))
    levels = torch.floor(canonical_level + torch.log2(box_sizes / canonical_box_size + _EPS))
    levels = levels.clamp(min=min_level, max=max_level)
    return levels.to(torch.int64) - min_level


def assign_levels(
    criterion: str,
    box_lists: List[Boxes],
    image_sizes: Sequence[Tuple[int, int]],
    min_level: int,
    max_level: int,
    canonical_box_size: int = 224,
    canonical_level: int = 4,
) -> torch.Tensor:
    """Dispatch on ``criterion`` ("ratio" or "area"); see the two functions above."""
    if criterion == "ratio":
        return assign_levels_by_ratio(box_lists, image_sizes, min_level, max_level)
    if criterion == "area":
        return assign_levels_by_area(
            box_lists, min_level, max_level, canonical_box_size, canonical_level
        )
    raise ValueError(
        f"Unknown RoI level assignment criterion {criterion!r} "
        f"(MODEL.ROI_MASK_HEAD.ASSIGN_CRITERION / MODEL.ROI_KEYPOINT_HEAD.ASSIGN_CRITERION); "
        f"expected one of {ASSIGN_CRITERIA}."
    )
