"""Cityscapes instance evaluation that scores each mask by its ``mask_scores`` (MaskIoU)."""

from detectron2.evaluation import CityscapesInstanceEvaluator as _D2CityscapesInstanceEvaluator
from detectron2.structures import Instances

__all__ = ["CityscapesInstanceEvaluator"]


def _mask_scores_as_scores(output: dict) -> dict:
    """The same model output, with ``scores`` replaced by ``mask_scores`` when present."""
    instances = output.get("instances")
    if instances is None or not instances.has("mask_scores"):
        return output
    fields = dict(instances.get_fields())
    fields["scores"] = fields["mask_scores"]
    return {**output, "instances": Instances(instances.image_size, **fields)}


class CityscapesInstanceEvaluator(_D2CityscapesInstanceEvaluator):
    """detectron2's Cityscapes instance evaluator, writing ``mask_scores[i]`` as the confidence of
    each instance when the model outputs it (``scores[i]`` otherwise)."""

    def process(self, inputs, outputs):
        super().process(inputs, [_mask_scores_as_scores(o) for o in outputs])
