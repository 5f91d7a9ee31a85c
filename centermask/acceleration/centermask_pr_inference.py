"""``optimize_for_inference`` for CenterMask-PR: the same outputs, from a folded, fused, NHWC
copy of the model run under ``torch.inference_mode``.

CenterMask-PR has no RoI stage, so what :mod:`.optimize` does for CenterMask's backbone applies
unchanged to its whole network: frozen / eval-mode norms folded into the convs, conv + ReLU fused
(backbone units and every CenterNet-style head), channels-last weights; with the FCOS detector,
its class and box towers run as one (:class:`~.fused_modules.FusedFCOSHead`, as for CenterMask).
"""

import copy
from typing import Dict, List, Optional

import torch
from torch import nn

from centermask.modeling.centermask_pr import CenterMaskPR, FCOSPointDetector

from .dtypes import DtypeLike, require_float32
from .fold_batchnorm import fold_frozen_batchnorm
from .fused_modules import FusedFCOSHead, fuse_conv_activations

__all__ = ["CenterMaskPRInference", "optimize_centermask_pr_for_inference"]


class CenterMaskPRInference(nn.Module):
    """Runs ``model.inference`` under ``torch.inference_mode``; call it like the model."""

    def __init__(self, model: CenterMaskPR, channels_last: bool = False):
        super().__init__()
        if not isinstance(model, CenterMaskPR):
            raise TypeError(f"expected a CenterMaskPR model, got {type(model).__name__}")
        self.model = model
        self.channels_last = channels_last
        self.train(False)

    @property
    def device(self) -> torch.device:
        return self.model.device

    def forward(self, batched_inputs: List[Dict[str, torch.Tensor]]):
        with torch.inference_mode():
            return self.model.inference(batched_inputs)


def optimize_centermask_pr_for_inference(
    model: CenterMaskPR,
    *,
    fold_frozen_bn: bool = True,
    channels_last: Optional[bool] = None,
    compile: bool = False,
    dtype: DtypeLike = None,
    fuse: bool = True,
    postprocess_threads: Optional[int] = None,
    inplace: bool = False,
) -> CenterMaskPRInference:
    """A faster CenterMask-PR for inference with the outputs of ``model(inputs)`` (float32).

    Args:
        model: a :class:`CenterMaskPR` (heatmap or FCOS detector).
        fold_frozen_bn: fold FrozenBatchNorm2d and eval-mode BatchNorm2d into their convs.
        channels_last: NHWC weights and activations; default on for the CPU.
        compile, dtype: must be False / float32 (not available for CenterMask-PR).
        fuse: conv + ReLU as one oneDNN op where available; the FCOS detector's two towers as
            one.
        postprocess_threads: unused (the whole model runs with the global thread count).
        inplace: change ``model`` itself instead of a deep copy (its state_dict keys then differ
            from a checkpoint's).
    """
    require_float32("CenterMask-PR", dtype, compile)
    if not isinstance(model, CenterMaskPR):
        raise TypeError(f"expected a CenterMaskPR model, got {type(model).__name__}")
    if not inplace:
        model = copy.deepcopy(model)
    model.eval()
    if fold_frozen_bn:
        fold_frozen_batchnorm(model)
    if fuse:
        if isinstance(model.detector, FCOSPointDetector):
            fcos = model.detector.fcos
            fused_head = FusedFCOSHead.from_head(fcos.fcos_head)
            if fused_head is not None:
                fcos.fcos_head = fused_head
        fuse_conv_activations(model)
    if channels_last is None:
        channels_last = model.device.type == "cpu"
    if channels_last:
        model.to(memory_format=torch.channels_last)
    return CenterMaskPRInference(model, channels_last=channels_last)
