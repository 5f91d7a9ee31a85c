"""COCO evaluation where mask AP ranks masks by ``mask_scores`` (MaskIoU) and box AP by ``scores``.

The AP computation is pycocotools' ``COCOeval`` (a Python loop), or, when the ``eval`` extra
(``faster-coco-eval``) is installed, its C++ drop-in ``COCOeval_faster``, which gives the same
numbers several times faster. detectron2's own fast implementation needs its compiled ops.
"""

import contextlib
import logging
from typing import Dict, Iterator, List, Optional

import torch
from detectron2.evaluation import COCOEvaluator as _D2COCOEvaluator
from detectron2.evaluation import coco_evaluation as _d2_coco_evaluation
from detectron2.evaluation.coco_evaluation import instances_to_coco_json
from detectron2.structures import Instances
from pycocotools.cocoeval import COCOeval

__all__ = ["COCOEvaluator", "cocoeval_class", "drop_nonfinite", "instances_to_coco_results"]

logger = logging.getLogger(__name__)


def cocoeval_class(use_faster: Optional[bool] = None) -> type:
    """The COCOeval class to use: faster-coco-eval's ``COCOeval_faster`` when it is installed
    (``use_faster=None``) or required (``True``; an ImportError says how to install it),
    pycocotools' ``COCOeval`` otherwise."""
    if use_faster is False:
        return COCOeval
    try:
        from faster_coco_eval import COCOeval_faster
    except ImportError as e:
        if use_faster:
            raise ImportError(
                "faster-coco-eval is not installed: pip install 'centermask[eval]' "
                "(or pip install faster-coco-eval)"
            ) from e
        return COCOeval
    return COCOeval_faster


@contextlib.contextmanager
def _cocoeval_used_by_detectron2(cls: type) -> Iterator[None]:
    """Make detectron2's ``_evaluate_predictions_on_coco`` (which looks the name ``COCOeval`` up
    in its module when it runs, on v0.6 and on upstream main) build ``cls`` during the block."""
    original = _d2_coco_evaluation.COCOeval
    _d2_coco_evaluation.COCOeval = cls
    try:
        yield
    finally:
        _d2_coco_evaluation.COCOeval = original


def _add_mask_scores(results: List[Dict], instances: Instances) -> None:
    """Give each COCO result of ``instances`` its ``mask_score``, when the model has MaskIoU."""
    if instances.has("mask_scores"):
        for result, mask_score in zip(results, instances.mask_scores.detach().cpu().tolist()):
            result["mask_score"] = mask_score


def instances_to_coco_results(
    instances: Instances, image_id: int, id_map: Optional[Dict[int, int]] = None
) -> List[Dict]:
    """COCO results (``bbox`` XYWH, ``score``, RLE ``segmentation``, and ``mask_score`` when the
    model has MaskIoU) of one image's ``instances`` (on the CPU), as detectron2's
    ``COCOEvaluator`` writes them. ``id_map`` is the data set's
    ``thing_dataset_id_to_contiguous_id``; without it, category ids are the class indices."""
    results = instances_to_coco_json(instances, image_id)
    _add_mask_scores(results, instances)
    if id_map:
        dataset_id = {contiguous: original for original, contiguous in id_map.items()}
        for result in results:
            result["category_id"] = dataset_id[result["category_id"]]
    return results


def drop_nonfinite(instances: Instances, image: str) -> Instances:
    """``instances`` without the detections whose box, score or mask score is NaN or infinite,
    with a warning naming ``image`` and how many were dropped (COCO evaluation would otherwise
    rank or crash on them)."""
    if len(instances) == 0:
        return instances
    keep = torch.ones(len(instances), dtype=torch.bool, device=instances.scores.device)
    if instances.has("pred_boxes"):
        keep &= torch.isfinite(instances.pred_boxes.tensor).all(dim=1)
    for name in ("scores", "mask_scores"):
        if instances.has(name):
            keep &= torch.isfinite(instances.get(name))
    dropped = int((~keep).sum())
    if dropped == 0:
        return instances
    logger.warning(
        f"{image}: dropped {dropped} of {len(instances)} detections with a non-finite box or "
        "score before COCO evaluation"
    )
    return instances[keep]


