"""COCO evaluation where mask AP ranks masks by ``mask_scores`` (MaskIoU) and box AP by ``scores``."""

from typing import Dict, List, Optional

from detectron2.evaluation import COCOEvaluator as _D2COCOEvaluator

__all__ = ["COCOEvaluator"]


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

    Same arguments as detectron2's, except that ``use_fast_impl`` defaults to False: the fast
    implementation needs detectron2's compiled ops.
    """

    def __init__(self, dataset_name, tasks=None, distributed=True, output_dir=None, **kwargs):
        kwargs.setdefault("use_fast_impl", False)
        super().__init__(dataset_name, tasks, distributed, output_dir, **kwargs)

    def process(self, inputs, outputs):
        num_before = len(self._predictions)
        super().process(inputs, outputs)
        # The parent appends one prediction per input that has instances or proposals, in order.
        new_predictions = iter(self._predictions[num_before:])
        for output in outputs:
            if "instances" not in output and "proposals" not in output:
                continue
            prediction = next(new_predictions)
            instances = output.get("instances")
            if instances is None or not instances.has("mask_scores"):
                continue
            mask_scores = instances.mask_scores.detach().cpu().tolist()
            for result, mask_score in zip(prediction["instances"], mask_scores):
                result["mask_score"] = mask_score

    def _eval_predictions(self, predictions, img_ids=None):
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
