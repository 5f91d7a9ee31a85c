"""CenterMask-PR in ONNX Runtime, with the outputs of ``model(inputs)``, for both detectors.

Split::

    inputs --preprocess (torch)--> images --centermask_pr_dense.onnx--> detector outputs,
      saliency --decoding, mask assembly, pasting (torch, the model's own functions)-->
      [{"instances": Instances}]

The network is one graph (no RoI stage); what it outputs and how the predictor decodes it
depends on the detector (``MODEL.CENTERMASK_PR.DETECTOR``, recorded in the metadata as
``detector``):

* ``heatmap``: the heatmap logits and the heads' input feature; the predictor takes the top-k
  peaks and evaluates the offset / size / shape heads at the k peaks only (a few small matrix
  products);
* ``fcos``: per FCOS level the class logits, box regression, centerness and the box-tower
  features (the shape features); the predictor runs FCOS decoding with its class-aware NMS
  (:class:`~centermask.acceleration.inference_model.FCOSDecoding`, as for CondInst).

Both add the saliency logits (without the local-only model). The per-instance mask assembly and
post-processing are the model's (:meth:`CenterMaskPR.finish`).

Usage::

    export_centermask_pr_onnx(model, "export_dir")
    predictor = OnnxCenterMaskPRPredictor(model, "export_dir")
    outputs = predictor([{"image": chw_bgr_float, "height": h, "width": w}])
"""

import copy
from pathlib import Path
from typing import Dict, List, Optional, Sequence, Tuple

import torch
from detectron2.structures import Instances
from torch import nn

from centermask.acceleration.fold_batchnorm import fold_frozen_batchnorm
from centermask.acceleration.inference_model import FCOSDecoding
from centermask.modeling.centermask_pr import CenterMaskPR, FCOSPointDetector
from centermask.modeling.centermask_pr.meta_arch import DETECTORS

from .common import (
    check_no_deformable_convs,
    export_image_graph,
    open_export,
    sample_images,
    spatial_axes,
    write_metadata,
)

__all__ = [
    "PR_DENSE_ONNX",
    "DenseCenterMaskPR",
    "HeatmapOutputs",
    "FCOSOutputs",
    "detector_name",
    "export_centermask_pr_onnx",
    "OnnxCenterMaskPRPredictor",
]

PR_DENSE_ONNX = "centermask_pr_dense.onnx"
FORMAT = "centermask-pr-onnx-v1"
# The detector of an export whose metadata names none.
DEFAULT_DETECTOR = "heatmap"


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


def export_centermask_pr_onnx(
    model: CenterMaskPR, output_dir, *, height: int = 512, width: int = 512, opset: int = 17
) -> Dict[str, Path]:
    """Write ``centermask_pr_dense.onnx`` (dynamic batch and image size) and the metadata json to
    ``output_dir``; returns {"dense": path, "metadata": path}. ``model`` is untouched (a copy is
    folded and exported)."""
    name = detector_name(model)
    check_no_deformable_convs(model)
    images = sample_images(model, height, width)
    output_dir = Path(output_dir)
    output_dir.mkdir(parents=True, exist_ok=True)
    copied = copy.deepcopy(model).eval().cpu()
    fold_frozen_batchnorm(copied)
    dense = DenseCenterMaskPR(copied)
    names = dense.output_names()
    paths = {"dense": output_dir / PR_DENSE_ONNX}
    export_image_graph(dense, images, paths["dense"], spatial_axes(names), opset=opset)
    metadata = {
        "format": FORMAT,
        "detector": name,
        "dense_graph": PR_DENSE_ONNX,
        "dense_inputs": ["images"],
        "dense_outputs": names,
        "size_divisibility": model.backbone.size_divisibility,
        "opset": opset,
        "traced_size": [height, width],
    }
    paths["metadata"] = write_metadata(output_dir, metadata)
    return paths


def _check_detector(expected: str):
    def check(metadata_path: Path, metadata: Dict) -> None:
        found = metadata.get("detector", DEFAULT_DETECTOR)
        if found != expected:
            raise ValueError(
                f"{metadata_path} is an export of CenterMask-PR with the {found!r} detector, but "
                f"this model has the {expected!r} detector (MODEL.CENTERMASK_PR.DETECTOR): "
                "export this model again"
            )

    return check


class OnnxCenterMaskPRPredictor(nn.Module):
    """Runs ``centermask_pr_dense.onnx`` with ONNX Runtime and the rest with ``model``'s own
    decoding, assembly and post-processing; call it like the model. The export must be of the
    model's detector."""

    def __init__(
        self,
        model: CenterMaskPR,
        export_dir,
        *,
        providers: Optional[Sequence[str]] = None,
        threads: Optional[int] = None,
    ):
        super().__init__()
        layout = DenseCenterMaskPR(model)
        self.model = model.eval()
        self.detector_outputs = layout.detector_outputs
        self.output_names = layout.output_names()
        export = open_export(
            export_dir,
            expected_format=FORMAT,
            providers=providers,
            threads=threads,
            expected_outputs=self.output_names,
            check_metadata=_check_detector(layout.detector_name),
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
            detections = self.detector_outputs.detect(outputs, images.image_sizes)
            stride = model.mask_head.saliency_stride
            map_size = (images.tensor.shape[-2] // stride, images.tensor.shape[-1] // stride)
            return model.finish(detections, outputs.get("saliency"), map_size, batched_inputs)
