"""The instance-segmentation designs this package serves, and where each one's deployment code is.

One row per design, keyed by its meta-architecture (``MODEL.META_ARCHITECTURE``): the function that
optimises it for inference, its ONNX exporter and its onnxruntime predictor, plus what its export
folders hold. :func:`centermask.optimize_for_inference`, :func:`centermask.export.export_onnx`,
:func:`centermask.export.build_onnx_predictor` and the benchmark all dispatch through this table,
so a fourth design is one more row.

The implementations are named by import path ("module:attribute") and imported on first use: they
live in the layers above this module (``acceleration``, ``export``), which import the models.
"""

import importlib
from dataclasses import dataclass
from typing import Any, Dict

from torch import nn

__all__ = ["DESIGNS", "Design", "design_of", "resolve"]


@dataclass(frozen=True)
class Design:
    """One design's deployment entry points ("module:attribute" import paths)."""

    name: str
    optimize: str  # (model, **optimize_for_inference options) -> inference module
    onnx_exporter: str  # (model, output_dir, *, height, width, opset[, mask_heads]) -> paths
    onnx_predictor: str  # class (model, export_dir, **options), called like the model
    mask_heads_graph: bool = False  # the export has a separate mask-head graph
    torchscript: bool = False  # the dense part can be traced to TorchScript


DESIGNS: Dict[str, Design] = {
    # CenterMask is detectron2's GeneralizedRCNN with the FCOS proposal generator and
    # CenterROIHeads (checked by the functions below).
    "GeneralizedRCNN": Design(
        name="CenterMask",
        optimize="centermask.acceleration.optimize:optimize_centermask_for_inference",
        onnx_exporter="centermask.export.centermask_onnx:export_centermask_onnx",
        onnx_predictor="centermask.export.centermask_onnx:OnnxCenterMaskPredictor",
        mask_heads_graph=True,
        torchscript=True,
    ),
    "CondInst": Design(
        name="CondInst",
        optimize="centermask.acceleration.condinst_inference:optimize_condinst_for_inference",
        onnx_exporter="centermask.export.condinst_onnx:export_condinst_onnx",
        onnx_predictor="centermask.export.condinst_onnx:OnnxCondInstPredictor",
    ),
    "CenterMaskPR": Design(
        name="CenterMask-PR",
        optimize=(
            "centermask.acceleration.centermask_pr_inference:optimize_centermask_pr_for_inference"
        ),
        onnx_exporter="centermask.export.centermask_pr_onnx:export_centermask_pr_onnx",
        onnx_predictor="centermask.export.centermask_pr_onnx:OnnxCenterMaskPRPredictor",
    ),
}


def design_of(model: nn.Module) -> Design:
    """The row of ``model``'s meta-architecture (its class or the nearest base class listed)."""
    for cls in type(model).__mro__:
        if cls.__name__ in DESIGNS:
            return DESIGNS[cls.__name__]
    raise TypeError(
        f"{type(model).__name__} is none of the meta-architectures this package deploys "
        f"({', '.join(DESIGNS)}): build the model from one of the configs in configs/"
    )


def resolve(reference: str) -> Any:
    """Import "package.module:attribute" and return the attribute."""
    module_name, _, attribute = reference.partition(":")
    return getattr(importlib.import_module(module_name), attribute)
