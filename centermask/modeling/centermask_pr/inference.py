"""CenterMask-PR inference: heatmap peaks, box decoding, masks back in the original image."""

import math
from typing import Callable, List, Tuple

import torch

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


def _interpolation_taps(
    out_size: int, in_size: int, scale: float, device=None
) -> Tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """The two input taps (low, high: (out_size,) long) and the weight of ``high`` (frac:
    (out_size,) float) of each output pixel o, which reads input coordinate (o + 0.5) * scale -
    0.5 clamped to the input (``F.interpolate``'s align_corners=False rule for any scale)."""
    src = ((torch.arange(out_size, device=device, dtype=torch.float32) + 0.5) * scale - 0.5).clamp(
        0, in_size - 1
    )
    low = src.floor().long()
    high = (low + 1).clamp(max=in_size - 1)
    return low, high, src - low.float()


def interpolation_matrix(out_size: int, in_size: int, scale: float, device=None) -> torch.Tensor:
    """(out_size, in_size) bilinear weights of :func:`_interpolation_taps`: row o holds 1 - frac
    at ``low`` and frac at ``high``."""
    low, high, frac = _interpolation_taps(out_size, in_size, scale, device)
    weights = torch.zeros((out_size, in_size), device=device)
    rows = torch.arange(out_size, device=device)
    weights.index_put_((rows, low), 1 - frac, accumulate=True)
    weights.index_put_((rows, high), frac, accumulate=True)
    return weights


def _first_and_end(flags: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor]:
    """Per row of a (K, n) bool tensor, the first and one-past-last index of its True entries
    ((K,) long each; 0 and n for a row without any), computed on the tensor's device."""
    as_int = flags.to(torch.uint8)
    first = as_int.argmax(dim=1)
    end = flags.shape[1] - as_int.flip(1).argmax(dim=1)
    return first, end


def _output_span(
    support: torch.Tensor, taps: Tuple[torch.Tensor, torch.Tensor, torch.Tensor]
) -> Tuple[torch.Tensor, torch.Tensor]:
    """Along one axis, the output pixels whose interpolation weights reach each mask's span of
    nonzero cells: first and end ((K,) long; both 0 where there are none), from the
    support (K, n_in) and the axis's :func:`_interpolation_taps`."""
    low, high, frac = taps
    first, end = _first_and_end(support)
    cells = torch.arange(support.shape[1], device=support.device)
    in_span = (cells >= first[:, None]) & (cells < end[:, None]) & support.any(dim=1)[:, None]
    # An output pixel reads its low tap with weight 1 - frac and its high tap with weight frac.
    hit = (in_span[:, low] & (frac != 1)) | (in_span[:, high] & (frac != 0))
    out_first, out_end = _first_and_end(hit)
    return out_first, torch.where(hit.any(dim=1), out_end, out_first)


def _resample_windows(
    masks: torch.Tensor,
    row_taps: Tuple[torch.Tensor, torch.Tensor, torch.Tensor],
    col_taps: Tuple[torch.Tensor, torch.Tensor, torch.Tensor],
    out_rows: torch.Tensor,
    out_cols: torch.Tensor,
    in_cols: int,
) -> torch.Tensor:
    """Bilinear values (k, h, w) of masks (k, H, W) at output rows ``out_rows`` (k, h) and
    columns ``out_cols`` (k, w): rows first, then columns, two taps each (the products of
    :func:`interpolation_matrix` with only their nonzero terms). The columns' taps lie within
    ``in_cols`` consecutive input columns per mask, the only ones the rows are resampled on."""
    num, height, width = masks.shape
    col_low, col_high, col_frac = (t[out_cols] for t in col_taps)
    first = col_low[:, :1].clamp(max=width - in_cols)
    window = first + torch.arange(in_cols, device=masks.device)
    masks = masks.gather(2, window[:, None, :].expand(num, height, in_cols))
    low, high, frac = (t[out_rows] for t in row_taps)
    size = (num, out_rows.shape[1], in_cols)
    frac = frac[:, :, None]
    by_rows = (
        masks.gather(1, low[:, :, None].expand(size)) * (1 - frac)
        + masks.gather(1, high[:, :, None].expand(size)) * frac
    )
    size = (num, out_rows.shape[1], out_cols.shape[1])
    col_frac = col_frac[:, None, :]
    return (
        by_rows.gather(2, (col_low - first)[:, None, :].expand(size)) * (1 - col_frac)
        + by_rows.gather(2, (col_high - first)[:, None, :].expand(size)) * col_frac
    )


