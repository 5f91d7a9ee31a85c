"""CenterMask ROI heads: adaptive RoI level assignment, SAG-Mask, MaskIoU (registers them)."""

from .center_heads import CenterROIHeads
from .level_assignment import assign_levels_by_area, assign_levels_by_ratio
from .mask_head import SpatialAttention, SpatialAttentionMaskHead
from .maskiou_head import ROI_MASKIOU_HEAD_REGISTRY, MaskIoUHead, build_maskiou_head
from .pooler import AdaptiveROIPooler

__all__ = [
    "CenterROIHeads",
    "AdaptiveROIPooler",
    "assign_levels_by_area",
    "assign_levels_by_ratio",
    "SpatialAttention",
    "SpatialAttentionMaskHead",
    "MaskIoUHead",
    "ROI_MASKIOU_HEAD_REGISTRY",
    "build_maskiou_head",
]
