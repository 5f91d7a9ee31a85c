"""Drawing CenterMask predictions with detectron2's ``Visualizer``.

Two scores exist per instance: ``scores`` (FCOS's box score, sqrt(class probability x
centerness)) and ``mask_scores`` (box score x predicted mask IoU, what the COCO segm evaluation
ranks by). :func:`filter_by_score` and :func:`draw_predictions` say explicitly which one they use.
"""

from typing import List, Optional

import numpy as np
import torch
from detectron2.data import Metadata
from detectron2.structures import Instances
from detectron2.utils.visualizer import ColorMode, Visualizer

__all__ = ["SCORE_FIELDS", "score_of", "filter_by_score", "draw_predictions"]

# --score choice -> Instances field
SCORE_FIELDS = {"box": "scores", "mask": "mask_scores"}


def score_of(instances: Instances, score: str = "box") -> torch.Tensor:
    """``instances.scores`` for ``score="box"``, ``instances.mask_scores`` for ``"mask"``.

    Models without MaskIoU have no ``mask_scores``; their box score is returned then.
    """
    if score not in SCORE_FIELDS:
        raise ValueError(f"score must be one of {sorted(SCORE_FIELDS)}, got {score!r}")
    field = SCORE_FIELDS[score]
    if instances.has(field):
        return instances.get(field)
    return instances.scores


def filter_by_score(instances: Instances, threshold: float, score: str = "box") -> Instances:
    """The instances whose ``score`` ("box" or "mask", see :func:`score_of`) is >= threshold."""
    if len(instances) == 0:
        return instances
    return instances[score_of(instances, score) >= threshold]


def _labels(instances: Instances, class_names: Optional[List[str]]) -> List[str]:
    labels = []
    has_mask_scores = instances.has("mask_scores")
    for i in range(len(instances)):
        cls = int(instances.pred_classes[i])
        name = class_names[cls] if class_names and cls < len(class_names) else str(cls)
        text = f"{name} {float(instances.scores[i]):.2f}"
        if has_mask_scores:
            text += f" m{float(instances.mask_scores[i]):.2f}"
        labels.append(text)
    return labels


def draw_predictions(
    image_bgr: np.ndarray,
    instances: Instances,
    metadata: Optional[Metadata] = None,
    *,
    color_by_mask_score: bool = False,
    scale: float = 1.0,
) -> np.ndarray:
    """Boxes, masks and "class box-score m mask-score" labels over ``image_bgr``; returns BGR.

    By default colours follow detectron2 (per class when the metadata has ``thing_colors``, else
    random); ``color_by_mask_score`` colours each instance by its ``mask_scores`` on the viridis
    map (dark = low, yellow = high).
    """
    instances = instances.to("cpu")
    visualizer = Visualizer(
        image_bgr[:, :, ::-1], metadata=metadata, scale=scale, instance_mode=ColorMode.IMAGE
    )
    class_names = metadata.get("thing_classes", None) if metadata is not None else None
    masks = instances.pred_masks.numpy() if instances.has("pred_masks") else None
    colors = None
    if color_by_mask_score and len(instances):
        from matplotlib import colormaps

        values = score_of(instances, "mask").clamp(0, 1).numpy()
        colors = [tuple(colormaps["viridis"](float(v))[:3]) for v in values]
    elif class_names and metadata.get("thing_colors", None) and len(instances):
        colors = [
            tuple(c / 255.0 for c in metadata.thing_colors[int(k)]) for k in instances.pred_classes
        ]
    vis = visualizer.overlay_instances(
        boxes=instances.pred_boxes if instances.has("pred_boxes") else None,
        labels=_labels(instances, class_names) if len(instances) else None,
        masks=masks,
        assigned_colors=colors,
        alpha=0.5,
    )
    return vis.get_image()[:, :, ::-1]
