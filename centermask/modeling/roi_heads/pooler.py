"""detectron2's ROIPooler with a selectable level-assignment criterion ("ratio" or "area")."""

from typing import List, Optional, Sequence, Tuple

import torch
from detectron2.layers import nonzero_tuple
from detectron2.modeling.poolers import ROIPooler, convert_boxes_to_pooler_format
from detectron2.structures import Boxes

from .level_assignment import ASSIGN_CRITERIA, assign_levels

__all__ = ["AdaptiveROIPooler"]


class AdaptiveROIPooler(ROIPooler):
    """An :class:`ROIPooler` whose boxes go to pyramid levels by ``assign_criterion``.

    With ``"ratio"`` (CenterMask's Eq. 2) the level depends on the box area relative to the image
    area, so :meth:`forward` also needs the (unpadded) image size of every image.
    """

    def __init__(
        self,
        output_size,
        scales: Sequence[float],
        sampling_ratio: int,
        pooler_type: str,
        assign_criterion: str = "ratio",
        canonical_box_size: int = 224,
        canonical_level: int = 4,
    ):
        """
        Args:
            output_size, scales, sampling_ratio, pooler_type, canonical_box_size,
                canonical_level: as in detectron2's :class:`ROIPooler`.
            assign_criterion: "ratio" (CenterMask) or "area" (FPN).
        """
        super().__init__(
            output_size,
            scales=scales,
            sampling_ratio=sampling_ratio,
            pooler_type=pooler_type,
            canonical_box_size=canonical_box_size,
            canonical_level=canonical_level,
        )
        if assign_criterion not in ASSIGN_CRITERIA:
            raise ValueError(
                f"Unknown ASSIGN_CRITERION {assign_criterion!r}; expected one of {ASSIGN_CRITERIA}."
            )
        self.assign_criterion = assign_criterion

    def forward(
        self,
        x: List[torch.Tensor],
        box_lists: List[Boxes],
        image_sizes: Optional[Sequence[Tuple[int, int]]] = None,
    ) -> torch.Tensor:
        """
        Args:
            x: feature maps (N, C, H_l, W_l), one per level, finest first.
            box_lists: N Boxes in input-image coordinates.
            image_sizes: N (height, width) before padding; required by the "ratio" criterion.

        Returns:
            Tensor (M, C, output_size, output_size), rows in the order of the concatenated boxes.
        """
        if len(self.level_poolers) == 1 or len(box_lists) == 0:
            return super().forward(x, box_lists)
        if len(x) != len(self.level_poolers):
            raise ValueError(
                f"AdaptiveROIPooler was built for {len(self.level_poolers)} feature maps, "
                f"got {len(x)}."
            )
        if self.assign_criterion == "ratio" and image_sizes is None:
            raise ValueError(
                "AdaptiveROIPooler with ASSIGN_CRITERION 'ratio' needs image_sizes "
                "(the unpadded (height, width) of every image)."
            )
        levels = assign_levels(
            self.assign_criterion,
            box_lists,
            image_sizes,
            self.min_level,
            self.max_level,
            self.canonical_box_size,
            self.canonical_level,
        )
        rois = convert_boxes_to_pooler_format(box_lists)
        output = x[0].new_zeros((rois.shape[0], x[0].shape[1]) + tuple(self.output_size))
        for level, level_pooler in enumerate(self.level_poolers):
            inds = nonzero_tuple(levels == level)[0]
            # index_put_ rather than advanced-index assignment: pytorch/pytorch#49852.
            output.index_put_((inds,), level_pooler(x[level], rois[inds]))
        return output
