"""CenterMask-PR masks assembled from the ground-truth boxes and classes, and their quality.

Giving the mask branches the true boxes and classes takes detection out of the comparison: what is
left is how well the local shape, the global saliency, or their product outline each instance.
Per instance this measures the mask IoU with its ground truth and the *leakage*: the fraction of the
predicted mask that lies on other instances of the same class (the failure a class-level saliency
map invites when same-class objects touch). An instance is *crowded* when its box intersects the
box of another instance of its class.
"""

from typing import Dict, List, Optional, Sequence

import numpy as np
import torch
from detectron2.data import DatasetCatalog
from detectron2.data import detection_utils as utils
from detectron2.data import transforms as T
from detectron2.structures import Boxes, BoxMode, Instances, polygons_to_bitmask

from centermask.modeling.centermask_pr.targets import center_targets

__all__ = [
    "crowded_instances",
    "instance_mask_metrics",
    "summarize_instances",
    "masks_for_boxes",
    "gt_instances_of",
    "evaluate_gt_box_masks",
]


def _intersect(a: np.ndarray, b: np.ndarray) -> bool:
    return bool(a[0] < b[2] and b[0] < a[2] and a[1] < b[3] and b[1] < a[3])


def crowded_instances(boxes: np.ndarray, classes: np.ndarray) -> np.ndarray:
    """(K,) bool: the box (K, 4; x0, y0, x1, y1) intersects (with positive area) the box of
    another instance of the same class."""
    crowded = np.zeros(len(boxes), dtype=bool)
    for i in range(len(boxes)):
        for j in range(i + 1, len(boxes)):
            if classes[i] == classes[j] and _intersect(boxes[i], boxes[j]):
                crowded[i] = crowded[j] = True
    return crowded


def instance_mask_metrics(
    pred: np.ndarray, gt: np.ndarray, classes: np.ndarray
) -> Dict[str, np.ndarray]:
    """Mask IoU and leakage of K predicted masks against their ground truth.

    Args:
        pred: (K, H, W) bool, the mask predicted for GT instance k.
        gt: (K, H, W) bool, the GT masks.
        classes: (K,) class of each instance.

    Returns:
        ``iou`` (K,): |pred & gt| / |pred | gt| (1 when both are empty);
        ``leakage`` (K,): |pred & (other same-class GT masks)| / |pred| (0 for an empty mask).
    """
    pred, gt = pred.astype(bool), gt.astype(bool)
    k = len(pred)
    iou, leakage = np.zeros(k), np.zeros(k)
    for i in range(k):
        inter = np.logical_and(pred[i], gt[i]).sum()
        union = np.logical_or(pred[i], gt[i]).sum()
        iou[i] = inter / union if union else 1.0
        others = [j for j in range(k) if j != i and classes[j] == classes[i]]
        area = pred[i].sum()
        if others and area:
            leakage[i] = np.logical_and(pred[i], gt[others].any(axis=0)).sum() / area
    return {"iou": iou, "leakage": leakage}


def _mean(values: np.ndarray) -> Optional[float]:
    return float(values.mean()) if len(values) else None


def summarize_instances(iou, leakage, crowded) -> Dict[str, Optional[float]]:
    """Means over the instances of a data set (None where there are none): IoU of the crowded
    and of the isolated instances, leakage of the crowded ones, and the counts."""
    iou, leakage, crowded = np.asarray(iou), np.asarray(leakage), np.asarray(crowded, dtype=bool)
    return {
        "iou_crowded": _mean(iou[crowded]),
        "iou_isolated": _mean(iou[~crowded]),
        "leakage_crowded": _mean(leakage[crowded]),
        "num_crowded": int(crowded.sum()),
        "num_isolated": int((~crowded).sum()),
    }


