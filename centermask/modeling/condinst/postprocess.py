"""CondInst's mask post-processing: whole-image probabilities to output-size bool masks."""

from typing import Tuple

import torch
from detectron2.modeling.postprocessing import detector_postprocess
from detectron2.structures import Instances
from torch.nn import functional as F

__all__ = ["paste_global_masks", "postprocess_detections"]

# Masks resampled at a time: bounds the output-size float32 intermediate (~80 MB at 480x640).
_MASKS_PER_CHUNK = 64


def _source_coordinates(out_size: int, crop_size: int, factor: int, device=None) -> torch.Tensor:
    """(out_size,) float64 coordinate, in stride-s mask pixels, that output pixel i reads.

    CondInst upsamples the stride-s map with :func:`aligned_bilinear` (pixel r reads the map at
    max(r - s//2, 0) / s), crops ``crop_size`` pixels and resizes them bilinearly to
    ``out_size`` (``align_corners=False``: pixel i reads u = (i + 0.5) * crop/out - 0.5, clamped
    to [0, crop - 1]). Both steps are linear interpolations and the knots of the first lie on
    integer r, which the second never straddles, so the composition is one linear interpolation
    of the stride-s map at max(u - s//2, 0) / s.
    """
    i = torch.arange(out_size, dtype=torch.float64, device=device)
    u = ((i + 0.5) * (crop_size / out_size) - 0.5).clamp(min=0, max=crop_size - 1)
    return (u - factor // 2).clamp(min=0) / factor


def paste_global_masks(
    probs: torch.Tensor,
    resized_size: Tuple[int, int],
    output_size: Tuple[int, int],
    padded_size: Tuple[int, int],
    threshold: float = 0.5,
) -> torch.Tensor:
    """(n, 1, H_pad/s, W_pad/s) mask probabilities of one image -> (n, H, W) bool masks.

    The result of CondInst's chain (:func:`aligned_bilinear` by s to the padded input size, crop
    to the resized image, bilinear resize with ``align_corners=False`` to the output size,
    ``> threshold``) computed as one bilinear sampling of the stride-s map per output pixel
    (see :func:`_source_coordinates`): the same values up to float rounding, without the
    padded-size intermediate (100 masks to 480x640 from a 608x800 input: 0.84 s instead of
    1.74 s on the shared 2-core test machine).

    Args:
        probs: stride-s probabilities covering the padded batch canvas.
        resized_size: (h, w) of the image in the network input.
        output_size: (H, W) of the result.
        padded_size: (H_pad, W_pad) of the batch tensor.
    """
    n, _, mask_h, mask_w = probs.shape
    factor = padded_size[0] // mask_h
    if factor * mask_h != padded_size[0] or factor * mask_w != padded_size[1]:
        raise ValueError(
            f"Mask probabilities {mask_h}x{mask_w} do not upsample by one integer factor to the "
            f"padded input {padded_size[0]}x{padded_size[1]}"
        )
    out = torch.zeros((n, *output_size), dtype=torch.bool, device=probs.device)
    if n == 0:
        return out
    # Made on the device: a grid made on the host would be copied, waiting for the device.
    ys = _source_coordinates(output_size[0], resized_size[0], factor, probs.device)
    xs = _source_coordinates(output_size[1], resized_size[1], factor, probs.device)
    # grid_sample's normalised coordinates (align_corners=True: -1 and 1 are the edge pixels);
    # one grid for all masks, which go in as channels.
    grid_y = ys / max(mask_h - 1, 1) * 2 - 1
    grid_x = xs / max(mask_w - 1, 1) * 2 - 1
    grid = torch.stack(torch.meshgrid(grid_x, grid_y, indexing="xy"), dim=-1)
    # float32 whatever the probabilities' dtype or autocast say: in fp16 / bf16 the sampling
    # coordinates of a large image would be off by up to a pixel or more.
    grid = grid.to(torch.float32)[None]  # (1, H, W, 2)
    with torch.autocast(probs.device.type, enabled=False):
        for start in range(0, n, _MASKS_PER_CHUNK):
            chunk = probs[start : start + _MASKS_PER_CHUNK, 0][None].float()  # (1, k, h, w)
            sampled = F.grid_sample(
                chunk, grid, mode="bilinear", padding_mode="border", align_corners=True
            )
            out[start : start + _MASKS_PER_CHUNK] = sampled[0] > threshold
    return out


def postprocess_detections(
    detections: Instances,
    height: int,
    width: int,
    padded_size: Tuple[int, int],
    mask_threshold: float = 0.5,
) -> Instances:
    """One image's CondInst detections at the output size.

    Boxes are scaled and clipped and empty boxes dropped (detectron2's ``detector_postprocess``);
    ``pred_global_masks`` become bool ``pred_masks`` (:func:`paste_global_masks`); the raw
    probabilities and dynamic parameters (``top_feat``) are left out.

    Args:
        detections: in padded-input coordinates, with ``pred_global_masks``; its
            ``image_size`` is the image's resized size.
        height, width: output size.
        padded_size: (H_pad, W_pad) of the batch tensor.
    """
    resized_size = detections.image_size
    results = detector_postprocess(detections, height, width)
    results.pred_masks = paste_global_masks(
        results.pred_global_masks, resized_size, (height, width), padded_size, mask_threshold
    )
    results.remove("pred_global_masks")
    results.remove("top_feat")
    return results
