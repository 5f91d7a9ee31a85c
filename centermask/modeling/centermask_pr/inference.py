"""CenterMask-PR inference: heatmap peaks, box decoding, masks back in the original image."""

from typing import Tuple

import torch
from torch.nn import functional as F

__all__ = ["extract_peaks", "decode_boxes", "interpolation_matrix", "masks_to_image"]


def extract_peaks(
    heatmap: torch.Tensor, k: int
) -> Tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """The ``k`` highest local maxima (3x3 max-pool peaks) of each image's class heatmaps.

    Args:
        heatmap: (N, C, H, W) probabilities.
        k: peaks per image (at most C * H * W).

    Returns:
        scores, classes, ys, xs: (N, k') each (k' = min(k, C * H * W)), best first. Cells that
        are not a local maximum of their class map have score 0.
    """
    num, channels, height, width = heatmap.shape
    pooled = F.max_pool2d(heatmap, kernel_size=3, stride=1, padding=1)
    peaks = heatmap * (pooled == heatmap)
    scores, index = peaks.reshape(num, -1).topk(min(k, channels * height * width), dim=1)
    classes = torch.div(index, height * width, rounding_mode="floor")
    cell = index % (height * width)
    return scores, classes, torch.div(cell, width, rounding_mode="floor"), cell % width


def decode_boxes(
    xs: torch.Tensor, ys: torch.Tensor, offsets: torch.Tensor, sizes: torch.Tensor, stride: int
) -> torch.Tensor:
    """Boxes (K, 4) in input-image pixels from centre cells (K,), sub-cell offsets (K, 2) and
    sizes (K, 2: w, h, in cells; negative sizes count as 0)."""
    centers = torch.stack([xs, ys], dim=1).float() + offsets
    half = sizes.clamp(min=0) / 2
    return torch.cat([centers - half, centers + half], dim=1) * stride


def interpolation_matrix(out_size: int, in_size: int, scale: float, device=None) -> torch.Tensor:
    """(out_size, in_size) bilinear weights: output pixel o reads input coordinate
    (o + 0.5) * scale - 0.5, clamped to the input (``F.interpolate``'s align_corners=False rule
    for an arbitrary scale)."""
    src = ((torch.arange(out_size, device=device, dtype=torch.float32) + 0.5) * scale - 0.5).clamp(
        0, in_size - 1
    )
    low = src.floor().long()
    high = (low + 1).clamp(max=in_size - 1)
    frac = src - low.float()
    weights = torch.zeros((out_size, in_size), device=device)
    rows = torch.arange(out_size, device=device)
    weights.index_put_((rows, low), 1 - frac, accumulate=True)
    weights.index_put_((rows, high), frac, accumulate=True)
    return weights


def masks_to_image(
    mask_probs: torch.Tensor,
    stride: int,
    input_size: Tuple[int, int],
    output_size: Tuple[int, int],
    threshold: float = 0.4,
    chunk: int = 32,
) -> torch.Tensor:
    """Binary masks (K, H_out, W_out) in the original image from masks (K, H, W) on the
    stride-``stride`` grid of the padded network input, whose image occupies ``input_size``
    (h, w) pixels: bilinear resampling, then ``> threshold``."""
    out_h, out_w = output_size
    in_h, in_w = input_size
    device = mask_probs.device
    rows = interpolation_matrix(out_h, mask_probs.shape[1], in_h / (out_h * stride), device)
    cols = interpolation_matrix(out_w, mask_probs.shape[2], in_w / (out_w * stride), device)
    out = torch.zeros((mask_probs.shape[0], out_h, out_w), dtype=torch.bool, device=device)
    for start in range(0, mask_probs.shape[0], chunk):
        part = mask_probs[start : start + chunk].float()
        out[start : start + chunk] = (rows @ part @ cols.T) > threshold
    return out
