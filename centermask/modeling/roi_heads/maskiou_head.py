"""MaskIoU head (Mask Scoring R-CNN): predicts the IoU of each predicted mask with its GT, which
rescales the mask confidence at test time (``mask_scores = scores * predicted IoU``)."""

from typing import List, Sequence, Tuple

import numpy as np
import pycocotools.mask as mask_util
import torch
from detectron2.config import configurable
from detectron2.layers import Conv2d, ShapeSpec, cat
from detectron2.structures import BitMasks, Instances, PolygonMasks
from detectron2.utils.registry import Registry
from torch import nn
from torch.nn import functional as F

__all__ = [
    "ROI_MASKIOU_HEAD_REGISTRY",
    "MaskIoUHead",
    "build_maskiou_head",
    "mask_areas_inside_boxes",
    "mask_areas",
    "maskiou_targets",
    "maskiou_loss",
    "maskiou_inference",
]

ROI_MASKIOU_HEAD_REGISTRY = Registry("ROI_MASKIOU_HEAD")
ROI_MASKIOU_HEAD_REGISTRY.__doc__ = """
Registry for MaskIoU heads, built from ``MODEL.ROI_MASKIOU_HEAD.NAME`` as
``obj(cfg, input_shape)`` where ``input_shape`` describes the pooled RoI features.
"""


@ROI_MASKIOU_HEAD_REGISTRY.register()
class MaskIoUHead(nn.Module):
    """``maskiou_fcn1..N`` (3x3 conv + ReLU, the last with stride 2), ``maskiou_fc1``,
    ``maskiou_fc2`` (1024 + ReLU) and a per-class linear ``maskiou``.

    Input: pooled RoI features (M, C, R, R) and the selected mask probability (M, 1, 2R, 2R),
    max-pooled to R x R and concatenated as an extra channel. Output: (M, K) predicted IoUs.
    """

    @configurable
    def __init__(
        self,
        *,
        in_channels: int,
        conv_dims: Sequence[int],
        fc_dims: Sequence[int],
        num_classes: int,
        pooler_resolution: int,
    ):
        """
        Args:
            in_channels: C of the pooled RoI features (the mask probability adds one channel).
            conv_dims: output channels of the convs; the last conv has stride 2.
            fc_dims: output sizes of the fully connected layers before the predictor.
            num_classes: K.
            pooler_resolution: R.
        """
        super().__init__()
        if len(conv_dims) < 1:
            raise ValueError("MaskIoUHead needs MODEL.ROI_MASKIOU_HEAD.NUM_CONV >= 1.")
        self.pooling = nn.MaxPool2d(kernel_size=2, stride=2)
        self.convs = []
        channels = in_channels + 1
        for index, conv_dim in enumerate(conv_dims, start=1):
            stride = 2 if index == len(conv_dims) else 1
            conv = Conv2d(
                channels, conv_dim, kernel_size=3, stride=stride, padding=1, activation=nn.ReLU()
            )
            self.add_module(f"maskiou_fcn{index}", conv)
            self.convs.append(conv)
            channels = conv_dim
        side = (pooler_resolution - 1) // 2 + 1  # after the stride-2 conv
        features = channels * side * side
        self.fcs = []
        for index, fc_dim in enumerate(fc_dims, start=1):
            fc = nn.Linear(features, fc_dim)
            self.add_module(f"maskiou_fc{index}", fc)
            self.fcs.append(fc)
            features = fc_dim
        self.maskiou = nn.Linear(features, num_classes)

        for layer in self.convs + self.fcs:
            nn.init.kaiming_normal_(layer.weight, mode="fan_out", nonlinearity="relu")
            nn.init.constant_(layer.bias, 0)
        nn.init.normal_(self.maskiou.weight, mean=0, std=0.01)
        nn.init.constant_(self.maskiou.bias, 0)

    @classmethod
    def from_config(cls, cfg, input_shape: ShapeSpec):
        head = cfg.MODEL.ROI_MASKIOU_HEAD
        return {
            "in_channels": input_shape.channels,
            "conv_dims": [head.CONV_DIM] * head.NUM_CONV,
            "fc_dims": [1024, 1024],
            "num_classes": cfg.MODEL.ROI_HEADS.NUM_CLASSES,
            "pooler_resolution": cfg.MODEL.ROI_MASK_HEAD.POOLER_RESOLUTION,
        }

    def forward(self, features: torch.Tensor, mask_probs: torch.Tensor) -> torch.Tensor:
        """
        Args:
            features: (M, C, R, R) pooled RoI features.
            mask_probs: (M, 1, 2R, 2R) mask probability of the selected class.

        Returns:
            (M, K) predicted mask IoU per class (raw, not squashed).
        """
        x = torch.cat([features, self.pooling(mask_probs)], dim=1)
        for conv in self.convs:
            x = conv(x)
        x = torch.flatten(x, start_dim=1)
        for fc in self.fcs:
            x = F.relu(fc(x))
        return self.maskiou(x)


