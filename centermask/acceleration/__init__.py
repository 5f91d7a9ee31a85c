"""Make it fast: float32 inference optimisation with unchanged outputs.

* :mod:`.fold_batchnorm`: FrozenBN folded into the preceding convs;
* :mod:`.fused_modules`: conv+ReLU fusion, the stacked FCOS head, class-selected mask predictor;
* :mod:`.inference_model`: the pipeline split into a dense part and the per-detection part;
* :mod:`.optimize`: :func:`optimize_for_inference`, which applies all of the above.

Exporting (ONNX, int8) lives in :mod:`centermask.export`, measuring in :mod:`centermask.benchmark`.
"""

from .fold_batchnorm import fold_frozen_batchnorm
from .inference_model import CenterMaskInference, DenseCenterMask
from .optimize import optimize_for_inference

__all__ = [
    "CenterMaskInference",
    "DenseCenterMask",
    "fold_frozen_batchnorm",
    "optimize_for_inference",
]
