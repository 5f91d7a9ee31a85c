"""The CenterNet-style detector of CenterMask-PR: centre heatmap, offset and size heads on one
stride-4 feature, plus the tower whose output at each centre is the instance's shape feature."""

import math
from typing import Dict, List, Optional, Tuple, Union

import torch
from detectron2.config import configurable
from detectron2.layers import ShapeSpec
from detectron2.structures import Boxes, ImageList, Instances
from torch import nn
from torch.nn import functional as F

from .inference import decode_boxes, extract_peaks
from .losses import center_focal_loss
from .mask_head import MaskQueries, conv_head
from .targets import center_targets, heatmap_targets

__all__ = ["CenterHeatmapDetector"]


def _gather(feature: torch.Tensor, image_index, ys, xs) -> torch.Tensor:
    """(N, C, H, W) feature read at K cells -> (K, C)."""
    return feature[image_index, :, ys, xs]


class CenterHeatmapDetector(nn.Module):
    """Heatmap (C), offset (2) and size (2) heads, and the local-shape tower, on one feature.

    Training returns the centre losses and the GT instances as :class:`MaskQueries` (each with
    the shape feature at its GT centre cell); inference returns per image the top-k peaks as
    ``Instances`` with ``pred_boxes`` (input pixels), ``scores``, ``pred_classes`` and
    ``shape_features``.
    """

    @configurable
    def __init__(
        self,
        *,
        in_feature: str,
        in_channels: int,
        stride: int,
        num_classes: int,
        head_channels: int = 64,
        with_shape: bool = True,
        focal_alpha: float = 2.0,
        focal_beta: float = 4.0,
        min_overlap: float = 0.7,
        heatmap_loss_weight: float = 1.0,
        offset_loss_weight: float = 1.0,
        size_loss_weight: float = 0.1,
        topk: int = 100,
        score_thresh: float = 0.05,
        heatmap_prior: float = 0.1,
    ):
        """
        Args:
            in_feature, in_channels, stride: the backbone feature the heads run on.
            num_classes: foreground classes (heatmap channels).
            head_channels: hidden channels of every head.
            with_shape: build the local-shape tower (False for the global-only model).
            focal_alpha, focal_beta: CenterNet focal-loss exponents.
            min_overlap: IoU the Gaussian radius is chosen for.
            heatmap_loss_weight, offset_loss_weight, size_loss_weight: loss weights.
            topk: peaks kept per image; score_thresh: minimum peak score kept.
            heatmap_prior: initial heatmap probability (CenterNet: 0.1, bias -2.19).
        """
        super().__init__()
        self.in_feature = in_feature
        self.in_features = [in_feature]
        self.stride = stride
        self.num_classes = num_classes
        self.shape_channels = head_channels
        self.focal_alpha, self.focal_beta = focal_alpha, focal_beta
        self.min_overlap = min_overlap
        self.weights = {
            "loss_heatmap": heatmap_loss_weight,
            "loss_offset": offset_loss_weight,
            "loss_size": size_loss_weight,
        }
        self.topk, self.score_thresh = topk, score_thresh
        prior_bias = -math.log((1 - heatmap_prior) / heatmap_prior)
        self.heatmap_head = conv_head(in_channels, head_channels, num_classes, bias=prior_bias)
        self.offset_head = conv_head(in_channels, head_channels, 2)
        self.size_head = conv_head(in_channels, head_channels, 2)
        self.shape_tower: Optional[nn.Module] = None
        if with_shape:
            self.shape_tower = nn.Sequential(
                nn.Conv2d(in_channels, head_channels, 3, padding=1), nn.ReLU(inplace=True)
            )

    @classmethod
    def from_config(cls, cfg, input_shape: Dict[str, ShapeSpec]):
        pr = cfg.MODEL.CENTERMASK_PR
        name = pr.IN_FEATURE
        if name not in input_shape:
            raise ValueError(
                f"MODEL.CENTERMASK_PR.IN_FEATURE is {name!r}, but the backbone outputs only "
                f"{sorted(input_shape)} (a stride-4 level such as 'p2' needs the stride-4 stage "
                "in MODEL.FPN.IN_FEATURES and the backbone's OUT_FEATURES)"
            )
        return {
            "in_feature": name,
            "in_channels": input_shape[name].channels,
            "stride": input_shape[name].stride,
            "num_classes": cfg.MODEL.FCOS.NUM_CLASSES,
            "head_channels": pr.HEAD_CHANNELS,
            "with_shape": pr.MASK_MODE != "global",
            "focal_alpha": pr.FOCAL_ALPHA,
            "focal_beta": pr.FOCAL_BETA,
            "min_overlap": pr.GAUSSIAN_MIN_OVERLAP,
            "heatmap_loss_weight": pr.HEATMAP_LOSS_WEIGHT,
            "offset_loss_weight": pr.OFFSET_LOSS_WEIGHT,
            "size_loss_weight": pr.SIZE_LOSS_WEIGHT,
            "topk": pr.TOPK_TEST,
            "score_thresh": pr.SCORE_THRESH_TEST,
        }

    def forward(
        self,
        images: ImageList,
        features: Dict[str, torch.Tensor],
        gt_instances: Optional[List[Instances]] = None,
    ) -> Union[Tuple[MaskQueries, Dict[str, torch.Tensor]], List[Instances]]:
        heatmap, offsets, sizes, shape = self.head_outputs(features[self.in_feature])
        if self.training:
            if gt_instances is None:
                raise ValueError("CenterHeatmapDetector needs gt_instances in training mode")
            return self.losses(heatmap, offsets, sizes, shape, gt_instances)
        return self.detect(heatmap, offsets, sizes, shape, images.image_sizes)

    def head_outputs(
        self, feature: torch.Tensor
    ) -> Tuple[torch.Tensor, torch.Tensor, torch.Tensor, Optional[torch.Tensor]]:
        """(N, C_in, H, W) -> heatmap logits (N, num_classes, H, W), offsets (N, 2, H, W), sizes
        (N, 2, H, W) and the shape tower's features (N, head_channels, H, W) or None."""
        shape = self.shape_tower(feature) if self.shape_tower is not None else None
        return self.heatmap_head(feature), self.offset_head(feature), self.size_head(feature), shape

    def losses(self, heatmap, offsets, sizes, shape, gt_instances: List[Instances]):
        """Centre losses (``loss_heatmap``, ``loss_offset``, ``loss_size``) and the mask queries
        (one per GT instance, read at its centre cell)."""
        map_size = tuple(heatmap.shape[-2:])
        heat_targets, cells, offset_targets, size_targets, image_index = [], [], [], [], []
        for index, inst in enumerate(gt_instances):
            boxes = inst.gt_boxes.tensor
            heat_targets.append(
                heatmap_targets(
                    boxes,
                    inst.gt_classes,
                    self.num_classes,
                    self.stride,
                    map_size,
                    self.min_overlap,
                )
            )
            cell, offset, size = center_targets(boxes, self.stride, map_size)
            cells.append(cell)
            offset_targets.append(offset)
            size_targets.append(size)
            image_index.append(torch.full((len(inst),), index, device=boxes.device))
        cells = torch.cat(cells)
        image_index = torch.cat(image_index).long()
        xs, ys = cells[:, 0], cells[:, 1]
        losses = {
            "loss_heatmap": center_focal_loss(
                heatmap, torch.stack(heat_targets), self.focal_alpha, self.focal_beta
            )
        }
        if cells.shape[0] > 0:
            pred_offsets = _gather(offsets, image_index, ys, xs)
            pred_sizes = _gather(sizes, image_index, ys, xs)
            losses["loss_offset"] = F.l1_loss(pred_offsets.float(), torch.cat(offset_targets))
            losses["loss_size"] = F.l1_loss(pred_sizes.float(), torch.cat(size_targets))
        else:  # keep every parameter in the graph (distributed training needs it)
            losses["loss_offset"] = offsets.sum() * 0
            losses["loss_size"] = sizes.sum() * 0
        losses = {k: v * self.weights[k] for k, v in losses.items()}
        queries = MaskQueries(
            image_index=image_index,
            boxes=torch.cat([inst.gt_boxes.tensor for inst in gt_instances]),
            classes=torch.cat([inst.gt_classes for inst in gt_instances]).long(),
            shape_features=_gather(shape, image_index, ys, xs) if shape is not None else None,
            gt_index=torch.arange(cells.shape[0], device=cells.device),
        )
        return queries, losses

    def detect(self, heatmap, offsets, sizes, shape, image_sizes) -> List[Instances]:
        """Top-k peaks per image above ``score_thresh``, decoded to boxes in input pixels."""
        scores, classes, ys, xs = extract_peaks(heatmap.sigmoid(), self.topk)
        results = []
        for index, image_size in enumerate(image_sizes):
            keep = scores[index] > self.score_thresh
            y, x = ys[index][keep], xs[index][keep]
            image_index = torch.full_like(y, index)
            instances = Instances(image_size)
            instances.pred_boxes = Boxes(
                decode_boxes(
                    x,
                    y,
                    _gather(offsets, image_index, y, x).float(),
                    _gather(sizes, image_index, y, x).float(),
                    self.stride,
                )
            )
            instances.scores = scores[index][keep]
            instances.pred_classes = classes[index][keep]
            if shape is not None:
                instances.shape_features = _gather(shape, image_index, y, x)
            results.append(instances)
        return results
