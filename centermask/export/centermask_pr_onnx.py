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
from typing import Dict, Optional, Sequence

from centermask.acceleration.centermask_pr_inference import (
    CenterMaskPRInference,
    DenseCenterMaskPR,
    FCOSOutputs,
    HeatmapOutputs,
    detector_name,
)
from centermask.acceleration.fold_batchnorm import fold_frozen_batchnorm
from centermask.modeling.centermask_pr import CenterMaskPR

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


class OnnxCenterMaskPRPredictor(CenterMaskPRInference):
    """Runs ``centermask_pr_dense.onnx`` with ONNX Runtime and the rest with ``model``'s own
    decoding, assembly and post-processing (as :class:`CenterMaskPRInference` does with its
    PyTorch dense part); call it like the model. The export must be of the model's detector."""

    def __init__(
        self,
        model: CenterMaskPR,
        export_dir,
        *,
        providers: Optional[Sequence[str]] = None,
        threads: Optional[int] = None,
    ):
        layout = DenseCenterMaskPR(model)
        export = open_export(
            export_dir,
            expected_format=FORMAT,
            providers=providers,
            threads=threads,
            expected_outputs=layout.output_names(),
            check_metadata=_check_detector(layout.detector_name),
        )
        super().__init__(model.eval(), export.dense)
        self.metadata = export.metadata
