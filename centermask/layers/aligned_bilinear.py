"""Integer-factor bilinear upsampling whose output grid is aligned with FCOS locations."""

import torch
from torch.nn import functional as F

__all__ = ["aligned_bilinear"]


def aligned_bilinear(tensor: torch.Tensor, factor: int) -> torch.Tensor:
    """Upsample (N, C, h, w) by an integer ``factor`` to (N, C, factor*h, factor*w).

    Output pixel (i, j) is the bilinear sample of the input at ((i - factor//2) / factor,
    (j - factor//2) / factor), with coordinates clamped to the input: with input pixel k at image
    coordinate k*S + S/2, output pixel i then reads the image at i*S/factor, which is how CondInst
    aligns stride-8 mask logits with stride-4 targets. The arithmetic (replicate padding,
    ``interpolate`` with ``align_corners=True``) is CondInst's, so results match it bit for bit.
    """
    if tensor.dim() != 4:
        raise ValueError(f"aligned_bilinear expects (N, C, H, W), got shape {tuple(tensor.shape)}")
    factor = int(factor)
    if factor < 1:
        raise ValueError(f"aligned_bilinear needs an integer factor >= 1, got {factor}")
    if factor == 1:
        return tensor
    h, w = tensor.shape[2:]
    # One extra row/column so that the last input pixel is not the interpolation's end point.
    tensor = F.pad(tensor, pad=(0, 1, 0, 1), mode="replicate")
    tensor = F.interpolate(
        tensor, size=(factor * h + 1, factor * w + 1), mode="bilinear", align_corners=True
    )
    # Shift by half a factor: the first factor//2 output pixels repeat the first input pixel.
    tensor = F.pad(tensor, pad=(factor // 2, 0, factor // 2, 0), mode="replicate")
    return tensor[:, :, : factor * h, : factor * w]