# Elements of one chunk's intermediate tensors: bounds the memory of the batched resampling
# (4 bytes each).
_CHUNK_ELEMENTS = 1 << 24


def _plan_chunks(
    extents: List[Tuple[int, int]], elements: Callable[[int, int], int]
) -> List[Tuple[int, int, int, int]]:
    """Consecutive chunks (start, end, window height, window width) of windows ``extents``
    sorted by area: a chunk's window is its largest extent in each direction, and grows to at
    most twice the area of its first member (plus 1024 pixels, so small masks go together) and
    to at most ``_CHUNK_ELEMENTS`` by ``elements(chunk size, h, w)``."""
    chunks: List[Tuple[int, int, int, int]] = []
    start, win_h, win_w = 0, 0, 0
    for index, (h, w) in enumerate(extents):
        grown_h, grown_w = max(win_h, h), max(win_w, w)
        limit = 2 * extents[start][0] * extents[start][1] + 1024
        if index > start and (
            grown_h * grown_w > limit
            or elements(index + 1 - start, grown_h, grown_w) > _CHUNK_ELEMENTS
        ):
            chunks.append((start, index, win_h, win_w))
            start, grown_h, grown_w = index, h, w
        win_h, win_w = grown_h, grown_w
    chunks.append((start, len(extents), win_h, win_w))
    return chunks


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
    covers its box, a small part of the image); every other pixel stays off, as in a full-image
    resampling (it reads only zeros). The masks are resampled together in chunks of similar
    reach, each chunk on windows of one size: the reaches come to the host in one copy, whatever
    K is, and nothing else does.
    """
    if threshold < 0:
        raise ValueError(f"masks_to_image: the threshold must not be negative, got {threshold}")
    out_h, out_w = output_size
    in_h, in_w = input_size
    num, height, width = mask_probs.shape
    device = mask_probs.device
    out = torch.zeros((num, out_h, out_w), dtype=torch.bool, device=device)
    if num == 0:
        return out
    row_taps = _interpolation_taps(out_h, height, in_h / (out_h * stride), device)
    col_taps = _interpolation_taps(out_w, width, in_w / (out_w * stride), device)
    nonzero = mask_probs != 0
    row_first, row_end = _output_span(nonzero.any(dim=2), row_taps)
    col_first, col_end = _output_span(nonzero.any(dim=1), col_taps)
    extents = torch.stack([row_end - row_first, col_end - col_first], dim=1).clamp(min=1)
    order = (extents[:, 0] * extents[:, 1]).argsort()
    extents = [tuple(e) for e in extents[order].tolist()]

    def in_columns(win_w: int) -> int:
        # The input columns the taps of win_w consecutive output columns span.
        return min(width, math.ceil(win_w * in_w / (out_w * stride)) + 2)

    def elements(count: int, win_h: int, win_w: int) -> int:
        return count * max(height, win_h) * max(in_columns(win_w), win_w)

    for start, end, win_h, win_w in _plan_chunks(extents, elements):
        index = order[start:end]
        # Windows of the chunk's size, shifted to stay in the image. Their pixels outside a
        # mask's reach read only zero cells, so they stay off (the threshold is not negative).
        rows = row_first[index, None].clamp(max=out_h - win_h) + torch.arange(win_h, device=device)
        cols = col_first[index, None].clamp(max=out_w - win_w) + torch.arange(win_w, device=device)
        values = _resample_windows(
            mask_probs[index].float(), row_taps, col_taps, rows, cols, in_columns(win_w)
        )
        out[index[:, None, None], rows[:, :, None], cols[:, None, :]] = values > threshold
    return out


def maskness(mask_probs: torch.Tensor, threshold: float) -> torch.Tensor:
    """(K,) mean probability of each mask's cells above ``threshold`` (0 for a mask with none),
    from masks (K, H, W): how sure the model is of the pixels it keeps (SOLOv2's "maskness")."""
    kept = mask_probs > threshold
    total = (mask_probs * kept).flatten(1).sum(1)
    return total / kept.flatten(1).sum(1).clamp(min=1)
