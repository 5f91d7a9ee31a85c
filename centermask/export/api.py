"""Export any model of this package to ONNX, and run the export with onnxruntime.

Both functions dispatch on the model's design (:mod:`centermask.designs`): CenterMask writes a
dense graph and a mask-head graph, CondInst and CenterMask-PR one dense graph each; every folder
also holds ``centermask_export.json``, which the predictor reads.
"""

from pathlib import Path
from typing import Dict

from torch import nn

from centermask.designs import design_of, resolve

__all__ = ["build_onnx_predictor", "export_onnx"]


def export_onnx(
    model: nn.Module,
    output_dir,
    *,
    height: int = 608,
    width: int = 800,
    opset: int = 17,
    mask_heads: bool = True,
) -> Dict[str, Path]:
    """Write the ONNX graphs of ``model`` (untouched: a copy is exported) and their metadata to
    ``output_dir`` (created if needed).

    Args:
        model: a CenterMask, CondInst or CenterMask-PR model.
        height, width: size of the tracing sample (multiples of the backbone's size divisibility;
            the graphs have dynamic sizes).
        opset: ONNX opset.
        mask_heads: CenterMask only: also export the mask + MaskIoU heads. The other designs have
            no separate mask-head graph, and ``mask_heads=False`` is an error for them.

    Returns:
        {"dense": path, "metadata": path} and, for CenterMask with mask heads, "mask_heads".
    """
    design = design_of(model)
    options = {"height": height, "width": width, "opset": opset}
    if design.mask_heads_graph:
        options["mask_heads"] = mask_heads
    elif not mask_heads:
        raise ValueError(f"{design.name} exports have no mask-head graph to leave out")
    return resolve(design.onnx_exporter)(model, output_dir, **options)


def build_onnx_predictor(model: nn.Module, export_dir, **kwargs) -> nn.Module:
    """The onnxruntime predictor of ``model``'s design for a folder written by
    :func:`export_onnx` (float32 or int8), called like the model; ``kwargs`` go to its constructor
    (``providers``, ``threads``, and for CenterMask ``use_onnx_mask_heads``)."""
    return resolve(design_of(model).onnx_predictor)(model, export_dir, **kwargs)
