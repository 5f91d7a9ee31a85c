"""Training augmentation of ``INPUT.AUGMENTATION``: detectron2's (resize the shortest edge, flip,
optional crop) or CenterNet's fixed-size one (random scale, crop to a square, flip, colour)."""

from typing import List

from detectron2.data import detection_utils as utils
from detectron2.data import transforms as T

__all__ = ["AUGMENTATIONS", "build_train_augmentation"]

AUGMENTATIONS = ("resize_shortest_edge", "scale_crop_color")


def build_train_augmentation(cfg) -> List[T.Augmentation]:
    """The training augmentations ``INPUT.AUGMENTATION`` names.

    "resize_shortest_edge": detectron2's (``INPUT.MIN_SIZE_TRAIN`` ..., ``RANDOM_FLIP``; the
    ``INPUT.CROP`` crop is added by the mapper). "scale_crop_color": the image is resized to fit
    a square of ``INPUT.FIXED_SIZE`` x a random factor in ``INPUT.SCALE_RANGE`` (aspect kept),
    a random ``FIXED_SIZE`` square is cropped from it (padded at the right and bottom when
    smaller), flipped as ``RANDOM_FLIP`` says, and its brightness and contrast scaled by random
    factors in 1 -/+ ``INPUT.COLOR_JITTER`` (0: none), so every training input is FIXED_SIZE^2.
    """
    name = cfg.INPUT.AUGMENTATION
    if name == "resize_shortest_edge":
        return utils.build_augmentation(cfg, is_train=True)
    if name != "scale_crop_color":
        raise ValueError(f"INPUT.AUGMENTATION must be one of {AUGMENTATIONS}, got {name!r}")
    size = int(cfg.INPUT.FIXED_SIZE)
    low, high = (float(s) for s in cfg.INPUT.SCALE_RANGE)
    if size <= 0 or not 0 < low <= high:
        raise ValueError(
            f"INPUT.FIXED_SIZE={size} must be > 0 and INPUT.SCALE_RANGE={(low, high)} a range "
            "0 < low <= high"
        )
    augs: List[T.Augmentation] = [
        T.ResizeScale(low, high, size, size),
        T.FixedSizeCrop((size, size), pad=True),
    ]
    if cfg.INPUT.RANDOM_FLIP != "none":
        augs.append(
            T.RandomFlip(
                horizontal=cfg.INPUT.RANDOM_FLIP == "horizontal",
                vertical=cfg.INPUT.RANDOM_FLIP == "vertical",
            )
        )
    jitter = float(cfg.INPUT.COLOR_JITTER)
    if jitter > 0:
        augs += [
            T.RandomBrightness(1 - jitter, 1 + jitter),
            T.RandomContrast(1 - jitter, 1 + jitter),
        ]
    return augs
