"""Evaluators that rank masks by the MaskIoU-rescored ``mask_scores``."""

from detectron2.evaluation import CityscapesSemSegEvaluator

from .cityscapes_evaluation import CityscapesInstanceEvaluator
from .coco_evaluation import COCOEvaluator

__all__ = ["COCOEvaluator", "CityscapesInstanceEvaluator", "CityscapesSemSegEvaluator"]
