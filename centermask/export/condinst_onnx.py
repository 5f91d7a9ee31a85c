"""ONNX export of CondInst and its ONNX Runtime predictor.

One graph, ``dense.onnx``: backbone + FPN + FCOS head + controller + mask branch
(:class:`~centermask.acceleration.condinst_inference.DenseCondInst`, BatchNorms folded). FCOS
decoding, the dynamic mask head (a few batched matrix products whose weights are per-detection
inputs) and the mask upsampling stay in PyTorch::

    inputs --preprocess--> images --dense.onnx--> FCOS outputs, dynamic params, mask features
      --FCOS decoding + NMS--> detections --dynamic mask head--> masks --postprocess--> Instances
"""

import copy
import json
from pathlib import Path
from typing import Dict, Optional, Sequence

import torch
from detectron2.modeling import build_model

from centermask.acceleration.condinst_inference import (
    CondInstInference,
    DenseCondInst,
    check_condinst_model,
)
from centermask.acceleration.fold_batchnorm import fold_frozen_batchnorm
from centermask.modeling.condinst import CondInst

from .onnx_export import (
    DENSE_ONNX,
    METADATA_JSON,
    _sample_images,
    export_image_graph,
    spatial_axes,
)
from .onnx_predictor import OnnxModule, create_session

__all__ = ["export_condinst_onnx", "OnnxCondInstPredictor"]

_FORMAT = "condinst-onnx-v1"


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
    paths = {"dense": output_dir / DENSE_ONNX, "metadata": output_dir / METADATA_JSON}
    images = _sample_images(model, height, width)
    export_image_graph(dense, images, paths["dense"], spatial_axes(names), opset=opset)
    metadata = {
        "format": _FORMAT,
        "dense_inputs": ["images"],
        "dense_outputs": names,
        "fcos_features": dense.fcos_features,
        "size_divisibility": model.backbone.size_divisibility,
        "opset": opset,
        "traced_size": [height, width],
    }
    paths["metadata"].write_text(json.dumps(metadata, indent=2))
    return paths


class OnnxCondInstPredictor(CondInstInference):
    """CondInst inference with the dense part in ONNX Runtime; outputs equal ``model(inputs)`` up
    to float rounding (tests/test_condinst_export.py)."""

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
            providers, threads: see :func:`~centermask.export.onnx_predictor.create_session`.
            postprocess_threads: torch CPU threads for decoding, mask head and post-processing.
        """
        export_dir = Path(export_dir)
        metadata_path = export_dir / METADATA_JSON
        if not metadata_path.exists():
            raise FileNotFoundError(
                f"{metadata_path} not found: export the model first (tools/export_model.py)"
            )
        metadata = json.loads(metadata_path.read_text())
        if metadata.get("format") != _FORMAT:
            raise ValueError(
                f"{metadata_path} is a {metadata.get('format')!r} export, not a CondInst one"
            )
        dense_path = export_dir / DENSE_ONNX
        dense = OnnxModule(create_session(dense_path, providers, threads), path=dense_path)
        if dense.output_names != metadata["dense_outputs"]:
            raise ValueError(
                f"{dense_path} outputs {dense.output_names}, but {metadata_path} lists "
                f"{metadata['dense_outputs']}"
            )
        super().__init__(model.eval(), dense, postprocess_threads=postprocess_threads)
        self.metadata = metadata

    @classmethod
    def from_config(cls, cfg, export_dir, **kwargs) -> "OnnxCondInstPredictor":
        """Build from a config alone: the network weights come from the ONNX file."""
        return cls(build_model(cfg), export_dir, **kwargs)
