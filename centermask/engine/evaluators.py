"""Evaluators for a data set, chosen by its ``evaluator_type`` metadata (as in the original).

=======================  ==============================================================
evaluator_type           evaluators
=======================  ==============================================================
``coco``                 centermask ``COCOEvaluator`` (bbox AP on ``scores``, segm AP on
                         ``mask_scores``)
``coco_panoptic_seg``    centermask ``SemSegEvaluator`` + centermask ``COCOEvaluator`` +
                         ``COCOPanopticEvaluator``
``sem_seg``              centermask ``SemSegEvaluator`` (detectron2's, NumPy-2 safe)
``lvis``                 ``LVISEvaluator``
``cityscapes_instance``  centermask Cityscapes instance evaluator (``mask_scores``)
``cityscapes_sem_seg``   Cityscapes sem-seg evaluator
``pascal_voc``           ``PascalVOCDetectionEvaluator``
=======================  ==============================================================
"""

import os
from typing import Optional

from detectron2 import evaluation as d2_evaluation
from detectron2.data import MetadataCatalog
from detectron2.evaluation import DatasetEvaluator, DatasetEvaluators

from centermask.evaluation import (
    CityscapesInstanceEvaluator,
    CityscapesSemSegEvaluator,
    COCOEvaluator,
    SemSegEvaluator,
)

__all__ = ["build_evaluator"]


def build_evaluator(
    cfg, dataset_name: str, output_folder: Optional[str] = None
) -> DatasetEvaluator:
    """The evaluator(s) for ``dataset_name``; results go to ``output_folder``
    (default ``<OUTPUT_DIR>/inference``)."""
    if output_folder is None:
        output_folder = os.path.join(cfg.OUTPUT_DIR, "inference")
    evaluator_type = MetadataCatalog.get(dataset_name).get("evaluator_type", None)
    evaluators = []
    if evaluator_type in ("sem_seg", "coco_panoptic_seg"):
        evaluators.append(SemSegEvaluator(dataset_name, distributed=True, output_dir=output_folder))
    if evaluator_type in ("coco", "coco_panoptic_seg"):
        # use_fast_impl=False: detectron2's fast COCOeval needs its compiled ops.
        evaluators.append(
            COCOEvaluator(dataset_name, output_dir=output_folder, use_fast_impl=False)
        )
    if evaluator_type == "coco_panoptic_seg":
        evaluators.append(d2_evaluation.COCOPanopticEvaluator(dataset_name, output_folder))
    if evaluator_type == "cityscapes_instance":
        evaluators.append(CityscapesInstanceEvaluator(dataset_name))
    if evaluator_type == "cityscapes_sem_seg":
        evaluators.append(CityscapesSemSegEvaluator(dataset_name))
    if evaluator_type == "pascal_voc":
        evaluators.append(d2_evaluation.PascalVOCDetectionEvaluator(dataset_name))
    if evaluator_type == "lvis":
        evaluators.append(d2_evaluation.LVISEvaluator(dataset_name, output_dir=output_folder))
    if not evaluators:
        raise NotImplementedError(
            f"No evaluator for data set {dataset_name!r} with evaluator_type {evaluator_type!r}. "
            "Register it with register_coco_instances (evaluator_type 'coco') or set its "
            "metadata evaluator_type to one of: coco, coco_panoptic_seg, sem_seg, lvis, "
            "cityscapes_instance, cityscapes_sem_seg, pascal_voc."
        )
    return evaluators[0] if len(evaluators) == 1 else DatasetEvaluators(evaluators)
