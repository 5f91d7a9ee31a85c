"""CenterMask-PR inference: heatmap peaks, box decoding, masks back in the original image."""

from typing import Tuple

import torch
from torch.nn import functional as F

__all__ = [
    "extract_peaks",
    "decode_boxes",
    "interpolation_matrix",
    "masks_to_image",
    "maskness",
]


def _max3x3(x: torch.Tensor) -> torch.Tensor:
    """3x3 maximum filter of (..., H, W) over the cells inside the map (``F.max_pool2d(x, 3, 1,
    1)``): two 3-wide passes, several times faster than max_pool2d on a contiguous CPU map."""
    rows = x.clone()
    rows[..., 1:] = torch.maximum(x[..., 1:], x[..., :-1])
    rows[..., :-1] = torch.maximum(rows[..., :-1], x[..., 1:])
    out = rows.clone()
    out[..., 1:, :] = torch.maximum(rows[..., 1:, :], rows[..., :-1, :])
    out[..., :-1, :] = torch.maximum(out[..., :-1, :], rows[..., 1:, :])
    return out


def extract_peaks(
    heatmap: torch.Tensor, k: int, min_score: float = 0.0
) -> Tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """Per image, the ``k`` highest local maxima (3x3 max-pool peaks) of the class heatmaps that
    score above ``min_score``.

    Args:
        heatmap: (N, C, H, W) probabilities.
        k: peaks per image at most.
        min_score: peaks must score more than this.

    Returns:
        image_index, scores, classes, ys, xs: (P,) each, P <= N * k; the peaks of image 0 best
        first, then those of image 1, and so on.
    """
    num, _, height, width = heatmap.shape
    peaks = (heatmap * (_max3x3(heatmap) == heatmap)).reshape(num, -1)
    picked = []
    for image in range(num):
        # Top-k among the few cells above the threshold, not the whole C x H x W map: several
        # times faster on the CPU for a trained model (and never slower).
        candidates = (peaks[image] > min_score).nonzero().squeeze(1)
        scores, order = peaks[image, candidates].topk(min(k, candidates.numel()))
        picked.append((torch.full_like(order, image), scores, candidates[order]))
    image_index, scores, index = (torch.cat(parts) for parts in zip(*picked))
    classes = torch.div(index, height * width, rounding_mode="floor")
    cell = index % (height * width)
    return image_index, scores, classes, torch.div(cell, width, rounding_mode="floor"), cell % width


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


def _span(flags: torch.Tensor) -> Tuple[int, int]:
    """First and one-past-last index of the True entries of a 1-D bool tensor (one at least)."""
    where = flags.nonzero()
    return int(where[0]), int(where[-1]) + 1


def masks_to_image(
    mask_probs: torch.Tensor,
    stride: int,
    input_size: Tuple[int, int],
    output_size: Tuple[int, int],
    threshold: float = 0.4,
) -> torch.Tensor:
    """Binary masks (K, H_out, W_out) in the original image from masks (K, H, W) on the
    stride-``stride`` grid of the padded network input, whose image occupies ``input_size``
    (h, w) pixels: bilinear resampling, then ``> threshold``.

    Each mask is resampled only over the output pixels its nonzero cells reach (an instance
    covers its box, a small part of the image); every other pixel reads only zeros and stays
    off, as it would in a full-image resampling.
    """
    out_h, out_w = output_size
    in_h, in_w = input_size
    device = mask_probs.device
    rows = interpolation_matrix(out_h, mask_probs.shape[1], in_h / (out_h * stride), device)
    cols = interpolation_matrix(out_w, mask_probs.shape[2], in_w / (out_w * stride), device)
    out = torch.zeros((mask_probs.shape[0], out_h, out_w), dtype=torch.bool, device=device)
    nonzero = mask_probs != 0
    row_support = nonzero.any(dim=2)
    col_support = nonzero.any(dim=1)
    for index in row_support.any(dim=1).nonzero().squeeze(1).tolist():
        r0, r1 = _span(row_support[index])
        c0, c1 = _span(col_support[index])
        # The output rows / columns with a nonzero weight on those cells.
        o0, o1 = _span((rows[:, r0:r1] != 0).any(dim=1))
        p0, p1 = _span((cols[:, c0:c1] != 0).any(dim=1))
        part = mask_probs[index, r0:r1, c0:c1].float()
        resampled = rows[o0:o1, r0:r1] @ part @ cols[p0:p1, c0:c1].T
        out[index, o0:o1, p0:p1] = resampled > threshold
    return out


def maskness(mask_probs: torch.Tensor, threshold: float) -> torch.Tensor:
    """(K,) mean probability of each mask's cells above ``threshold`` (0 for a mask with none),
    from masks (K, H, W): how sure the model is of the pixels it keeps (SOLOv2's "maskness")."""
    kept = mask_probs > threshold
    total = (mask_probs * kept).flatten(1).sum(1)
    return total / kept.flatten(1).sum(1).clamp(min=1)
