"""CenterMask-PR (centre-heatmap detector) in ONNX Runtime, with the outputs of ``model(inputs)``.

Split::

    inputs --preprocess (torch)--> images --centermask_pr_dense.onnx--> heatmap, head input,
      saliency --peaks, offset / size / shape heads at the peaks, boxes, mask assembly, pasting
      (torch, the model's own functions)--> [{"instances": Instances}]

The network is one graph (no RoI stage, no NMS); what stays in PyTorch is a top-k, the heads
evaluated at the k peaks only (a few small matrix products) and the per-instance mask assembly.
The FCOS detector variant is not exported.

Usage::

    export_centermask_pr_onnx(model, "export_dir")
    predictor = OnnxCenterMaskPRPredictor(model, "export_dir")
    outputs = predictor([{"image": chw_bgr_float, "height": h, "width": w}])
"""

import copy
from pathlib import Path
from typing import Dict, List, Optional, Tuple

import torch
from torch import nn

from centermask.acceleration.fold_batchnorm import fold_frozen_batchnorm
from centermask.modeling.centermask_pr import CenterHeatmapDetector, CenterMaskPR

from .common import (
    check_no_deformable_convs,
    export_image_graph,
    open_export,
    sample_images,
    write_metadata,
)

__all__ = [
    "PR_DENSE_ONNX",
    "DenseCenterMaskPR",
    "export_centermask_pr_onnx",
    "OnnxCenterMaskPRPredictor",
]

PR_DENSE_ONNX = "centermask_pr_dense.onnx"
FORMAT = "centermask-pr-onnx-v1"


def _check_heatmap_model(model: nn.Module) -> None:
    if not isinstance(model, CenterMaskPR):
        raise TypeError(f"expected a CenterMaskPR model, got {type(model).__name__}")
    if not isinstance(model.detector, CenterHeatmapDetector):
        raise TypeError(
            "ONNX export of CenterMask-PR covers the centre-heatmap detector "
            "(MODEL.CENTERMASK_PR.DETECTOR 'heatmap'), got "
            f"{type(model.detector).__name__}"
        )


class DenseCenterMaskPR(nn.Module):
    """Backbone + dense heads with tensor outputs: (N, 3, H, W) normalised padded images ->
    heatmap logits, the detector's input feature (its other heads run at the peaks only) and
    the saliency logits (without the local-only model), all at the heads' stride."""

    def __init__(self, model: CenterMaskPR):
        super().__init__()
        _check_heatmap_model(model)
        self.backbone = model.backbone
        self.detector = model.detector
        self.mask_head = model.mask_head

    def output_names(self) -> List[str]:
        names = ["heatmap", "head_input"]
        if self.mask_head.saliency_head is not None:
            names.append("saliency")
        return names

    def forward(self, images: torch.Tensor) -> Tuple[torch.Tensor, ...]:
        features = self.backbone(images)
        head_input = features[self.detector.in_feature]
        saliency = self.mask_head.saliency_map(features)
        outputs = (self.detector.heatmap_head(head_input), head_input, saliency)
        return tuple(x for x in outputs if x is not None)


def export_centermask_pr_onnx(
    model: CenterMaskPR, output_dir, *, height: int = 512, width: int = 512, opset: int = 17
) -> Dict[str, Path]:
    """Write ``centermask_pr_dense.onnx`` (dynamic batch and image size) and the metadata json to
    ``output_dir``; returns {"dense": path, "metadata": path}. ``model`` is untouched (a copy is
    folded and exported)."""
    _check_heatmap_model(model)
    check_no_deformable_convs(model)
    images = sample_images(model, height, width)
    output_dir = Path(output_dir)
    output_dir.mkdir(parents=True, exist_ok=True)
    copied = copy.deepcopy(model).eval().cpu()
    fold_frozen_batchnorm(copied)
    dense = DenseCenterMaskPR(copied)
    names = dense.output_names()
    # Every output is a stride-4 map of the same size.
    axes = {name: {0: "batch", 2: "map_h", 3: "map_w"} for name in names}
    paths = {"dense": output_dir / PR_DENSE_ONNX}
    export_image_graph(dense, images, paths["dense"], axes, opset=opset)
    metadata = {
        "format": FORMAT,
        "dense_graph": PR_DENSE_ONNX,
        "dense_inputs": ["images"],
        "dense_outputs": names,
        "size_divisibility": model.backbone.size_divisibility,
        "opset": opset,
        "traced_size": [height, width],
    }
    paths["metadata"] = write_metadata(output_dir, metadata)
    return paths


class OnnxCenterMaskPRPredictor(nn.Module):
    """Runs ``centermask_pr_dense.onnx`` with ONNX Runtime and the rest with ``model``'s own
    decoding, assembly and post-processing; call it like the model."""

    def __init__(
        self,
        model: CenterMaskPR,
        export_dir,
        *,
        providers: Optional[List[str]] = None,
        threads: Optional[int] = None,
    ):
        super().__init__()
        _check_heatmap_model(model)
        self.model = model.eval()
        self.output_names = DenseCenterMaskPR(model).output_names()
        export = open_export(
            export_dir,
            expected_format=FORMAT,
            providers=providers,
            threads=threads,
            expected_outputs=self.output_names,
        )
        self.dense, self.metadata = export.dense, export.metadata

    @property
    def device(self) -> torch.device:
        return self.model.device

    def forward(self, batched_inputs: List[Dict[str, torch.Tensor]]):
        model = self.model
        with torch.inference_mode():
            images = model.preprocess_image(batched_inputs)
            outputs = dict(zip(self.output_names, self.dense(images.tensor)))
            detections = model.detector.detect(
                outputs["heatmap"], outputs["head_input"], images.image_sizes
            )
            stride = model.mask_head.saliency_stride
            map_size = (images.tensor.shape[-2] // stride, images.tensor.shape[-1] // stride)
            return model.finish(detections, outputs.get("saliency"), map_size, batched_inputs)
