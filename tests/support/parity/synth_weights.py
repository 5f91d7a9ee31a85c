"""Deterministic synthetic weights for parity tests.

Every tensor of a checkpoint is a pure function of its state_dict key and
shape, so two implementations that share a key layout can be fed identical,
non-trivial weights without shipping a weight file.
"""

import math
import zlib

import torch

NORM_SUFFIXES = (".weight", ".scale")


def synth_tensor(key, shape, dtype=torch.float32):
    """Return the synthetic value of one state_dict entry."""
    shape = tuple(shape)
    if key.endswith("num_batches_tracked"):
        return torch.zeros(shape, dtype=torch.int64)
    # Rules added for CondInst (v2). They match only key names that no CenterMask model has,
    # so every CenterMask tensor is unchanged. Both are constant, non-learned buffers.
    if key.endswith("mask_head.sizes_of_interest"):
        # FCOS SIZES_OF_INTEREST plus one level (64, 128, 256, 512, 1024), int64 like the buffer
        return torch.tensor([64 * 2**i for i in range(shape[0])], dtype=torch.int64)
    if key.endswith("mask_head._iter"):
        # iteration counter (only BoxInst reads it)
        return torch.zeros(shape, dtype=dtype)
    g = torch.Generator().manual_seed(zlib.crc32(key.encode("utf-8")))
    if key.endswith("running_var") and key.startswith(
        ("mask_branch.refine.", "mask_branch.seg_head.0.")
    ):
        # BNs right after a conv on raw FPN features (activations ~1e2 with these weights):
        # divide by ~1e2 so that mask features and mask logits are O(1), not saturated
        return ((torch.rand(shape, generator=g) + 0.5) * 1e4).to(dtype)
    if key.endswith("cls_logits.bias"):
        # below the prior-free regime: scores spread over (0, 1) instead of saturating
        t = torch.randn(shape, generator=g) * 0.5 - 2.5
    elif key.endswith("bbox_pred.bias"):
        # boxes of 1-3 strides per side, so NMS and RoI level assignment see real boxes
        t = torch.rand(shape, generator=g) * 2.0 + 1.0
    elif key.endswith("running_var"):
        t = torch.rand(shape, generator=g) + 0.5
    elif key.endswith("running_mean"):
        t = torch.randn(shape, generator=g) * 0.1
    elif len(shape) <= 1 and key.endswith(NORM_SUFFIXES):
        # norm scales, FCOS per-level scales: around 1
        t = torch.rand(shape, generator=g) + 0.5
    elif key.endswith(".bias"):
        t = torch.randn(shape, generator=g) * 0.05
    elif len(shape) >= 2:
        fan_in = math.prod(shape[1:])
        t = torch.randn(shape, generator=g) / math.sqrt(fan_in)
    else:
        t = torch.randn(shape, generator=g) * 0.1
    return t.to(dtype)


def synth_state_dict(key_shapes):
    """key_shapes: {key: shape} -> {key: tensor}."""
    return {k: synth_tensor(k, s) for k, s in key_shapes.items()}
