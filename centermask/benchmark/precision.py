"""TF32 (TensorFloat-32) for float32 matmuls and convolutions on CUDA.

GPUs of compute capability 8.0 and newer (Ampere, Hopper, ...) run float32 convolutions and
matmuls on tensor cores with a 10-bit mantissa when TF32 is allowed: several times faster, with
about 1e-3 relative error per op. Benchmarks turn it on by default on such GPUs (what a user of
float32 inference on them gets from cuDNN's default) and say so; parity checks turn it off.
"""

from contextlib import contextmanager
from typing import Iterator

import torch

__all__ = ["tf32_supported", "set_tf32", "tf32_disabled"]


def tf32_supported(device: torch.device) -> bool:
    """Whether ``device`` is a CUDA device with TF32 tensor cores (capability >= 8.0)."""
    device = torch.device(device)
    if device.type != "cuda" or not torch.cuda.is_available():
        return False
    return torch.cuda.get_device_capability(device)[0] >= 8


def set_tf32(device: torch.device, enabled: bool) -> bool:
    """Allow (or forbid) TF32 for CUDA matmuls and cuDNN convolutions; returns whether TF32 is
    now in use on ``device`` (False off CUDA and on GPUs without TF32, whatever ``enabled``)."""
    torch.backends.cuda.matmul.allow_tf32 = enabled
    torch.backends.cudnn.allow_tf32 = enabled
    return enabled and tf32_supported(device)


@contextmanager
def tf32_disabled() -> Iterator[None]:
    """No TF32 inside the block (float32 parity); the previous settings are restored after."""
    previous = torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32
    torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = False
    try:
        yield
    finally:
        torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = previous
