"""Test-time augmentation for CenterMask: detectron2's GeneralizedRCNNWithTTA keeping mask_scores.

detectron2's TTA detects boxes on every augmented image with the mask branch off, merges them,
then runs the mask branch on the merged boxes in every augmented image and averages the masks.
The merged instances are rebuilt from boxes, scores and classes only, so the MaskIoU-based
``mask_scores`` would be lost (and the segm AP would silently use box scores). This subclass
averages the per-augmentation ``mask_scores`` (each ``score * predicted IoU``) the same way as the
masks.
"""

from typing import List, Optional

import torch
from detectron2.modeling import GeneralizedRCNN, GeneralizedRCNNWithTTA
from detectron2.structures import Instances
from torch import nn
from torch.nn.parallel import DistributedDataParallel

__all__ = ["CenterMaskWithTTA", "check_tta_support"]


def check_tta_support(model: nn.Module) -> None:
    """Raise a clear error for models that test-time augmentation cannot run (CondInst,
    CenterMask-PR): detectron2's TTA re-runs the ROI heads of a ``GeneralizedRCNN`` on merged boxes.
    """
    if isinstance(model, DistributedDataParallel):
        model = model.module
    if not isinstance(model, GeneralizedRCNN):
        raise NotImplementedError(
            f"TEST.AUG.ENABLED: test-time augmentation supports the CenterMask models "
            f"(GeneralizedRCNN meta-architectures), not {type(model).__name__}; set "
            "TEST.AUG.ENABLED False."
        )


class CenterMaskWithTTA(GeneralizedRCNNWithTTA):
    """:class:`GeneralizedRCNNWithTTA` whose merged instances keep ``mask_scores``.

    Same constructor and call interface as the parent.
    """

    _merged_instances: Optional[Instances] = None

    def __init__(self, cfg, model: nn.Module, *args, **kwargs):
        check_tta_support(model)
        super().__init__(cfg, model, *args, **kwargs)

    def _rescale_detected_boxes(self, augmented_inputs, merged_instances: Instances, tfms):
        # The parent only hands the merged instances to this step, before the mask pass.
        self._merged_instances = merged_instances
        return super()._rescale_detected_boxes(augmented_inputs, merged_instances, tfms)

    def _reduce_pred_masks(self, outputs: List[Instances], tfms) -> torch.Tensor:
        merged, self._merged_instances = self._merged_instances, None
        if merged is not None and outputs and all(o.has("mask_scores") for o in outputs):
            merged.mask_scores = torch.stack([o.mask_scores for o in outputs]).mean(dim=0)
        return super()._reduce_pred_masks(outputs, tfms)
