"""``optimize_for_inference`` for CenterMask-PR: the same outputs, from a folded, fused, NHWC
copy of the model whose dense part can be compiled and autocast to fp16 / bf16.

CenterMask-PR has no RoI stage, so what :mod:`.optimize` does for CenterMask's backbone applies
unchanged to its whole network: frozen / eval-mode norms folded into the convs, conv + ReLU fused
(backbone units and every CenterNet-style head), channels-last weights; with the FCOS detector,
its class and box towers run as one (:class:`~.fused_modules.FusedFCOSHead`, as for CenterMask).
The network is split as for the other designs:

* :class:`DenseCenterMaskPR`, tensor in / tensors out: backbone, the detector's dense outputs
  (:class:`HeatmapOutputs` or :class:`FCOSOutputs`) and the saliency head. It is what
  ``torch.compile`` and autocast wrap, and what the ONNX export writes;
* in float32, with the model's own functions: peak extraction or FCOS decoding (the detector
  outputs' ``detect``), mask assembly and pasting (:meth:`CenterMaskPR.finish`).
"""

import copy
from typing import Dict, List, Optional, Tuple

import torch
from detectron2.structures import Instances
from torch import nn

from centermask.modeling.centermask_pr import CenterMaskPR, FCOSPointDetector
from centermask.modeling.centermask_pr.meta_arch import DETECTORS

from .dtypes import DtypeLike, autocast_to, compile_dense, parse_dtype
from .fold_batchnorm import fold_frozen_batchnorm
from .fused_modules import FusedFCOSHead, fuse_conv_activations
from .inference_model import FCOSDecoding

__all__ = [
    "CenterMaskPRInference",
    "DenseCenterMaskPR",
    "FCOSOutputs",
    "HeatmapOutputs",
    "detector_name",
    "optimize_centermask_pr_for_inference",
]


def detector_name(model: nn.Module) -> str:
    """``MODEL.CENTERMASK_PR.DETECTOR`` of a CenterMask-PR model ("heatmap" or "fcos")."""
    if not isinstance(model, CenterMaskPR):
        raise TypeError(f"expected a CenterMaskPR model, got {type(model).__name__}")
    for name, detector_class in DETECTORS.items():
        if isinstance(model.detector, detector_class):
            return name
    raise TypeError(
        f"ONNX export of CenterMask-PR covers the detectors {sorted(DETECTORS)} "
        f"(MODEL.CENTERMASK_PR.DETECTOR), got {type(model.detector).__name__}"
    )


class HeatmapOutputs(nn.Module):
    """The centre-heatmap detector's part of the graph and of the decoding: heatmap logits
    (N, K, H, W) and the heads' input feature (N, C, H, W); its other heads run at the peaks."""

    def __init__(self, detector: nn.Module):
        super().__init__()
        self.detector = detector

    def output_names(self) -> List[str]:
        return ["heatmap", "head_input"]

    def forward(self, features: Dict[str, torch.Tensor]) -> Tuple[torch.Tensor, ...]:
        head_input = features[self.detector.in_feature]
        return self.detector.heatmap_head(head_input), head_input

    def detect(
        self, outputs: Dict[str, torch.Tensor], image_sizes: List[Tuple[int, int]]
    ) -> List[Instances]:
        """Graph outputs by name -> per-image detections with ``shape_features``."""
        return self.detector.detect(outputs["heatmap"], outputs["head_input"], image_sizes)


