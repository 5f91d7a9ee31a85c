"""The ``dtype`` option of the inference optimisers: names, and designs that run in float32 only."""

from typing import Optional, Union

import torch

__all__ = ["DtypeLike", "parse_dtype", "require_float32"]

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


def require_float32(design: str, dtype: DtypeLike, compile: bool = False) -> None:
    """Raise a ValueError naming the option when ``design`` cannot run as asked."""
    if parse_dtype(dtype) not in (None, torch.float32):
        raise ValueError(f"dtype {dtype!r}: {design} is optimised in float32 only")
    if compile:
        raise ValueError(f"compile=True: {design} is optimised without torch.compile only")