@torch.no_grad()
def masks_for_boxes(
    model, image: torch.Tensor, height: int, width: int, boxes: torch.Tensor, classes: torch.Tensor
) -> torch.Tensor:
    """Masks a CenterMask-PR model (heatmap detector, eval mode) assembles for given boxes.

    Args:
        image: (3, h, w) the input image as the model's test mapper gives it.
        height, width: the original image size the masks are returned in.
        boxes: (K, 4) x0, y0, x1, y1 in input (h, w) pixels.
        classes: (K,) long, contiguous class ids.

    Returns:
        (K, height, width) bool masks, in the order of ``boxes``. The shape features are read at
        the boxes' centre cells, as in training.
    """
    detector = model.detector
    if not hasattr(detector, "heads_at"):
        raise ValueError(
            "masks from given boxes need MODEL.CENTERMASK_PR.DETECTOR 'heatmap' (the detector "
            f"reads its heads at the box centres); got {type(detector).__name__}"
        )
    inputs = [{"image": image, "height": height, "width": width}]
    images = model.preprocess_image(inputs)
    features = model.backbone(images.tensor)
    feature = features[detector.in_feature]
    boxes = boxes.to(feature.device, torch.float32)
    cells = center_targets(boxes, detector.stride, tuple(feature.shape[-2:]))[0]
    image_index = torch.zeros(len(boxes), dtype=torch.long, device=feature.device)
    shape = detector.heads_at(feature, image_index, cells[:, 1], cells[:, 0])[2]
    instances = Instances(images.image_sizes[0])
    instances.pred_boxes = Boxes(boxes)
    instances.scores = torch.ones(len(boxes), device=feature.device)
    instances.pred_classes = classes.to(feature.device).long()
    if shape is not None:
        instances.shape_features = shape
    saliency = model.mask_head.saliency_map(features)
    map_size = tuple(features[model.mask_head.saliency_in_feature].shape[-2:])
    result = model.finish([instances], saliency, map_size, inputs)[0]["instances"]
    if len(result) != len(boxes):
        raise ValueError(f"{len(boxes) - len(result)} of the given boxes are empty in the image")
    return result.pred_masks.cpu().bool()


def gt_instances_of(record: dict) -> Dict[str, np.ndarray]:
    """``boxes`` (K, 4) XYXY, ``classes`` (K,) and ``masks`` (K, H, W) bool of a data set record
    (polygon annotations)."""
    height, width = record["height"], record["width"]
    anns = [a for a in record["annotations"] if not a.get("iscrowd", 0)]
    boxes = np.array(
        [BoxMode.convert(a["bbox"], a["bbox_mode"], BoxMode.XYXY_ABS) for a in anns],
        dtype=np.float64,
    ).reshape(-1, 4)
    classes = np.array([a["category_id"] for a in anns], dtype=np.int64)
    masks = (
        np.stack([polygons_to_bitmask(a["segmentation"], height, width) for a in anns])
        if anns
        else np.zeros((0, height, width), dtype=bool)
    )
    return {"boxes": boxes, "classes": classes, "masks": masks}


def evaluate_gt_box_masks(
    cfg, model, dataset_name: str, keep: Sequence[int] = ()
) -> Dict[str, object]:
    """:func:`summarize_instances` of ``model``'s masks from the GT boxes and classes of every
    image of ``dataset_name`` (resized like the test loader: ``INPUT.MIN_SIZE_TEST``,
    ``INPUT.MAX_SIZE_TEST``). The predicted masks of the images at the indices ``keep`` are
    returned under ``"masks"`` ({index: (K, H, W) bool array}) for pictures."""
    resize = T.ResizeShortestEdge(cfg.INPUT.MIN_SIZE_TEST, cfg.INPUT.MAX_SIZE_TEST)
    ious: List[np.ndarray] = []
    leaks: List[np.ndarray] = []
    crowds: List[np.ndarray] = []
    kept = {}
    model.eval()
    for index, record in enumerate(DatasetCatalog.get(dataset_name)):
        gt = gt_instances_of(record)
        if not len(gt["boxes"]):
            continue
        original = utils.read_image(record["file_name"], format=cfg.INPUT.FORMAT)
        transform = resize.get_transform(original)
        image = transform.apply_image(original)
        tensor = torch.as_tensor(np.ascontiguousarray(image.transpose(2, 0, 1)))
        boxes = torch.as_tensor(transform.apply_box(gt["boxes"]), dtype=torch.float32)
        pred = masks_for_boxes(
            model,
            tensor,
            record["height"],
            record["width"],
            boxes,
            torch.as_tensor(gt["classes"]),
        ).numpy()
        metrics = instance_mask_metrics(pred, gt["masks"], gt["classes"])
        ious.append(metrics["iou"])
        leaks.append(metrics["leakage"])
        crowds.append(crowded_instances(gt["boxes"], gt["classes"]))
        if index in keep:
            kept[index] = pred
    summary = summarize_instances(
        np.concatenate(ious) if ious else np.zeros(0),
        np.concatenate(leaks) if leaks else np.zeros(0),
        np.concatenate(crowds) if crowds else np.zeros(0, dtype=bool),
    )
    return {**summary, "masks": kept}
