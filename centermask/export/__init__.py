"""Faster inference and deployment: BN folding, the split inference pipeline, ONNX export."""

from .fold_batchnorm import fold_frozen_batchnorm
from .inference_model import CenterMaskInference, DenseCenterMask
from .optimize import optimize_for_inference

__all__ = [
    "CenterMaskInference",
    "DenseCenterMask",
    "fold_frozen_batchnorm",
    "optimize_for_inference",
]