def build_maskiou_head(cfg, input_shape: ShapeSpec) -> nn.Module:
    """Build the head named by ``MODEL.ROI_MASKIOU_HEAD.NAME``."""
    return ROI_MASKIOU_HEAD_REGISTRY.get(cfg.MODEL.ROI_MASKIOU_HEAD.NAME)(cfg, input_shape)


def _polygon_area_inside_box(
    polygons: List[np.ndarray], origin: Tuple[float, float], size: Tuple[float, float]
) -> float:
    # Rasterise the polygons shifted to the box origin on an (int(h), int(w)) canvas, the way the
    # original implementation measures it, so that training targets match it exactly.
    height, width = int(size[1]), int(size[0])
    if height <= 0 or width <= 0 or len(polygons) == 0:
        return 0.0
    x0, y0 = origin
    shifted = []
    for polygon in polygons:
        polygon = np.asarray(polygon, dtype=np.float64).copy()
        polygon[0::2] -= x0
        polygon[1::2] -= y0
        shifted.append(polygon)
    rles = mask_util.frPyObjects(shifted, height, width)
    return float(mask_util.area(mask_util.merge(rles)))


def _bitmask_areas_inside_boxes(bitmasks: torch.Tensor, boxes: torch.Tensor) -> torch.Tensor:
    """(M,) float64 count of the pixels of each mask (M, H, W) whose centre lies in
    [x0, x1) x [y0, y1) of its box (M, 4), on the masks' device."""
    height, width = bitmasks.shape[1:]
    boxes = boxes.to(device=bitmasks.device, dtype=torch.float32)
    rows = torch.arange(height, device=bitmasks.device) + 0.5
    cols = torch.arange(width, device=bitmasks.device) + 0.5
    in_rows = (rows >= boxes[:, 1:2]) & (rows < boxes[:, 3:4])
    in_cols = (cols >= boxes[:, 0:1]) & (cols < boxes[:, 2:3])
    # Integer pixel counts, exact in float32 below 2**24 pixels per mask.
    inside = bitmasks.float() * in_rows[:, :, None] * in_cols[:, None, :]
    return inside.flatten(1).sum(dim=1).to(torch.float64)


def mask_areas_inside_boxes(gt_masks, boxes: torch.Tensor) -> torch.Tensor:
    """Area of each GT mask that lies inside the matching box.

    Args:
        gt_masks: PolygonMasks or BitMasks with M instances.
        boxes: (M, 4) XYXY boxes.

    Returns:
        (M,) float64 pixel counts: polygons rasterised with pycocotools on the host (the
        original's measure, matched exactly; the boxes come to the host in one copy), bitmasks
        counted on their device.
    """
    if isinstance(gt_masks, PolygonMasks):
        boxes = boxes.detach()
        # Origins and sizes as the original computes them (float32 differences), in one copy.
        host = torch.cat([boxes[:, :2], boxes[:, 2:] - boxes[:, :2]], dim=1).cpu().tolist()
        areas = [
            _polygon_area_inside_box(p, (b[0], b[1]), (b[2], b[3]))
            for p, b in zip(gt_masks.polygons, host)
        ]
        return torch.tensor(areas, dtype=torch.float64)
    if isinstance(gt_masks, BitMasks):
        return _bitmask_areas_inside_boxes(gt_masks.tensor, boxes.detach())
    raise TypeError(
        f"MaskIoU targets support PolygonMasks and BitMasks GT, got {type(gt_masks).__name__}; "
        "set INPUT.MASK_FORMAT to 'polygon' or 'bitmask'."
    )


def mask_areas(gt_masks) -> torch.Tensor:
    """(M,) float64 full area of each GT mask: shoelace area for polygons, pixel count for
    bitmasks."""
    if isinstance(gt_masks, PolygonMasks):
        return gt_masks.area().to(torch.float64).cpu()
    if isinstance(gt_masks, BitMasks):
        return gt_masks.tensor.flatten(1).sum(dim=1).to(torch.float64)
    raise TypeError(
        f"MaskIoU targets support PolygonMasks and BitMasks GT, got {type(gt_masks).__name__}; "
        "set INPUT.MASK_FORMAT to 'polygon' or 'bitmask'."
    )


