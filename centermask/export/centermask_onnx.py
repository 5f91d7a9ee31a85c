"""ONNX export of CenterMask in two graphs around the per-detection steps, and its onnxruntime
predictor.

* ``dense.onnx``: backbone + FPN + FCOS head. Input ``images`` (N, 3, H, W) float32, normalised
  and zero-padded to multiples of 32 (dynamic N, H, W). Outputs, by name: the RoI features
  (``p3``, ``p4``, ``p5``), then ``logits_<level>``, ``bbox_reg_<level>`` and ``ctrness_<level>``
  for every FCOS level (see :class:`~centermask.acceleration.inference_model.DenseCenterMask`).
  FrozenBN is folded into the convs.
* ``mask_heads.onnx``: SAG-Mask + MaskIoU on pooled RoI features. Inputs ``roi_features``
  (M, C, R, R) and ``classes`` (M,) int64 (dynamic M >= 1). Outputs ``mask_probs`` (M, 1, 2R, 2R),
  the sigmoid of each RoI's class mask, and ``maskiou`` (M, K).
* Outside the graphs (PyTorch, cheap or data-dependent): preprocessing, FCOS decoding + NMS,
  RoIAlign with CenterMask's level assignment, ``mask_scores = scores x maskiou[class]`` and
  mask pasting::

    inputs --preprocess--> images --dense.onnx--> P3-P5 + FCOS logits/boxes/centerness
      --FCOS decoding + NMS--> boxes --RoIAlign, ratio level assignment--> roi_features
      --mask_heads.onnx--> mask probs, MaskIoU --postprocess + paste--> [{"instances": ...}]

Usage::

    export_centermask_onnx(model, "export_dir")
    predictor = OnnxCenterMaskPredictor(model, "export_dir")  # weights only for torch mask heads
    outputs = predictor([{"image": chw_bgr_float, "height": h, "width": w}])

or ``OnnxCenterMaskPredictor.from_config(cfg, "export_dir")`` with no weights at all.
"""

import copy
from pathlib import Path
from typing import Dict, List, Optional, Sequence, Tuple

import torch
from detectron2.modeling import build_model
from detectron2.modeling.meta_arch.rcnn import GeneralizedRCNN
from detectron2.structures import Instances
from torch import nn

from centermask.acceleration.fold_batchnorm import fold_frozen_batchnorm
from centermask.acceleration.fused_modules import ClassSelectedMaskPredictor
from centermask.acceleration.inference_model import (
    CenterMaskInference,
    DenseCenterMask,
    check_centermask_model,
)
from centermask.modeling.roi_heads.maskiou_head import maskiou_inference

from .common import (
    DENSE_ONNX,
    DENSE_TORCHSCRIPT,
    MASK_HEADS_ONNX,
    OnnxModule,
    create_session,
    export_image_graph,
    open_export,
    sample_images,
    spatial_axes,
    write_metadata,
)

__all__ = [
    "MaskHeadsForExport",
    "OnnxCenterMaskPredictor",
    "export_centermask_onnx",
    "export_torchscript",
]

FORMAT = "centermask-onnx-v1"


class MaskHeadsForExport(nn.Module):
    """SAG-Mask + MaskIoU for ONNX: (roi_features, classes) -> (mask_probs, maskiou)."""

    def __init__(self, mask_head: nn.Module, maskiou_head: Optional[nn.Module]):
        super().__init__()
        self.mask_head = copy.deepcopy(mask_head)
        self.predictor = ClassSelectedMaskPredictor(self.mask_head.predictor)
        self.mask_head.predictor = nn.Identity()
        self.maskiou_head = maskiou_head

    def forward(
        self, roi_features: torch.Tensor, classes: torch.Tensor
    ) -> Tuple[torch.Tensor, torch.Tensor]:
        mask_probs = self.predictor(self.mask_head.layers(roi_features), classes).sigmoid()
        if self.maskiou_head is None:
            return mask_probs, mask_probs.new_zeros((mask_probs.shape[0], 0))
        return mask_probs, self.maskiou_head(roi_features, mask_probs)


def _dense_model(model: GeneralizedRCNN) -> DenseCenterMask:
    model = copy.deepcopy(model).eval().cpu()
    fold_frozen_batchnorm(model)
    return DenseCenterMask.from_model(model)