class FCOSOutputs(nn.Module):
    """The FCOS detector's part of the graph and of the decoding: per level (finest first) the
    class logits (N, K, H_l, W_l), box regression (N, 4, H_l, W_l), centerness logits
    (N, 1, H_l, W_l) and shape features (N, C, H_l, W_l), the box tower as FCOS hands it over."""

    def __init__(self, detector: FCOSPointDetector):
        super().__init__()
        self.detector = detector
        self.levels = list(detector.in_features)
        self.decoding = FCOSDecoding.from_fcos(detector.fcos)

    def output_names(self) -> List[str]:
        names = []
        for kind in ("logits", "bbox_reg", "ctrness", "shape_features"):
            names += [f"{kind}_{level}" for level in self.levels]
        return names

    def forward(self, features: Dict[str, torch.Tensor]) -> Tuple[torch.Tensor, ...]:
        fcos = self.detector.fcos
        logits, bbox_reg, ctrness, towers = fcos.fcos_head([features[f] for f in self.levels])[:4]
        shape_features = [self.detector.tower_features(tower) for tower in towers]
        return (*logits, *bbox_reg, *ctrness, *shape_features)

    def detect(
        self, outputs: Dict[str, torch.Tensor], image_sizes: List[Tuple[int, int]]
    ) -> List[Instances]:
        """Graph outputs by name -> per-image detections with ``shape_features``."""
        logits, bbox_reg, ctrness, shape_features = (
            [outputs[f"{kind}_{level}"] for level in self.levels]
            for kind in ("logits", "bbox_reg", "ctrness", "shape_features")
        )
        detections = self.decoding(logits, bbox_reg, ctrness, image_sizes, top_feats=shape_features)
        return self.detector.with_shape_features(detections)


DETECTOR_OUTPUTS = {"heatmap": HeatmapOutputs, "fcos": FCOSOutputs}


class DenseCenterMaskPR(nn.Module):
    """Backbone + dense heads with tensor outputs: (N, 3, H, W) normalised padded images -> the
    detector's outputs (:class:`HeatmapOutputs` or :class:`FCOSOutputs`) and the saliency
    logits (without the local-only model)."""

    def __init__(self, model: CenterMaskPR):
        super().__init__()
        self.detector_name = detector_name(model)
        self.backbone = model.backbone
        self.detector_outputs = DETECTOR_OUTPUTS[self.detector_name](model.detector)
        self.mask_head = model.mask_head

    def output_names(self) -> List[str]:
        names = self.detector_outputs.output_names()
        if self.mask_head.saliency_head is not None:
            names.append("saliency")
        return names

    def forward(self, images: torch.Tensor) -> Tuple[torch.Tensor, ...]:
        features = self.backbone(images)
        outputs = self.detector_outputs(features)
        saliency = self.mask_head.saliency_map(features)
        return outputs if saliency is None else (*outputs, saliency)


class CenterMaskPRInference(nn.Module):
    """CenterMask-PR inference with the outputs of ``model(inputs)``; call it like the model.

    Children: ``model`` (its mask head assembles) and ``dense`` (:class:`DenseCenterMaskPR` of
    the model, or a compiled version of it); the detector outputs decode.
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
        layout = DenseCenterMaskPR(model)
        self.model = model
        self.dense = dense if dense is not None else layout
        self.detector_outputs = layout.detector_outputs
        self.output_names = layout.output_names()
        self.channels_last = channels_last
        self.dtype = dtype
        self.train(False)

    @property
    def device(self) -> torch.device:
        return self.model.device

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
            outputs = dict(zip(self.output_names, [x.float() for x in outputs]))
            detections = self.detector_outputs.detect(outputs, images.image_sizes)
            stride = model.mask_head.saliency_stride
            map_size = (tensor.shape[-2] // stride, tensor.shape[-1] // stride)
            return model.finish(detections, outputs.get("saliency"), map_size, batched_inputs)


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
        fuse: the FCOS detector's two towers as one; conv + ReLU as one oneDNN op where
            available (skipped with ``compile``, which fuses by itself).
        postprocess_threads: unused (the whole model runs with the global thread count).
        inplace: change ``model`` itself instead of a deep copy (its state_dict keys then differ
            from a checkpoint's).
    """
    detector_name(model)  # a CenterMaskPR with a known detector
    dtype = parse_dtype(dtype)
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
        if not compile:
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
