"""Batched inference from Python: a list of BGR images in, a list of ``Instances`` out.

Same conventions as detectron2's ``DefaultPredictor``: the config's model is built, the weights of
``MODEL.WEIGHTS`` are loaded with the checkpointer, every image is resized with
``ResizeShortestEdge(INPUT.MIN_SIZE_TEST, INPUT.MAX_SIZE_TEST)``, ``INPUT.FORMAT`` decides the
channel order the model gets, and the outputs are in the coordinates of the original images.

Each ``Instances`` (on the CPU) has ``pred_boxes``, ``scores`` (FCOS box score,
sqrt(cls x centerness)), ``pred_classes``, ``pred_masks`` (bool, H x W) and, with MaskIoU on,
``mask_scores`` (box score x predicted mask IoU).
"""

from typing import List, Optional, Sequence

import numpy as np
import torch
from detectron2.data import MetadataCatalog
from detectron2.data import transforms as T
from detectron2.modeling import build_model
from detectron2.structures import Instances

from centermask.checkpoint import CenterMaskCheckpointer

__all__ = ["BatchPredictor"]


class BatchPredictor:
    """Run a CenterMask model on batches of images.

    Args:
        cfg: the config (it is cloned).
        batch_size: images per forward pass; ``__call__`` splits longer lists.

    Example::

        predictor = BatchPredictor(cfg)
        instances = predictor([cv2.imread(p) for p in paths])
    """

    def __init__(self, cfg, batch_size: int = 4):
        self.cfg = cfg.clone()
        self.model = build_model(self.cfg)
        self.model.eval()
        self.metadata = (
            MetadataCatalog.get(cfg.DATASETS.TEST[0]) if len(cfg.DATASETS.TEST) else None
        )
        CenterMaskCheckpointer(self.model).load(cfg.MODEL.WEIGHTS)
        self.aug = T.ResizeShortestEdge(
            [cfg.INPUT.MIN_SIZE_TEST, cfg.INPUT.MIN_SIZE_TEST], cfg.INPUT.MAX_SIZE_TEST
        )
        self.input_format = cfg.INPUT.FORMAT
        if self.input_format not in ("RGB", "BGR"):
            raise ValueError(f"INPUT.FORMAT must be 'RGB' or 'BGR', got {self.input_format!r}")
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        self.batch_size = batch_size

    @staticmethod
    def _check_image(image: np.ndarray, index: int) -> None:
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

    def _model_input(self, image: np.ndarray) -> dict:
        if self.input_format == "RGB":
            image = image[:, :, ::-1]
        height, width = image.shape[:2]
        resized = self.aug.get_transform(image).apply_image(image)
        tensor = torch.as_tensor(np.ascontiguousarray(resized.astype("float32").transpose(2, 0, 1)))
        return {"image": tensor, "height": height, "width": width}

    @torch.no_grad()
    def __call__(
        self, images: Sequence[np.ndarray], batch_size: Optional[int] = None
    ) -> List[Instances]:
        """Args: images: BGR uint8 arrays (H, W, 3), any non-zero sizes; anything else raises a
        ValueError naming the image's index. Returns one ``Instances`` per image, on the CPU, in
        the input order."""
        batch_size = batch_size or self.batch_size
        for index, image in enumerate(images):
            self._check_image(image, index)
        outputs: List[Instances] = []
        for start in range(0, len(images), batch_size):
            inputs = [self._model_input(img) for img in images[start : start + batch_size]]
            outputs.extend(o["instances"].to("cpu") for o in self.model(inputs))
        return outputs

    def predict_one(self, image: np.ndarray) -> Instances:
        """One BGR image; same as ``self([image])[0]``."""
        return self([image])[0]
