"""detectron2's semantic-segmentation evaluator, made usable with NumPy >= 1.24 on detectron2 v0.6.

detectron2 v0.6 writes dtypes as ``np.int`` and ``np.float``; NumPy 1.24 removed those aliases, so
its ``SemSegEvaluator`` fails with ``AttributeError`` on the first image (the semantic part of the
panoptic configs' evaluation). Upstream detectron2 no longer uses them. :class:`SemSegEvaluator`
supplies the two aliases only while detectron2's code runs, and changes nothing else.
"""

import contextlib
from typing import Iterator

import numpy as np
from detectron2.evaluation import SemSegEvaluator as _D2SemSegEvaluator

__all__ = ["SemSegEvaluator", "removed_numpy_aliases"]

_REMOVED_ALIASES = {"int": int, "float": float}


@contextlib.contextmanager
def removed_numpy_aliases() -> Iterator[None]:
    """Define ``np.int`` / ``np.float`` (as the builtins they meant) for the duration of the block,
    where this NumPy lacks them; remove them again afterwards."""
    added = [name for name in _REMOVED_ALIASES if name not in vars(np)]
    for name in added:
        setattr(np, name, _REMOVED_ALIASES[name])
    try:
        yield
    finally:
        for name in added:
            delattr(np, name)


class SemSegEvaluator(_D2SemSegEvaluator):
    """:class:`detectron2.evaluation.SemSegEvaluator` (same arguments and metrics: mIoU, fwIoU,
    mACC, pACC, per-class IoU/ACC) that also runs on detectron2 v0.6 with NumPy >= 1.24."""

    def process(self, inputs, outputs):
        with removed_numpy_aliases():
            super().process(inputs, outputs)

    def evaluate(self):
        with removed_numpy_aliases():
            return super().evaluate()