def _image_name(inputs: Dict) -> str:
    return str(inputs.get("file_name", f"image_id={inputs.get('image_id')!r}"))


def _copy_predictions(predictions: List[Dict], score_key: Optional[str] = None) -> List[Dict]:
    """Copies of the per-image predictions whose result dicts can be changed safely (detectron2
    remaps category ids and drops boxes in place). With ``score_key``, each result's ``score``
    becomes its ``score_key`` entry when it has one."""
    copied = []
    for prediction in predictions:
        results = []
        for result in prediction.get("instances", []):
            result = dict(result)
            if score_key is not None and score_key in result:
                result["score"] = result[score_key]
            results.append(result)
        copied.append({**prediction, "instances": results})
    return copied


class COCOEvaluator(_D2COCOEvaluator):
    """detectron2's :class:`~detectron2.evaluation.COCOEvaluator`, plus MaskIoU scores.

    When the model outputs ``mask_scores``, every COCO result also carries ``"mask_score"``, and
    the ``segm`` task ranks masks by it; ``bbox`` (and ``keypoints``) keep the box ``score``.
    Detections with a non-finite box or score are dropped first, with a warning naming the image
    (:func:`drop_nonfinite`).

    Same arguments as detectron2's, except that ``use_fast_impl`` defaults to False (detectron2's
    fast implementation needs its compiled ops), plus ``use_faster_coco_eval``: None (default)
    uses faster-coco-eval when it is installed, True requires it, False uses pycocotools.
    """

    def __init__(
        self,
        dataset_name,
        tasks=None,
        distributed=True,
        output_dir=None,
        *,
        use_faster_coco_eval: Optional[bool] = None,
        **kwargs,
    ):
        kwargs.setdefault("use_fast_impl", False)
        super().__init__(dataset_name, tasks, distributed, output_dir, **kwargs)
        self.cocoeval_impl = cocoeval_class(use_faster_coco_eval)

    def process(self, inputs, outputs):
        outputs = [
            (
                {**o, "instances": drop_nonfinite(o["instances"], _image_name(i))}
                if "instances" in o and o["instances"].has("scores")
                else o
            )
            for i, o in zip(inputs, outputs)
        ]
        num_before = len(self._predictions)
        super().process(inputs, outputs)
        # The parent appends one prediction per input that has instances or proposals, in order.
        new_predictions = iter(self._predictions[num_before:])
        for output in outputs:
            if "instances" not in output and "proposals" not in output:
                continue
            prediction = next(new_predictions)
            if "instances" in output:
                _add_mask_scores(prediction["instances"], output["instances"])

    def _eval_predictions(self, predictions, img_ids=None):
        if self._use_fast_impl:  # detectron2's own COCOeval_opt, chosen explicitly
            return self._eval_with_mask_scores(predictions, img_ids)
        self._logger.info(f"COCO AP computed by {self.cocoeval_impl.__module__}")
        with _cocoeval_used_by_detectron2(self.cocoeval_impl):
            return self._eval_with_mask_scores(predictions, img_ids)

    def _eval_with_mask_scores(self, predictions, img_ids=None):
        results = [r for p in predictions for r in p.get("instances", [])]
        if not self._do_evaluation or not any("mask_score" in r for r in results):
            return super()._eval_predictions(predictions, img_ids=img_ids)

        tasks = set(self._tasks or self._tasks_from_predictions(results))
        box_tasks = tuple(sorted(tasks - {"segm"}))
        saved = self._tasks, self._output_dir
        try:
            if box_tasks:
                self._tasks = box_tasks
                super()._eval_predictions(_copy_predictions(predictions), img_ids=img_ids)
                # The results file (box scores plus "mask_score") has been written once already.
                self._output_dir = None
            if "segm" in tasks:
                self._tasks = ("segm",)
                segm_predictions = _copy_predictions(predictions, score_key="mask_score")
                super()._eval_predictions(segm_predictions, img_ids=img_ids)
        finally:
            self._tasks, self._output_dir = saved
