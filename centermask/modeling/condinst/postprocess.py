"""CondInst's mask post-processing: whole-image probabilities to output-size bool masks."""

from typing import Tuple

import torch
from detectron2.modeling.postprocessing import detector_postprocess
from detectron2.structures import Instances
from torch.nn import functional as F

from centermask.layers.aligned_bilinear import aligned_bilinear

__all__ = ["paste_global_masks", "postprocess_detections"]

# Masks upsampled at a time: bounds the padded-size float32 intermediates (~1 GB at 800x1216).
_MASKS_PER_CHUNK = 64


def paste_global_masks(
    probs: torch.Tensor,
    resized_size: Tuple[int, int],
    output_size: Tuple[int, int],
    padded_size: Tuple[int, int],
    threshold: float = 0.5,
) -> torch.Tensor:
    """(n, 1, H_pad/s, W_pad/s) mask probabilities of one image -> (n, H, W) bool masks.

    As CondInst: :func:`aligned_bilinear` by s to the padded input size, crop to the resized
    image, bilinear resize (``align_corners=False``) to the output size, ``> threshold``.

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
    height, width = resized_size
    out = torch.zeros((n, *output_size), dtype=torch.bool, device=probs.device)
    for start in range(0, n, _MASKS_PER_CHUNK):
        chunk = aligned_bilinear(probs[start : start + _MASKS_PER_CHUNK], factor)
        chunk = chunk[:, :, :height, :width]
        chunk = F.interpolate(chunk, size=output_size, mode="bilinear", align_corners=False)
        out[start : start + _MASKS_PER_CHUNK] = chunk[:, 0] > threshold
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
