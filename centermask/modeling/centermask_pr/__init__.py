"""CenterMask-PR: CenterMask with point representation (Wang et al., CVPR 2020).

Named CenterMask-PR here so it is never confused with this library's CenterMask (Lee & Park).
Importing it registers the ``CenterMaskPR`` meta-architecture.
"""

from .center_detector import CenterHeatmapDetector
from .fcos_detector import FCOSPointDetector
from .mask_head import MaskQueries, ShapeSaliencyMaskHead
from .meta_arch import CenterMaskPR

__all__ = [
    "CenterHeatmapDetector",
    "CenterMaskPR",
    "FCOSPointDetector",
    "MaskQueries",
    "ShapeSaliencyMaskHead",
]
