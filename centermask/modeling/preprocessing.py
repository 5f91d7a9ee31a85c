"""Input normalisation shared by the meta-architectures and their fast inference versions."""

from typing import Dict, List, Sequence, Union

import torch
from detectron2.structures import ImageList
from torch import nn

__all__ = ["ImageNormalizer", "normalize_and_pad"]


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


class ImageNormalizer(nn.Module):
    """Base of the models and inference pipelines that take detectron2's batched inputs.

    It holds the pixel statistics as non-persistent (3, 1, 1) buffers (the config provides them,
    checkpoints do not), tells the ``device`` they are on, and turns the inputs into padded,
    normalised images (:meth:`preprocess_image`). Subclasses call
    :meth:`register_pixel_normalization` in their ``__init__``.
    """

    size_divisibility: int

    def register_pixel_normalization(
        self,
        pixel_mean: Union[Sequence[float], torch.Tensor],
        pixel_std: Union[Sequence[float], torch.Tensor],
        size_divisibility: int,
    ) -> None:
        """Store the statistics (3 values each, or (3, 1, 1) tensors, copied) and the padding."""
        for name, value in (("pixel_mean", pixel_mean), ("pixel_std", pixel_std)):
            tensor = torch.as_tensor(value, dtype=torch.float32).reshape(-1, 1, 1).clone()
            self.register_buffer(name, tensor, persistent=False)
        self.size_divisibility = size_divisibility

    @property
    def device(self) -> torch.device:
        return self.pixel_mean.device

    def preprocess_image(self, batched_inputs: List[Dict[str, torch.Tensor]]) -> ImageList:
        """Normalised images on :attr:`device`, zero-padded after normalisation to multiples of
        ``size_divisibility`` (see :func:`normalize_and_pad`)."""
        return normalize_and_pad(
            batched_inputs, self.pixel_mean, self.pixel_std, self.size_divisibility
        )
