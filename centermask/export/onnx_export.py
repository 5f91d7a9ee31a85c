"""Export CenterMask to ONNX (and TorchScript) in two graphs around the per-detection steps.

The split (see :mod:`centermask.export.onnx_predictor`):

* ``dense.onnx``: backbone + FPN + FCOS head. Input ``images`` (N, 3, H, W) float32, normalised
  and zero-padded to multiples of 32 (dynamic N, H, W). Outputs, by name: the RoI features
  (``p3``, ``p4``, ``p5``), then ``logits_<level>``, ``bbox_reg_<level>`` and ``ctrness_<level>``
  for every FCOS level (see :class:`DenseCenterMask`). FrozenBN is folded into the convs.
* ``mask_heads.onnx``: SAG-Mask + MaskIoU on pooled RoI features. Inputs ``roi_features``
  (M, C, R, R) and ``classes`` (M,) int64 (dynamic M >= 1). Outputs ``mask_probs`` (M, 1, 2R, 2R),
  the sigmoid of each RoI's class mask, and ``maskiou`` (M, K).
* Outside the graphs (PyTorch, cheap or data-dependent): preprocessing, FCOS decoding + NMS,
  RoIAlign with CenterMask's level assignment, ``mask_scores = scores x maskiou[class]`` and
  mask pasting.
"""

import copy
import json
from pathlib import Path
from typing import Dict, Optional, Tuple

import torch
from detectron2.modeling.meta_arch.rcnn import GeneralizedRCNN
from torch import nn

from centermask.acceleration.fold_batchnorm import fold_frozen_batchnorm
from centermask.acceleration.fused_modules import ClassSelectedMaskPredictor
from centermask.acceleration.inference_model import DenseCenterMask, check_centermask_model

__all__ = [
    "MaskHeadsForExport",
    "export_onnx",
    "export_torchscript",
    "DENSE_ONNX",
    "MASK_HEADS_ONNX",
    "METADATA_JSON",
]

DENSE_ONNX = "dense.onnx"
MASK_HEADS_ONNX = "mask_heads.onnx"
METADATA_JSON = "centermask_export.json"
DENSE_TORCHSCRIPT = "dense.ts"


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


def _sample_images(model: GeneralizedRCNN, height: int, width: int) -> torch.Tensor:
    divisor = max(model.backbone.size_divisibility, 1)
    if height % divisor or width % divisor:
        raise ValueError(
            f"export sample size {height}x{width} must be a multiple of the backbone's "
            f"size_divisibility ({divisor})"
        )
    generator = torch.Generator().manual_seed(0)
    return torch.randn((1, 3, height, width), generator=generator) * 50.0


def spatial_axes(names) -> Dict[str, Dict[int, str]]:
    """Dynamic batch and spatial axes of (N, C, H, W) outputs, each with its own H and W."""
    return {name: {0: "batch", 2: f"{name}_h", 3: f"{name}_w"} for name in names}


def export_image_graph(
    module: nn.Module,
    images: torch.Tensor,
    path: Path,
    output_axes: Dict[str, Dict[int, str]],
    *,
    opset: int,
) -> None:
    """Export ``module``, (N, 3, H, W) ``images`` -> the outputs named (in order) by
    ``output_axes``, with a dynamic batch and image size and the given dynamic output axes."""
    dynamic = {"images": {0: "batch", 2: "height", 3: "width"}, **output_axes}
    with torch.no_grad():
        torch.onnx.export(
            module,
            (images,),
            str(path),
            input_names=["images"],
            output_names=list(output_axes),
            dynamic_axes=dynamic,
            opset_version=opset,
            do_constant_folding=True,
            dynamo=False,
        )


def export_onnx(
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

    A CondInst model is exported by :func:`~centermask.export.condinst_onnx.export_condinst_onnx`
    and a CenterMask-PR one by
    :func:`~centermask.export.centermask_pr_onnx.export_centermask_pr_onnx` (one graph each;
    ``mask_heads`` does not apply).
    """
    from centermask.modeling.centermask_pr import CenterMaskPR
    from centermask.modeling.condinst import CondInst

    if isinstance(model, CondInst):
        from .condinst_onnx import export_condinst_onnx

        return export_condinst_onnx(model, output_dir, height=height, width=width, opset=opset)
    if isinstance(model, CenterMaskPR):
        from .centermask_pr_onnx import export_centermask_pr_onnx

        path = export_centermask_pr_onnx(model, output_dir, height=height, width=width, opset=opset)
        return {"dense": path}
    check_centermask_model(model)
    output_dir = Path(output_dir)
    output_dir.mkdir(parents=True, exist_ok=True)
    dense = _dense_model(model)
    images = _sample_images(model, height, width)
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
        "format": "centermask-onnx-v1",
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
    paths["metadata"] = output_dir / METADATA_JSON
    paths["metadata"].write_text(json.dumps(metadata, indent=2))
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
        traced = torch.jit.trace(dense, (_sample_images(model, height, width),), check_trace=False)
    path = output_dir / DENSE_TORCHSCRIPT
    traced.save(str(path))
    return path
