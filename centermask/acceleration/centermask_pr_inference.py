"""``optimize_for_inference`` for CenterMask-PR: the same outputs, from a folded, fused, NHWC
copy of the model whose dense part can be compiled and autocast to fp16 / bf16.

CenterMask-PR has no RoI stage and no NMS, so what :mod:`.optimize` does for CenterMask's
backbone applies unchanged to its whole network: frozen / eval-mode norms folded into the convs,
conv + ReLU fused (backbone units and every CenterNet-style head), channels-last weights. The
network is split as for the other designs:

* :class:`DenseCenterMaskPR`, tensor in / tensors out: backbone, the detector's dense heads
  (centre heatmap, or FCOS's head with its box towers) and the saliency head. It is what
  ``torch.compile`` and autocast wrap, and what the ONNX export writes (heatmap detector).
* in float32, with the model's own functions: peak extraction or FCOS decoding, the heads read at
  the peaks, mask assembly and pasting.
"""

import copy
from typing import Dict, List, Optional, Sequence, Tuple

import torch
from detectron2.structures import Instances
from torch import nn

from centermask.modeling.centermask_pr import CenterMaskPR, FCOSPointDetector
from centermask.modeling.centermask_pr.fcos_detector import as_point_detections

from .dtypes import DtypeLike, autocast_to, compile_dense, parse_dtype
from .fold_batchnorm import fold_frozen_batchnorm
from .fused_modules import fuse_conv_activations
from .inference_model import FCOSDecoding

__all__ = ["CenterMaskPRInference", "DenseCenterMaskPR", "optimize_centermask_pr_for_inference"]


def _check_model(model: nn.Module) -> None:
    if not isinstance(model, CenterMaskPR):
        raise TypeError(f"expected a CenterMaskPR model, got {type(model).__name__}")


class DenseCenterMaskPR(nn.Module):
    """Backbone + dense heads with tensor outputs, for (N, 3, H, W) normalised padded images.

    Outputs, in this order (:meth:`output_names`):

    * heatmap detector: the heatmap logits (N, C, H/4, W/4) and the detector's input feature
      (its offset / size / shape heads run at the peaks only);
    * FCOS detector: per level the class logits (N, C, H_l, W_l), then per level the box
      regression, the centerness logits and the box-tower features (the shape features);
    * last, the saliency logits (N, C or 1, H/4, W/4), unless the model is local-only.
    """

    def __init__(self, model: CenterMaskPR):
        super().__init__()
        _check_model(model)
        self.backbone = model.backbone
        self.detector = model.detector
        self.mask_head = model.mask_head
        self.fcos = isinstance(model.detector, FCOSPointDetector)

    def output_names(self) -> List[str]:
        if self.fcos:
            levels = self.detector.in_features
            names = [
                f"{k}_{f}" for k in ("logits", "bbox_reg", "ctrness", "towers") for f in levels
            ]
        else:
            names = ["heatmap", "head_input"]
        if self.mask_head.saliency_head is not None:
            names.append("saliency")
        return names

    def forward(self, images: torch.Tensor) -> Tuple[torch.Tensor, ...]:
        features = self.backbone(images)
        if self.fcos:
            head = self.detector.fcos.fcos_head([features[f] for f in self.detector.in_features])
            outputs = tuple(x for part in head[:4] for x in part)
        else:
            head_input = features[self.detector.in_feature]
            outputs = (self.detector.heatmap_head(head_input), head_input)
        saliency = self.mask_head.saliency_map(features)
        return outputs if saliency is None else (*outputs, saliency)


