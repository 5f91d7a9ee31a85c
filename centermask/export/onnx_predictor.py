"""Run an exported CenterMask with ONNX Runtime and get the Instances that ``model(inputs)`` gives.

Split (written by :func:`centermask.export.onnx_export.export_onnx`)::

    inputs --preprocess (torch)--> images --dense.onnx--> P3-P5 + FCOS logits/boxes/centerness
      --FCOS decoding + NMS (torch)--> boxes --RoIAlign, ratio level assignment (torch)-->
      roi_features --mask_heads.onnx--> mask probs, MaskIoU --postprocess + paste (torch)-->
      [{"instances": Instances}]

Usage::

    model = build_model(cfg)                  # weights only needed for torch mask heads
    predictor = OnnxCenterMaskPredictor(model, "export_dir")
    outputs = predictor([{"image": chw_bgr_float, "height": h, "width": w}])

or ``OnnxCenterMaskPredictor.from_config(cfg, "export_dir")`` with no weights at all.
"""

import json
from pathlib import Path
from typing import Dict, List, Optional, Sequence

import numpy as np
import torch
from detectron2.modeling import build_model
from detectron2.modeling.meta_arch.rcnn import GeneralizedRCNN
from detectron2.structures import Instances
from torch import nn

from centermask.acceleration.inference_model import CenterMaskInference
from centermask.modeling.roi_heads.maskiou_head import maskiou_inference

from .onnx_export import DENSE_ONNX, METADATA_JSON

__all__ = ["OnnxModule", "OnnxCenterMaskPredictor", "build_onnx_predictor", "create_session"]


def create_session(path, providers: Optional[Sequence[str]] = None, threads: Optional[int] = None):
    """An onnxruntime InferenceSession with all graph optimisations.

    Args:
        path: the .onnx file.
        providers: execution providers; default CUDA (when onnxruntime has it) then CPU.
        threads: intra-op threads; default ``torch.get_num_threads()``.
    """
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    options.intra_op_num_threads = threads or torch.get_num_threads()
    options.inter_op_num_threads = 1
    options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    if providers is None:
        available = ort.get_available_providers()
        providers = [p for p in ("CUDAExecutionProvider", "CPUExecutionProvider") if p in available]
    return ort.InferenceSession(str(path), options, providers=list(providers))


class OnnxModule(nn.Module):
    """An ONNX Runtime session behind an ``nn.Module`` interface: tensors in, tensors out.

    Forward hooks work as for any module (the benchmark times it as one stage).
    """

    def __init__(self, session, output_device: Optional[torch.device] = None, path=None):
        """``path``: the graph's file, for tools that work on the graphs a predictor runs (int8
        calibration records each graph's inputs by it)."""
        super().__init__()
        self.session = session
        self.path = Path(path) if path is not None else None
        self.input_names = [x.name for x in session.get_inputs()]
        self.output_names = [x.name for x in session.get_outputs()]
        self.output_device = output_device

    def forward(self, *inputs: torch.Tensor) -> tuple:
        if len(inputs) != len(self.input_names):
            raise ValueError(f"expected inputs {self.input_names}, got {len(inputs)} tensors")
        feed = {
            name: np.ascontiguousarray(x.detach().cpu().numpy())
            for name, x in zip(self.input_names, inputs)
        }
        device = self.output_device or inputs[0].device
        return tuple(torch.from_numpy(y).to(device) for y in self.session.run(None, feed))

    def __deepcopy__(self, memo):
        # Sessions cannot be copied; a copy shares it (it holds no mutable state of ours).
        return self


class OnnxCenterMaskPredictor(CenterMaskInference):
    """CenterMask inference with the dense part (and the mask heads) in ONNX Runtime.

    Outputs equal ``model(inputs)`` up to float rounding (see tests/test_export_onnx.py). It runs
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
            export_dir: folder written by :func:`~centermask.export.onnx_export.export_onnx`.
            providers, threads: see :func:`create_session`.
            use_onnx_mask_heads: run ``mask_heads.onnx`` (else the model's torch heads).
            postprocess_threads: torch CPU threads for decoding and post-processing (see
                :func:`centermask.optimize_for_inference`).
        """
        export_dir = Path(export_dir)
        metadata_path = export_dir / METADATA_JSON
        if not metadata_path.exists():
            raise FileNotFoundError(
                f"{metadata_path} not found: export the model first (tools/export_model.py)"
            )
        metadata = json.loads(metadata_path.read_text())
        dense_path = export_dir / DENSE_ONNX
        dense = OnnxModule(create_session(dense_path, providers, threads), path=dense_path)
        super().__init__(model.eval(), dense)
        if dense.output_names != metadata["dense_outputs"]:
            raise ValueError(
                f"{export_dir / DENSE_ONNX} outputs {dense.output_names}, but the metadata "
                f"lists {metadata['dense_outputs']}"
            )
        if list(self.roi_feature_names) != list(metadata["roi_features"]):
            raise ValueError(
                f"the model pools RoIs from {self.roi_feature_names} but the export gives "
                f"{metadata['roi_features']}: export this model's config again"
            )
        self.mask_heads = None
        if use_onnx_mask_heads and metadata.get("mask_heads"):
            heads_path = export_dir / metadata["mask_heads"]
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


def build_onnx_predictor(model: nn.Module, export_dir, **kwargs) -> nn.Module:
    """The onnxruntime predictor of ``model``'s kind (CenterMask, CondInst or CenterMask-PR) for
    a folder written by :func:`~centermask.export.onnx_export.export_onnx` (float32 or int8);
    ``kwargs`` go to its constructor (e.g. ``threads``, ``use_onnx_mask_heads`` for CenterMask)."""
    from centermask.modeling.centermask_pr import CenterMaskPR
    from centermask.modeling.condinst import CondInst

    if isinstance(model, CondInst):
        from .condinst_onnx import OnnxCondInstPredictor

        return OnnxCondInstPredictor(model, export_dir, **kwargs)
    if isinstance(model, CenterMaskPR):
        from .centermask_pr_onnx import OnnxCenterMaskPRPredictor

        return OnnxCenterMaskPRPredictor(model, export_dir, **kwargs)
    return OnnxCenterMaskPredictor(model, export_dir, **kwargs)
