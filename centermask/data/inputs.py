"""Images to model inputs, the way detectron2's ``DefaultPredictor`` makes them.

The one place that turns BGR ``uint8`` images into the list of dicts a model takes: the config's
test resize (``ResizeShortestEdge(INPUT.MIN_SIZE_TEST, INPUT.MAX_SIZE_TEST)``) and its channel
order (``INPUT.FORMAT``). The predictor, the benchmark and the export tools all use it.
"""

from typing import Dict, List, Sequence

import cv2
import numpy as np
import torch
from detectron2.config import CfgNode
from detectron2.data import transforms as T

__all__ = ["check_image", "image_to_model_input", "model_inputs", "synthetic_image", "test_resize"]

_FORMATS = ("BGR", "RGB")


def test_resize(cfg: CfgNode) -> T.ResizeShortestEdge:
    """The config's test-time resize."""
    return T.ResizeShortestEdge([cfg.INPUT.MIN_SIZE_TEST] * 2, cfg.INPUT.MAX_SIZE_TEST)


def check_image(image: np.ndarray, index: int) -> None:
    """Raise a ValueError naming image ``index`` unless it is a non-empty (H, W, 3) uint8 array."""
    if not (isinstance(image, np.ndarray) and image.ndim == 3 and image.shape[2] == 3):
        shape = getattr(image, "shape", type(image))
        raise ValueError(f"image {index}: expected a BGR image of shape (H, W, 3), got {shape}")
    if image.dtype != np.uint8:
        raise ValueError(
            f"image {index}: expected a uint8 BGR image (values 0-255), got dtype {image.dtype}"
            " (convert it, e.g. with np.clip(image, 0, 255).astype(np.uint8))"
        )
    if image.size == 0:
        raise ValueError(f"image {index} is empty: shape {image.shape}")


def image_to_model_input(
    image: np.ndarray, resize: T.Augmentation, input_format: str
) -> Dict[str, object]:
    """One BGR (H, W, 3) image -> ``{"image": (3, h, w) float32 in input_format, "height": H,
    "width": W}``, resized by ``resize`` (the outputs come back in H x W)."""
    if input_format not in _FORMATS:
        raise ValueError(f"INPUT.FORMAT must be one of {_FORMATS}, got {input_format!r}")
    if input_format == "RGB":
        image = image[:, :, ::-1]
    height, width = image.shape[:2]
    resized = resize.get_transform(image).apply_image(image)
    tensor = torch.as_tensor(np.ascontiguousarray(resized.astype("float32").transpose(2, 0, 1)))
    return {"image": tensor, "height": height, "width": width}


def model_inputs(cfg: CfgNode, images: Sequence[np.ndarray]) -> List[Dict[str, object]]:
    """BGR uint8 images -> model inputs with the config's test resize and ``INPUT.FORMAT``."""
    resize = test_resize(cfg)
    inputs = []
    for index, image in enumerate(images):
        check_image(image, index)
        inputs.append(image_to_model_input(image, resize, cfg.INPUT.FORMAT))
    return inputs


def synthetic_image(height: int = 480, width: int = 640, seed: int = 0) -> np.ndarray:
    """A BGR uint8 test image: smooth gradients plus a few filled shapes (deterministic)."""
    rng = np.random.default_rng(seed)
    ys, xs = np.mgrid[0:height, 0:width].astype(np.float32)
    image = np.stack(
        [
            127 + 100 * np.sin(xs / width * np.pi * rng.uniform(1, 3)),
            127 + 100 * np.cos(ys / height * np.pi * rng.uniform(1, 3)),
            np.full_like(xs, rng.uniform(60, 200)),
        ],
        axis=2,
    )
    for _ in range(6):
        colour = tuple(float(c) for c in rng.integers(0, 256, 3))
        cx, cy = int(rng.integers(0, width)), int(rng.integers(0, height))
        rx, ry = int(rng.integers(10, width // 4)), int(rng.integers(10, height // 4))
        if rng.random() < 0.5:
            cv2.ellipse(image, (cx, cy), (rx, ry), float(rng.uniform(0, 180)), 0, 360, colour, -1)
        else:
            cv2.rectangle(image, (cx - rx, cy - ry), (cx + rx, cy + ry), colour, -1)
    return np.clip(image, 0, 255).astype(np.uint8)
