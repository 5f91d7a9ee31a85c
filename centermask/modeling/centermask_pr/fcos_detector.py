"""CenterMask-PR on FCOS (paper Sec. 5.4): every FCOS location is a point representation.

Each detection takes its box (the local shape's size) from FCOS's regression at its location and
its shape feature from FCOS's box tower at that location; the saliency map is shared. In training
the mask queries are FCOS's positive locations, assembled in their matched GT boxes.
"""

from typing import Dict, List, Optional, Tuple, Union

import torch
from detectron2.config import configurable
from detectron2.layers import ShapeSpec
from detectron2.structures import ImageList, Instances
from torch import nn

from centermask.modeling.fcos import FCOS

from .mask_head import MaskQueries

__all__ = ["FCOSPointDetector"]


class FCOSPointDetector(nn.Module):
    """FCOS (``positives_in_training``) whose box-tower features become the shape features."""

    @configurable
    def __init__(self, *, fcos: FCOS, shape_channels: int, max_train_masks: int = 256):
        """
        Args:
            fcos: the FCOS proposal generator, built with ``positives_in_training=True``.
            shape_channels: channels of its box tower.
            max_train_masks: at most this many positives (drawn at random) get the mask loss per
                batch; -1 for all of them.
        """
        super().__init__()
        if not fcos.positives_in_training:
            raise ValueError("CenterMask-PR needs an FCOS built with positives_in_training=True")
        self.fcos = fcos
        self.in_features = list(fcos.in_features)
        self.shape_channels = shape_channels
        self.max_train_masks = max_train_masks
        # Handing the box tower itself to FCOS as its per-location head: detections and
        # positives then carry their location's tower features.
        self.tower_features = nn.Identity()

    @classmethod
    def from_config(cls, cfg, input_shape: Dict[str, ShapeSpec]):
        fcos = FCOS(cfg, input_shape, proposals_in_training=False, positives_in_training=True)
        return {
            "fcos": fcos,
            "shape_channels": input_shape[cfg.MODEL.FCOS.IN_FEATURES[0]].channels,
            "max_train_masks": cfg.MODEL.CENTERMASK_PR.MAX_TRAIN_MASKS,
        }

    def forward(
        self,
        images: ImageList,
        features: Dict[str, torch.Tensor],
        gt_instances: Optional[List[Instances]] = None,
    ) -> Union[Tuple[MaskQueries, Dict[str, torch.Tensor]], List[Instances]]:
        if not self.training:
            detections, _ = self.fcos(images, features, top_module=self.tower_features)
            return self.with_shape_features(detections)
        positives, losses = self.fcos(
            images, features, gt_instances, top_module=self.tower_features
        )
        return self._queries(positives, gt_instances), losses

    @staticmethod
    def with_shape_features(detections: List[Instances]) -> List[Instances]:
        """FCOS detections decoded with the tower features as ``top_feat`` (n, C) -> detections
        with ``pred_boxes``, ``scores``, ``pred_classes`` and ``shape_features`` (n, C), what the
        mask head reads (in place; shared with the ONNX Runtime predictor)."""
        for instances in detections:
            instances.shape_features = instances.top_feat
            for name in ("top_feat", "fpn_levels", "locations"):
                instances.remove(name)
        return detections

    def _queries(self, positives: List[Instances], gt_instances: List[Instances]) -> MaskQueries:
        """The positives as mask queries, each assembled in its matched GT box."""
        device = positives[0].gt_inds.device
        first_gt = torch.tensor(
            [0] + [len(inst) for inst in gt_instances[:-1]], device=device
        ).cumsum(0)
        image_index = torch.cat(
            [
                torch.full((len(p),), i, dtype=torch.int64, device=device)
                for i, p in enumerate(positives)
            ]
        )
        gt_index = torch.cat([p.gt_inds for p in positives]) + first_gt[image_index]
        all_boxes = torch.cat([inst.gt_boxes.tensor for inst in gt_instances])
        features = torch.cat([p.top_feats for p in positives])
        classes = torch.cat([p.labels for p in positives])
        if 0 <= self.max_train_masks < len(gt_index):
            keep = torch.randperm(len(gt_index), device=device)[: self.max_train_masks]
            image_index, gt_index = image_index[keep], gt_index[keep]
            features, classes = features[keep], classes[keep]
        return MaskQueries(
            image_index=image_index,
            boxes=all_boxes[gt_index] if len(all_boxes) else all_boxes.new_zeros((0, 4)),
            classes=classes,
            shape_features=features,
            gt_index=gt_index,
        )