@torch.no_grad()
def maskiou_targets(
    instances: List[Instances], mask_logits: torch.Tensor, gt_masks: torch.Tensor
) -> torch.Tensor:
    """IoU between each predicted mask (logit > 0) and its GT, estimated at mask resolution.

    The cropped S x S GT only shows the part of the object inside the proposal box, so the full
    object area at that resolution is estimated as ``sum(gt_S) / ratio`` with
    ``ratio = (GT area inside the box) / (GT area)``.

    Args:
        instances: foreground proposals per image, with ``proposal_boxes`` and ``gt_masks``.
        mask_logits: (M, S, S) logits of the GT class, rows matching the concatenated instances.
        gt_masks: (M, S, S) bool GT masks cropped to the proposal boxes.

    Returns:
        (M,) float64 targets in [0, 1]. They stay in float64 until the loss: a prediction close to
        its target would otherwise square the target's float32 rounding into the loss.
    """
    device = mask_logits.device
    instances = [x for x in instances if len(x) > 0]
    if not instances:
        return mask_logits.new_zeros((0,), dtype=torch.float64)
    inside = cat([mask_areas_inside_boxes(x.gt_masks, x.proposal_boxes.tensor) for x in instances])
    full = cat([mask_areas(x.gt_masks) for x in instances])
    ratio = torch.where(full > 0, inside / full.clamp(min=1e-10), torch.zeros_like(full))
    ratio = ratio.clamp(min=0.0, max=1.0).clamp(min=1e-10).to(device)

    gt_area = gt_masks.flatten(1).sum(dim=1).to(torch.float64)
    full_gt_area = gt_area / ratio
    predicted = (mask_logits > 0).flatten(1)
    overlap = (predicted & gt_masks.flatten(1)).sum(dim=1).to(torch.float64)
    union = (predicted.sum(dim=1).to(torch.float64) + full_gt_area - overlap).clamp(min=1.0)
    return overlap.clamp(min=0.0) / union


def maskiou_loss(
    pred_maskiou: torch.Tensor,
    gt_classes: torch.Tensor,
    targets: torch.Tensor,
    loss_weight: float = 1.0,
) -> torch.Tensor:
    """``loss_weight * sum_{t > 0} 0.5 * (pred[gt_class] - t)^2 / #(t > 0)`` (0 when no t > 0).

    The arithmetic runs in float64, as in the original, and only the result is cast to (at least)
    float32: when predictions approach their targets, rounding the difference's operands to
    float32 first would change the loss by a relative 1e-4 or more.

    Args:
        pred_maskiou: (M, K) predictions.
        gt_classes: (M,) int64.
        targets: (M,) IoU targets (float64 from ``maskiou_targets``).

    Returns:
        A scalar in ``pred_maskiou``'s dtype promoted to at least float32.
    """
    rows = torch.arange(pred_maskiou.shape[0], device=pred_maskiou.device)
    selected = pred_maskiou[rows, gt_classes.to(torch.int64)]
    positive = targets > 0
    num_positive = positive.sum().clamp(min=1).to(torch.float64)
    difference = selected[positive].to(torch.float64) - targets[positive].to(torch.float64)
    # An empty selection still sums to a zero that is connected to the graph.
    loss = loss_weight * (0.5 * difference**2).sum() / num_positive
    return loss.to(torch.promote_types(pred_maskiou.dtype, torch.float32))


def maskiou_inference(pred_maskiou: torch.Tensor, pred_instances: List[Instances]) -> None:
    """Set ``mask_scores = scores * pred_maskiou[pred_class]`` on every instance, in place.

    Args:
        pred_maskiou: (M, K), rows matching the concatenated ``pred_instances``.
        pred_instances: per image, with ``pred_classes`` and (optionally) ``scores``.
    """
    classes = cat([x.pred_classes for x in pred_instances]).to(torch.int64)
    rows = torch.arange(pred_maskiou.shape[0], device=pred_maskiou.device)
    maskiou = pred_maskiou[rows, classes]
    for instances, iou in zip(pred_instances, maskiou.split([len(x) for x in pred_instances])):
        # Boxes given without scores (detectron2 only requires boxes and classes) count as 1.
        instances.mask_scores = instances.scores * iou if instances.has("scores") else iou
