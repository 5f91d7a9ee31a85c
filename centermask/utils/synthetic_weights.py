"""Deterministic synthetic weights: every state_dict entry is a function of its key and shape.

The same values as the parity references' ``synth_weights.py`` (the tests check the two agree), so
tools can run any config with weights that produce realistic work for NMS and the RoI heads
(scores spread over (0, 1), boxes of 1-3 strides) without a checkpoint file.
"""

import math
import zlib
from typing import Dict, Sequence

import torch
from torch import nn

__all__ = ["synthetic_tensor", "synthetic_state_dict", "load_synthetic_weights"]

_NORM_SCALE_SUFFIXES = (".weight", ".scale")
_RAW_FPN_NORMS = ("mask_branch.refine.", "mask_branch.seg_head.0.")


def synthetic_tensor(key: str, shape: Sequence[int], dtype=torch.float32) -> torch.Tensor:
    """The synthetic value of the state_dict entry ``key`` with ``shape``."""
    shape = tuple(int(s) for s in shape)
    if key.endswith("num_batches_tracked"):
        return torch.zeros(shape, dtype=torch.int64)
    # CondInst's constant buffers: sizes of interest (64 * 2^i, int64) and an iteration counter.
    if key.endswith("mask_head.sizes_of_interest"):
        return torch.tensor([64 * 2**i for i in range(shape[0])], dtype=torch.int64)
    if key.endswith("mask_head._iter"):
        return torch.zeros(shape, dtype=dtype)
    # A per-key generator makes each value independent of the other keys and of their order.
    rng = torch.Generator().manual_seed(zlib.crc32(key.encode("utf-8")))
    if key.endswith("running_var") and key.startswith(_RAW_FPN_NORMS):
        # Norms right after a conv on raw FPN features (~1e2 with these weights): a variance of
        # ~1e4 keeps CondInst's mask features O(1) instead of saturating its mask head.
        value = (torch.rand(shape, generator=rng) + 0.5) * 1e4
    elif key.endswith("cls_logits.bias"):
        value = torch.randn(shape, generator=rng) * 0.5 - 2.5
    elif key.endswith("bbox_pred.bias"):
        value = torch.rand(shape, generator=rng) * 2.0 + 1.0
    elif key.endswith("running_var"):
        value = torch.rand(shape, generator=rng) + 0.5
    elif key.endswith("running_mean"):
        value = torch.randn(shape, generator=rng) * 0.1
    elif len(shape) <= 1 and key.endswith(_NORM_SCALE_SUFFIXES):
        value = torch.rand(shape, generator=rng) + 0.5
    elif key.endswith(".bias"):
        value = torch.randn(shape, generator=rng) * 0.05
    elif len(shape) >= 2:
        value = torch.randn(shape, generator=rng) / math.sqrt(math.prod(shape[1:]))
    else:
        value = torch.randn(shape, generator=rng) * 0.1
    return value.to(dtype)


def synthetic_state_dict(shapes: Dict[str, Sequence[int]]) -> Dict[str, torch.Tensor]:
    """{key: shape} -> {key: synthetic tensor}."""
    return {key: synthetic_tensor(key, shape) for key, shape in shapes.items()}


def load_synthetic_weights(model: nn.Module) -> nn.Module:
    """Fill every parameter and persistent buffer of ``model`` with its synthetic value."""
    shapes = {key: tuple(value.shape) for key, value in model.state_dict().items()}
    model.load_state_dict(synthetic_state_dict(shapes), strict=True)
    return model