class CenterMaskPRInference(nn.Module):
    """CenterMask-PR inference with the outputs of ``model(inputs)``; call it like the model.

    Children: ``model`` (its detector decodes, its mask head assembles) and ``dense``
    (:class:`DenseCenterMaskPR` of the model, or a compiled version of it).
    """

    def __init__(
        self,
        model: CenterMaskPR,
        dense: Optional[nn.Module] = None,
        *,
        channels_last: bool = False,
        dtype: Optional[torch.dtype] = None,
    ):
        """
        Args:
            model: the CenterMask-PR model; its modules are shared, not copied.
            dense: replaces ``DenseCenterMaskPR(model)``; same tensors in and out.
            channels_last: feed the dense part NHWC-strided images.
            dtype: run the dense part under autocast to this dtype; decoding, the heads read at
                the peaks, mask assembly and pasting stay in float32.
        """
        super().__init__()
        _check_model(model)
        layout = DenseCenterMaskPR(model)
        self.model = model
        self.dense = dense if dense is not None else layout
        self.output_names = layout.output_names()
        self.fcos_decoding = FCOSDecoding.from_fcos(model.detector.fcos) if layout.fcos else None
        self.channels_last = channels_last
        self.dtype = dtype
        self.train(False)

    @property
    def device(self) -> torch.device:
        return self.model.device

    def decode(
        self, outputs: Sequence[torch.Tensor], image_sizes: List[Tuple[int, int]]
    ) -> Tuple[List[Instances], Optional[torch.Tensor]]:
        """Float32 dense outputs -> (per-image detections with their shape features, saliency
        logits or None)."""
        named = dict(zip(self.output_names, outputs))
        saliency = named.get("saliency")
        if self.fcos_decoding is None:
            detector = self.model.detector
            return detector.detect(named["heatmap"], named["head_input"], image_sizes), saliency
        levels = len(self.fcos_decoding.strides)
        logits, bbox_reg, ctrness, towers = (
            list(outputs[i * levels : (i + 1) * levels]) for i in range(4)
        )
        detections = self.fcos_decoding(logits, bbox_reg, ctrness, image_sizes, top_feats=towers)
        return as_point_detections(detections), saliency

    def forward(self, batched_inputs: List[Dict[str, torch.Tensor]]):
        if self.training:
            raise RuntimeError("CenterMaskPRInference is for inference; train the original model")
        model = self.model
        with torch.inference_mode():
            images = model.preprocess_image(batched_inputs)
            tensor = images.tensor
            if self.channels_last:
                tensor = tensor.contiguous(memory_format=torch.channels_last)
            with autocast_to(self.device, self.dtype):
                outputs = self.dense(tensor)
            detections, saliency = self.decode([x.float() for x in outputs], images.image_sizes)
            stride = model.mask_head.saliency_stride
            map_size = (tensor.shape[-2] // stride, tensor.shape[-1] // stride)
            return model.finish(detections, saliency, map_size, batched_inputs)


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
    """A faster CenterMask-PR for inference with the outputs of ``model(inputs)``.

    Args:
        model: a :class:`CenterMaskPR` (heatmap or FCOS detector).
        fold_frozen_bn: fold FrozenBatchNorm2d and eval-mode BatchNorm2d into their convs.
        channels_last: NHWC weights and activations; default on for the CPU, and on CUDA with a
            16-bit ``dtype``.
        compile: ``torch.compile`` the dense part with dynamic shapes
            (:func:`~centermask.acceleration.dtypes.compile_dense`).
        dtype: None / "fp32", or "fp16" / "bf16" to autocast the dense part (decoding and mask
            assembly stay in float32).
        fuse: conv + ReLU as one oneDNN op where available (skipped with ``compile``, which
            fuses by itself).
        postprocess_threads: unused (the whole model runs with the global thread count).
        inplace: change ``model`` itself instead of a deep copy (its state_dict keys then differ
            from a checkpoint's).
    """
    _check_model(model)
    dtype = parse_dtype(dtype)
    if not inplace:
        model = copy.deepcopy(model)
    model.eval()
    if fold_frozen_bn:
        fold_frozen_batchnorm(model)
    if fuse and not compile:
        fuse_conv_activations(model)
    if channels_last is None:
        half = dtype in (torch.float16, torch.bfloat16)
        channels_last = model.device.type == "cpu" or half
    if channels_last:
        model.to(memory_format=torch.channels_last)
    dense = DenseCenterMaskPR(model)
    if compile:
        dense = compile_dense(dense)
    return CenterMaskPRInference(model, dense, channels_last=channels_last, dtype=dtype)
