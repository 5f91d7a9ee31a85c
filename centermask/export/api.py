"""Export any model of this package to ONNX, and run the export with onnxruntime.

Both functions dispatch on the model's design (:mod:`centermask.designs`): CenterMask writes a
dense graph and a mask-head graph, CondInst and CenterMask-PR one dense graph each; every folder
also holds ``centermask_export.json``, which the predictor reads.
"""

from pathlib import Path
from typing import Dict, Optional

from torch import nn
from torchvision.ops import DeformConv2d

from centermask.designs import design_of, resolve
from centermask.layers.deform_conv import DeformConv

__all__ = ["build_onnx_predictor", "check_onnx_exportable", "export_onnx", "DEFORMABLE_CONFIG_KEYS"]

# The config keys that put deformable convolutions into a model, by the class name (prefix) of
# the module holding them. A module may instead name its key in a ``deformable_config_key``
# attribute.
DEFORMABLE_CONFIG_KEYS = {
    "VoVNet": "MODEL.VOVNET.STAGE_WITH_DCN",
    "DLA": "MODEL.DLA (deformable up-path)",
}


def _deformable_key(model: nn.Module, name: str) -> Optional[str]:
    """The config key that enabled the submodule ``name``: the innermost enclosing module's
    ``deformable_config_key``, else the innermost class-name match in
    :data:`DEFORMABLE_CONFIG_KEYS`, else None."""
    explicit, by_class, module = None, None, model
    for part in [""] + name.split("."):
        module = module.get_submodule(part) if part else module
        explicit = getattr(module, "deformable_config_key", None) or explicit
        for cls, key in DEFORMABLE_CONFIG_KEYS.items():
            if type(module).__name__.startswith(cls):
                by_class = key
    return explicit or by_class


def check_onnx_exportable(model: nn.Module) -> None:
    """Raise a ValueError naming the config key when ``model`` has deformable convolutions:
    torchvision's ``deform_conv2d`` has no ONNX symbolic, so tracing would fail deep inside the
    exporter (or export a graph onnxruntime cannot run)."""
    deformable = [
        name
        for name, module in model.named_modules()
        if isinstance(module, (DeformConv, DeformConv2d))
    ]
    if not deformable:
        return
    keys = sorted({_deformable_key(model, name) for name in deformable} - {None})
    keys = keys or sorted(DEFORMABLE_CONFIG_KEYS.values())
    raise ValueError(
        f"{len(deformable)} deformable convolution(s) ({deformable[0]}, ...) cannot be exported to "
        f"ONNX: torchvision's deform_conv2d has no ONNX symbolic. They come from {', '.join(keys)}: "
        "export a model without them, or deploy this one with "
        "centermask.optimize_for_inference (eager or compile=True) or TorchScript "
        "(centermask.export.centermask_onnx.export_torchscript for CenterMask)."
    )


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

    Raises:
        ValueError: for models with deformable convolutions (:func:`check_onnx_exportable`).
    """
    design = design_of(model)
    check_onnx_exportable(model)
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
