"""ONNX export of CondInst and its ONNX Runtime predictor.

One graph, ``dense.onnx``: backbone + FPN + FCOS head + controller + mask branch
(:class:`~centermask.acceleration.condinst_inference.DenseCondInst`, BatchNorms folded). FCOS
decoding, the dynamic mask head (a few batched matrix products whose weights are per-detection
inputs) and the mask upsampling stay in PyTorch::

    inputs --preprocess--> images --dense.onnx--> FCOS outputs, dynamic params, mask features
      --FCOS decoding + NMS--> detections --dynamic mask head--> masks --postprocess--> Instances
"""

import copy
from pathlib import Path
from typing import Dict, Optional, Sequence

from detectron2.modeling import build_model

from centermask.acceleration.condinst_inference import (
    CondInstInference,
    DenseCondInst,
    check_condinst_model,
)
from centermask.acceleration.fold_batchnorm import fold_frozen_batchnorm
from centermask.modeling.condinst import CondInst

from .common import (
    DENSE_ONNX,
    export_image_graph,
    open_export,
    sample_images,
    spatial_axes,
    write_metadata,
)

__all__ = ["export_condinst_onnx", "OnnxCondInstPredictor"]

FORMAT = "condinst-onnx-v1"


def export_condinst_onnx(
    model: CondInst, output_dir, *, height: int = 608, width: int = 800, opset: int = 17
) -> Dict[str, Path]:
    """Write ``dense.onnx`` and the metadata json to ``output_dir`` (created if needed).

    Args:
        model: a CondInst model (copied; ``model`` is untouched).
        height, width: size of the tracing sample (multiples of 32; the graph has dynamic sizes).
        opset: ONNX opset.

    Returns:
        {"dense": path, "metadata": path}.
    """
    check_condinst_model(model)
    output_dir = Path(output_dir)
    output_dir.mkdir(parents=True, exist_ok=True)
    copied = copy.deepcopy(model).eval().cpu()
    fold_frozen_batchnorm(copied)
    dense = DenseCondInst.from_model(copied)
    names = dense.output_names()
    paths = {"dense": output_dir / DENSE_ONNX}
    images = sample_images(model, height, width)
    export_image_graph(dense, images, paths["dense"], spatial_axes(names), opset=opset)
    metadata = {
        "format": FORMAT,
        "dense_inputs": ["images"],
        "dense_outputs": names,
        "fcos_features": dense.fcos_features,
        "size_divisibility": model.backbone.size_divisibility,
        "opset": opset,
        "traced_size": [height, width],
    }
    paths["metadata"] = write_metadata(output_dir, metadata)
    return paths


class OnnxCondInstPredictor(CondInstInference):
    """CondInst inference with the dense part in ONNX Runtime; outputs equal ``model(inputs)`` up
    to float rounding (tests/export/test_condinst_onnx.py)."""

    def __init__(
        self,
        model: CondInst,
        export_dir,
        *,
        providers: Optional[Sequence[str]] = None,
        threads: Optional[int] = None,
        postprocess_threads: Optional[int] = 1,
    ):
        """
        Args:
            model: the model the graph was exported from, or one built from the same config
                (only its settings and the dynamic mask head's buffers are used).
            export_dir: folder written by :func:`export_condinst_onnx`.
            providers, threads: see :func:`~centermask.export.common.create_session`.
            postprocess_threads: torch CPU threads for decoding, mask head and post-processing.
        """
        export = open_export(
            export_dir, expected_format=FORMAT, providers=providers, threads=threads
        )
        super().__init__(model.eval(), export.dense, postprocess_threads=postprocess_threads)
        self.metadata = export.metadata

    @classmethod
    def from_config(cls, cfg, export_dir, **kwargs) -> "OnnxCondInstPredictor":
        """Build from a config alone: the network weights come from the ONNX file."""
        return cls(build_model(cfg), export_dir, **kwargs)
