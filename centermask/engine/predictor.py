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
from detectron2.config import CfgNode
from detectron2.data import MetadataCatalog
from detectron2.modeling import build_model
from detectron2.structures import Instances
from torch import nn

from centermask.checkpoint import CenterMaskCheckpointer
from centermask.data.inputs import check_image, image_to_model_input, test_resize
from centermask.utils.synthetic_weights import load_synthetic_weights

__all__ = ["BatchPredictor", "build_inference_model"]


def build_inference_model(cfg: CfgNode, weights: Optional[str] = None) -> nn.Module:
    """The model of ``cfg`` in eval mode, with the checkpoint ``weights`` (a path, URL or
    ``centermask://`` name) or, when ``weights`` is None, deterministic synthetic weights (for
    measuring speed and checking exports without a checkpoint)."""
    model = build_model(cfg)
    if weights is None:
        load_synthetic_weights(model)
    else:
        CenterMaskCheckpointer(model).load(weights)
    return model.eval()


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
        self.input_format = cfg.INPUT.FORMAT
        if self.input_format not in ("RGB", "BGR"):
            raise ValueError(f"INPUT.FORMAT must be 'RGB' or 'BGR', got {self.input_format!r}")
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        self.batch_size = batch_size
        self.model = build_inference_model(self.cfg, cfg.MODEL.WEIGHTS)
        self.metadata = (
            MetadataCatalog.get(cfg.DATASETS.TEST[0]) if len(cfg.DATASETS.TEST) else None
        )
        self.resize = test_resize(cfg)

    @torch.no_grad()
    def __call__(
        self, images: Sequence[np.ndarray], batch_size: Optional[int] = None
    ) -> List[Instances]:
        """Args: images: BGR uint8 arrays (H, W, 3), any non-zero sizes; anything else raises a
        ValueError naming the image's index. Returns one ``Instances`` per image, on the CPU, in
        the input order."""
        batch_size = batch_size or self.batch_size
        for index, image in enumerate(images):
            check_image(image, index)
        outputs: List[Instances] = []
        for start in range(0, len(images), batch_size):
            inputs = [
                image_to_model_input(image, self.resize, self.input_format)
                for image in images[start : start + batch_size]
            ]
            outputs.extend(o["instances"].to("cpu") for o in self.model(inputs))
        return outputs

    def predict_one(self, image: np.ndarray) -> Instances:
        """One BGR image; same as ``self([image])[0]``."""
        return self([image])[0]
