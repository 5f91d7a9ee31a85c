"""Export a model and run the export: ONNX graphs, int8 quantization, onnxruntime predictors.

* :mod:`.api`: :func:`export_onnx` and :func:`build_onnx_predictor`, for every design;
* :mod:`.common`: graph export and onnxruntime helpers the designs share;
* :mod:`.centermask_onnx`, :mod:`.condinst_onnx`, :mod:`.centermask_pr_onnx`: one per design;
* :mod:`.int8`: static int8 quantization of the exported graphs, calibrated on a data set;
* :mod:`.agreement`: how far the detections of an export agree with the model's.

Faster PyTorch inference (:func:`centermask.optimize_for_inference`) is in
:mod:`centermask.acceleration`.
"""

from .api import build_onnx_predictor, export_onnx

__all__ = ["build_onnx_predictor", "export_onnx"]