def export_centermask_onnx(
    model: GeneralizedRCNN,
    output_dir,
    *,
    height: int = 608,
    width: int = 800,
    opset: int = 17,
    mask_heads: bool = True,
) -> Dict[str, Path]:
    """Write ``dense.onnx``, ``mask_heads.onnx`` and ``centermask_export.json`` to ``output_dir``.

    Args:
        model: a CenterMask GeneralizedRCNN (eval mode is set on a copy; ``model`` is untouched).
        output_dir: created if needed.
        height, width: size of the tracing sample (any multiple of 32; the graphs have dynamic
            sizes).
        opset: ONNX opset.
        mask_heads: also export the mask + MaskIoU heads (when the model has them).

    Returns:
        {"dense": path, "mask_heads": path (if written), "metadata": path}.
    """
    check_centermask_model(model)
    output_dir = Path(output_dir)
    output_dir.mkdir(parents=True, exist_ok=True)
    dense = _dense_model(model)
    images = sample_images(model, height, width)
    names = dense.output_names()
    paths = {"dense": output_dir / DENSE_ONNX}
    export_image_graph(dense, images, paths["dense"], spatial_axes(names), opset=opset)

    roi_heads = model.roi_heads
    if mask_heads and roi_heads.mask_on:
        heads = MaskHeadsForExport(
            roi_heads.mask_head, roi_heads.maskiou_head if roi_heads.maskiou_on else None
        ).eval()
        heads = copy.deepcopy(heads).cpu()
        channels = dense.backbone.output_shape()[dense.roi_features[0]].channels
        resolution = roi_heads.mask_pooler.output_size
        roi_features = torch.randn((3, channels) + tuple(resolution))
        classes = torch.tensor([0, 1, 2], dtype=torch.int64)
        paths["mask_heads"] = output_dir / MASK_HEADS_ONNX
        with torch.no_grad():
            torch.onnx.export(
                heads,
                (roi_features, classes),
                str(paths["mask_heads"]),
                input_names=["roi_features", "classes"],
                output_names=["mask_probs", "maskiou"],
                dynamic_axes={
                    "roi_features": {0: "rois"},
                    "classes": {0: "rois"},
                    "mask_probs": {0: "rois"},
                    "maskiou": {0: "rois"},
                },
                opset_version=opset,
                do_constant_folding=True,
                dynamo=False,
            )

    metadata = {
        "format": FORMAT,
        "dense_inputs": ["images"],
        "dense_outputs": names,
        "roi_features": dense.roi_features,
        "fcos_features": dense.fcos_features,
        "size_divisibility": model.backbone.size_divisibility,
        "pixel_mean": model.pixel_mean.flatten().tolist(),
        "pixel_std": model.pixel_std.flatten().tolist(),
        "mask_heads": MASK_HEADS_ONNX if "mask_heads" in paths else None,
        "opset": opset,
        "traced_size": [height, width],
    }
    paths["metadata"] = write_metadata(output_dir, metadata)
    return paths


def export_torchscript(
    model: GeneralizedRCNN, output_dir, *, height: int = 608, width: int = 800
) -> Path:
    """Trace the dense part (backbone + FPN + FCOS head, BN folded) to ``dense.ts``.

    Load it with ``torch.jit.load`` and pass it as ``dense`` to
    :class:`~centermask.acceleration.inference_model.CenterMaskInference`; the rest of the pipeline
    stays in Python.
    """
    check_centermask_model(model)
    output_dir = Path(output_dir)
    output_dir.mkdir(parents=True, exist_ok=True)
    dense = _dense_model(model)
    with torch.no_grad():
        traced = torch.jit.trace(dense, (sample_images(model, height, width),), check_trace=False)
    path = output_dir / DENSE_TORCHSCRIPT
    traced.save(str(path))
    return path


class OnnxCenterMaskPredictor(CenterMaskInference):
    """CenterMask inference with the dense part (and the mask heads) in ONNX Runtime.

    Outputs equal ``model(inputs)`` up to float rounding (see tests/export/test_centermask_onnx.py). It runs
    int8 exports (:mod:`centermask.export.int8`, same folder layout) the same way.
    """

    def __init__(
        self,
        model: GeneralizedRCNN,
        export_dir,
        *,
        providers: Optional[Sequence[str]] = None,
        threads: Optional[int] = None,
        use_onnx_mask_heads: bool = True,
        postprocess_threads: Optional[int] = 1,
    ):
        """
        Args:
            model: the CenterMask model the files were exported from (or one built from the same
                config: only its settings, the RoI pooler and, with ``use_onnx_mask_heads``
                False, its mask/MaskIoU weights are used).
            export_dir: folder written by :func:`export_centermask_onnx`.
            providers, threads: see :func:`~centermask.export.common.create_session`.
            use_onnx_mask_heads: run ``mask_heads.onnx`` (else the model's torch heads).
            postprocess_threads: torch CPU threads for decoding and post-processing (see
                :func:`centermask.optimize_for_inference`).
        """
        export = open_export(
            export_dir, expected_format=FORMAT, providers=providers, threads=threads
        )
        metadata = export.metadata
        super().__init__(model.eval(), export.dense)
        if list(self.roi_feature_names) != list(metadata["roi_features"]):
            raise ValueError(
                f"the model pools RoIs from {self.roi_feature_names} but the export gives "
                f"{metadata['roi_features']}: export this model's config again"
            )
        self.mask_heads = None
        if use_onnx_mask_heads and metadata.get("mask_heads"):
            heads_path = export.path / metadata["mask_heads"]
            session = create_session(heads_path, providers, threads)
            self.mask_heads = OnnxModule(session, path=heads_path)
        self.metadata = metadata
        self.postprocess_threads = postprocess_threads

    @classmethod
    def from_config(cls, cfg, export_dir, **kwargs) -> "OnnxCenterMaskPredictor":
        """Build from a config alone: every weight comes from the ONNX files."""
        model = build_model(cfg)
        return cls(model, export_dir, use_onnx_mask_heads=True, **kwargs)

    def run_roi_heads(
        self, features: Dict[str, torch.Tensor], detections: List[Instances]
    ) -> List[Instances]:
        heads = self.roi_heads
        if self.mask_heads is None or not heads.mask_on or heads.keypoint_on:
            return heads.forward_with_given_boxes(features, detections)
        num_rois = sum(len(x) for x in detections)
        if num_rois == 0:
            return heads.forward_with_given_boxes(features, detections)
        roi_features = heads.mask_pooler(
            [features[f] for f in heads.mask_in_features],
            [x.pred_boxes for x in detections],
            [x.image_size for x in detections],
        )
        classes = torch.cat([x.pred_classes for x in detections]).to(torch.int64)
        mask_probs, maskiou = self.mask_heads(roi_features, classes)
        for instances, probs in zip(detections, mask_probs.split([len(x) for x in detections])):
            instances.pred_masks = probs
        if heads.maskiou_on:
            maskiou_inference(maskiou, detections)
        return detections
