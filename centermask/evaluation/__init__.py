"""Evaluators that rank masks by the MaskIoU-rescored ``mask_scores``, and a semantic-segmentation
evaluator that runs on detectron2 v0.6 with current NumPy."""

from detectron2.evaluation import CityscapesSemSegEvaluator

from .cityscapes_evaluation import CityscapesInstanceEvaluator
from .coco_evaluation import COCOEvaluator, cocoeval_class, instances_to_coco_results
from .sem_seg_evaluation import SemSegEvaluator

__all__ = [
    "COCOEvaluator",
    "CityscapesInstanceEvaluator",
    "CityscapesSemSegEvaluator",
    "SemSegEvaluator",
    "cocoeval_class",
    "instances_to_coco_results",
]
