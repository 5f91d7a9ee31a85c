"""The ``dtype`` and ``compile`` options of the inference optimisers, shared by every design."""

from contextlib import nullcontext
from typing import Optional, Union

import torch
from torch import nn

__all__ = ["DtypeLike", "parse_dtype", "autocast_to", "compile_dense"]

DtypeLike = Union[None, str, torch.dtype]

_DTYPES = {
    "fp32": torch.float32,
    "float32": torch.float32,
    "fp16": torch.float16,
    "float16": torch.float16,
    "half": torch.float16,
    "bf16": torch.bfloat16,
    "bfloat16": torch.bfloat16,
}


def parse_dtype(dtype: DtypeLike) -> Optional[torch.dtype]:
    """None, a torch dtype or one of "fp32", "fp16", "bf16" (and their long names)."""
    if dtype is None or isinstance(dtype, torch.dtype):
        return dtype
    if dtype.lower() not in _DTYPES:
        raise ValueError(f"unknown dtype {dtype!r}; use one of fp32, fp16, bf16")
    return _DTYPES[dtype.lower()]


def autocast_to(device: torch.device, dtype: Optional[torch.dtype]):
    """A context autocasting to ``dtype`` on ``device``'s type (nothing for None / float32).

    The optimisers run only the dense part (backbone, FPN, dense heads) inside it and cast its
    outputs back to float32: decoding, NMS, mask assembly and pasting compare scores and
    coordinates, where 16-bit rounding would change which detections survive.
    """
    if dtype is None or dtype == torch.float32:
        return nullcontext()
    return torch.autocast(device.type, dtype=dtype)


def compile_dense(dense: nn.Module) -> nn.Module:
    """``torch.compile`` the dense part with dynamic shapes and frozen weights.

    Dynamic shapes: inference pads every image to a multiple of the backbone's
    ``size_divisibility`` only, so COCO evaluation feeds dozens of different (H, W). With static
    shapes each new size recompiles, and past dynamo's recompile limit (8) the module silently
    falls back to eager after minutes of compiling. With ``dynamic=True`` a graph symbolic in
    batch, height and width serves every later size. Measured on a 2-core CPU with a tiny
    CenterMask-PR (inputs 64x96, 96x128, 128x160, then 64x96 again; seconds per call):
    static 101 / 19 / 19 / 0.01 (one compile per size), dynamic 101 / 40 / 0.07 / 0.03 (a second
    compile generalises the first graph's guards, then no more). Freezing lets inductor treat the
    weights as constants (conv weight prepacking and conv + bias + ReLU fusion on the CPU).
    """
    return torch.compile(dense, dynamic=True, options={"freezing": True})
