"""Export it: ONNX (and TorchScript) graphs of a CenterMask model and an onnxruntime predictor.

* :mod:`.onnx_export`: :func:`~.onnx_export.export_onnx` writes the dense and mask-head graphs;
* :mod:`.onnx_predictor`: :class:`~.onnx_predictor.OnnxCenterMaskPredictor` runs them;
* :mod:`.int8`: static int8 quantization of the exported graphs, calibrated on a data set;
* :mod:`.agreement`: how far the detections of an export agree with the model's.

The float32 optimisation that used to live here is in :mod:`centermask.acceleration`; its names
and old module paths (``centermask.export.optimize`` ...) stay importable from here.
"""

from centermask.acceleration import (
    CenterMaskInference,
    DenseCenterMask,
    fold_frozen_batchnorm,
    optimize_for_inference,
)

__all__ = [
    "CenterMaskInference",
    "DenseCenterMask",
    "fold_frozen_batchnorm",
    "optimize_for_inference",
]
