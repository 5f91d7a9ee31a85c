"""Make it fast: inference optimisation with unchanged outputs.

* :mod:`.fold_batchnorm`: FrozenBN folded into the preceding convs;
* :mod:`.fused_modules`: conv+ReLU fusion, the stacked FCOS head, class-selected mask predictor;
* :mod:`.inference_model`: CenterMask's pipeline split into a dense part and the per-detection part;
* :mod:`.condinst_inference`, :mod:`.centermask_pr_inference`: the same for the other designs;
* :mod:`.dtypes`: the ``dtype`` option;
* :mod:`.optimize`: :func:`optimize_for_inference`, which applies the above to any design.

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
