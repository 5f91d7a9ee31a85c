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


def _patches_at(feature: torch.Tensor, image_index, ys, xs) -> torch.Tensor:
    """The 3x3 neighbourhoods (zero outside the map) of K cells of an (N, C, H, W) feature, as
    (K, C * 9) rows laid out like a 3x3 conv weight flattened to (out, C * 9)."""
    padded = F.pad(feature, (1, 1, 1, 1))
    steps = torch.arange(3, device=feature.device)
    rows = (ys[:, None] + steps)[:, :, None]
    cols = (xs[:, None] + steps)[:, None, :]
    patches = padded[image_index[:, None, None], :, rows, cols]  # (K, 3, 3, C)
    return patches.permute(0, 3, 1, 2).reshape(ys.shape[0], feature.shape[1] * 9)


def _linear_as(conv: nn.Conv2d, inputs: torch.Tensor) -> torch.Tensor:
    """``conv`` (3x3 on patch rows or 1x1 on vectors) applied to (K, C_in * k * k) rows."""
    return F.linear(inputs, conv.weight.reshape(conv.out_channels, -1), conv.bias)


class CenterHeatmapDetector(nn.Module):
    """Heatmap (C), offset (2) and size (2) heads, and the local-shape tower, on one feature.

    Only the heatmap head runs on the whole map; the others are evaluated at the cells they are
    read at (:meth:`heads_at`). Training returns the centre losses and the GT instances as
    :class:`MaskQueries` (each with the shape feature at its GT centre cell); inference returns
    per image the top-k peaks as ``Instances`` with ``pred_boxes`` (input pixels), ``scores``,
    ``pred_classes`` and ``shape_features``.
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
        feature = features[self.in_feature]
        heatmap = self.heatmap_head(feature)
        if self.training:
            if gt_instances is None:
                raise ValueError("CenterHeatmapDetector needs gt_instances in training mode")
            return self.losses(heatmap, feature, gt_instances)
        return self.detect(heatmap, feature, images.image_sizes)

    def heads_at(
        self, feature: torch.Tensor, image_index: torch.Tensor, ys: torch.Tensor, xs: torch.Tensor
    ) -> Tuple[torch.Tensor, torch.Tensor, Optional[torch.Tensor]]:
        """Offsets (K, 2), sizes (K, 2) and shape features (K, head_channels) or None at K cells
        (``image_index``, ``ys``, ``xs``: (K,) long) of the (N, C_in, H, W) head input.

        Only the heatmap is needed at every cell; these heads are read at centres alone (GT
        centres in training, peaks at inference), so their 3x3 convs run on those cells'
        neighbourhoods instead of the whole stride-4 map: the same values (up to float
        summation order) for a fraction of the work.
        """
        patches = _patches_at(feature, image_index, ys, xs)
        outputs = []
        for head in (self.offset_head, self.size_head):
            hidden = F.relu(_linear_as(head[0], patches))
            outputs.append(_linear_as(head[-1], hidden))
        shape = None
        if self.shape_tower is not None:
            shape = F.relu(_linear_as(self.shape_tower[0], patches))
        return outputs[0], outputs[1], shape

    def losses(self, heatmap, feature, gt_instances: List[Instances]):
        """Centre losses (``loss_heatmap``, ``loss_offset``, ``loss_size``) and the mask queries
        (one per GT instance, read at its centre cell), from the heatmap logits (N, C, H, W) and
        the head input (N, C_in, H, W)."""
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
        pred_offsets, pred_sizes, shape = self.heads_at(feature, image_index, ys, xs)
        if cells.shape[0] > 0:
            losses["loss_offset"] = F.l1_loss(pred_offsets.float(), torch.cat(offset_targets))
            losses["loss_size"] = F.l1_loss(pred_sizes.float(), torch.cat(size_targets))
        else:  # empty, but keeps every parameter in the graph (distributed training needs it)
            losses["loss_offset"] = pred_offsets.sum() * 0
            losses["loss_size"] = pred_sizes.sum() * 0
        losses = {k: v * self.weights[k] for k, v in losses.items()}
        queries = MaskQueries(
            image_index=image_index,
            boxes=torch.cat([inst.gt_boxes.tensor for inst in gt_instances]),
            classes=torch.cat([inst.gt_classes for inst in gt_instances]).long(),
            shape_features=shape,
            gt_index=torch.arange(cells.shape[0], device=cells.device),
        )
        return queries, losses

    def detect(self, heatmap, feature, image_sizes) -> List[Instances]:
        """Top-k peaks per image above ``score_thresh`` of the heatmap logits (N, C, H, W), with
        boxes in input pixels decoded from the heads evaluated at the peaks of the head input
        (N, C_in, H, W)."""
        image_index, scores, classes, y, x = extract_peaks(
            heatmap.sigmoid(), self.topk, self.score_thresh
        )
        offsets, sizes, shape = self.heads_at(feature, image_index, y, x)
        boxes = decode_boxes(x, y, offsets.float(), sizes.float(), self.stride)
        counts = torch.bincount(image_index, minlength=len(image_sizes)).tolist()
        results, first = [], 0
        for image_size, count in zip(image_sizes, counts):
            part = slice(first, first + count)
            first += count
            instances = Instances(image_size)
            instances.pred_boxes = Boxes(boxes[part])
            instances.scores = scores[part]
            instances.pred_classes = classes[part]
            if shape is not None:
                instances.shape_features = shape[part]
            results.append(instances)
        return results
