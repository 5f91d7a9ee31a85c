"""Input normalisation shared by the meta-architectures and their fast inference versions."""

from typing import Dict, List

import torch
from detectron2.structures import ImageList

__all__ = ["normalize_and_pad"]


def normalize_and_pad(
    batched_inputs: List[Dict[str, torch.Tensor]],
    pixel_mean: torch.Tensor,
    pixel_std: torch.Tensor,
    size_divisibility: int,
) -> ImageList:
    """Normalise and batch images as ``GeneralizedRCNN.preprocess_image`` does.

    Args:
        batched_inputs: per image a dict whose ``"image"`` is (3, H_i, W_i).
        pixel_mean, pixel_std: (3, 1, 1), on the device the images are moved to.
        size_divisibility: the padded sides are multiples of it.

    Returns:
        An ImageList (N, 3, H, W) zero-padded *after* normalisation, with the unpadded sizes.
    """
    images = [(x["image"].to(pixel_mean.device) - pixel_mean) / pixel_std for x in batched_inputs]
    return ImageList.from_tensors(images, size_divisibility)
