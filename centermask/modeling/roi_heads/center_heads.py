"""CenterROIHeads: the mask, MaskIoU and keypoint branches of CenterMask, run on FCOS boxes.

There is no box head: the final boxes, classes and box scores are FCOS's.
"""

from typing import Dict, List, Optional, Tuple

import torch
from detectron2.config import configurable
from detectron2.layers import ShapeSpec
from detectron2.modeling.roi_heads import (
    ROI_HEADS_REGISTRY,
    ROIHeads,
    build_keypoint_head,
    build_mask_head,
    select_foreground_proposals,
)
from detectron2.modeling.roi_heads.mask_head import mask_rcnn_inference
from detectron2.modeling.roi_heads.roi_heads import select_proposals_with_visible_keypoints
from detectron2.structures import ImageList, Instances
from torch import nn

from centermask.config import check_class_counts

from .mask_head import class_mask_logits, mask_loss, mask_rcnn_targets
from .maskiou_head import build_maskiou_head, maskiou_inference, maskiou_loss, maskiou_targets
from .pooler import AdaptiveROIPooler
from .proposal_utils import add_ground_truth_to_detections, detections_to_proposals

__all__ = ["CenterROIHeads"]


def _build_pooler(cfg_head, in_features, input_shape, criterion_key: str) -> AdaptiveROIPooler:
    return AdaptiveROIPooler(
        output_size=cfg_head.POOLER_RESOLUTION,
        scales=[1.0 / input_shape[f].stride for f in in_features],
        sampling_ratio=cfg_head.POOLER_SAMPLING_RATIO,
        pooler_type=cfg_head.POOLER_TYPE,
        assign_criterion=criterion_key,
    )


def _check_features(in_features, input_shape, key: str) -> int:
    """Raise a clear error when a configured feature is missing; return their channel count."""
    missing = [f for f in in_features if f not in input_shape]
    if missing:
        raise ValueError(
            f"{key} = {list(in_features)} names feature(s) {missing} that the backbone does not "
            f"produce (it gives {sorted(input_shape)}); choose among those."
        )
    channels = {input_shape[f].channels for f in in_features}
    if len(channels) != 1:
        raise ValueError(f"The features of {key} = {list(in_features)} differ in channels.")
    return channels.pop()


@ROI_HEADS_REGISTRY.register()
class CenterROIHeads(ROIHeads):
    """Mask (SAG-Mask), MaskIoU and keypoint heads on the boxes of a one-stage detector.

    Training: the FCOS detections (plus, by default, the GT boxes) are matched to the GT and
    subsampled; the foreground ones train the mask and MaskIoU heads. Inference: the heads run on
    the FCOS detections, adding ``pred_masks`` (M, 1, S, S) probabilities and ``mask_scores``.
    With ``MODEL.MASK_ON: False`` (and no keypoints) the detections pass through unchanged.
    """

    @configurable
    def __init__(
        self,
        *,
        mask_in_features: Optional[List[str]] = None,
        mask_pooler: Optional[AdaptiveROIPooler] = None,
        mask_head: Optional[nn.Module] = None,
        maskiou_head: Optional[nn.Module] = None,
        maskiou_loss_weight: float = 1.0,
        keypoint_in_features: Optional[List[str]] = None,
        keypoint_pooler: Optional[AdaptiveROIPooler] = None,
        keypoint_head: Optional[nn.Module] = None,
        proposal_append_gt: bool = True,
        **kwargs,
    ):
        """
        Args:
            mask_in_features, mask_pooler, mask_head: the mask branch (all None to disable it).
            maskiou_head: predicts the IoU of each mask; None to disable it. Needs the mask branch.
            maskiou_loss_weight: weight of ``loss_maskiou``.
            keypoint_in_features, keypoint_pooler, keypoint_head: the keypoint branch, or None.
            proposal_append_gt: append the GT boxes to the training proposals.
            kwargs: ``num_classes``, ``batch_size_per_image``, ``positive_fraction`` and
                ``proposal_matcher`` of detectron2's :class:`ROIHeads`.
        """
        # detectron2's GT appender expects RPN proposals (objectness_logits); the FCOS-aware one
        # in label_and_sample_proposals is used instead.
        super().__init__(proposal_append_gt=False, **kwargs)
        self.append_gt_to_proposals = proposal_append_gt

        self.mask_on = mask_head is not None
        if self.mask_on:
            self.mask_in_features = mask_in_features
            self.mask_pooler = mask_pooler
            self.mask_head = mask_head
        if maskiou_head is not None and not self.mask_on:
            raise ValueError("The MaskIoU head needs the mask head (MODEL.MASK_ON: True).")
        self.maskiou_on = maskiou_head is not None
        if self.maskiou_on:
            self.maskiou_head = maskiou_head
            self.maskiou_loss_weight = maskiou_loss_weight

        self.keypoint_on = keypoint_head is not None
        if self.keypoint_on:
            self.keypoint_in_features = keypoint_in_features
            self.keypoint_pooler = keypoint_pooler
            self.keypoint_head = keypoint_head

    @classmethod
    def from_config(cls, cfg, input_shape: Dict[str, ShapeSpec]):
        if "FCOS" in cfg.MODEL:
            check_class_counts(cfg)
        ret = super().from_config(cfg)
        ret.update(cls._init_mask_heads(cfg, input_shape))
        ret.update(cls._init_keypoint_head(cfg, input_shape))
        return ret

    @classmethod
    def _init_mask_heads(cls, cfg, input_shape):
        if not cfg.MODEL.MASK_ON:
            # MaskIoU scores masks, so it is off too (MASKIOU_ON is ignored).
            return {}
        in_features = cfg.MODEL.ROI_HEADS.IN_FEATURES
        channels = _check_features(in_features, input_shape, "MODEL.ROI_HEADS.IN_FEATURES")
        head_cfg = cfg.MODEL.ROI_MASK_HEAD
        resolution = head_cfg.POOLER_RESOLUTION
        roi_shape = ShapeSpec(channels=channels, height=resolution, width=resolution)
        ret = {
            "mask_in_features": list(in_features),
            "mask_pooler": _build_pooler(
                head_cfg, in_features, input_shape, head_cfg.ASSIGN_CRITERION
            ),
            "mask_head": build_mask_head(cfg, roi_shape),
        }
        if cfg.MODEL.MASKIOU_ON:
            ret["maskiou_head"] = build_maskiou_head(cfg, roi_shape)
            ret["maskiou_loss_weight"] = cfg.MODEL.MASKIOU_LOSS_WEIGHT
        return ret

    @classmethod
    def _init_keypoint_head(cls, cfg, input_shape):
        if not cfg.MODEL.KEYPOINT_ON:
            return {}
        in_features = cfg.MODEL.ROI_KEYPOINT_HEAD.IN_FEATURES
        channels = _check_features(in_features, input_shape, "MODEL.ROI_KEYPOINT_HEAD.IN_FEATURES")
        head_cfg = cfg.MODEL.ROI_KEYPOINT_HEAD
        resolution = head_cfg.POOLER_RESOLUTION
        return {
            "keypoint_in_features": list(in_features),
            "keypoint_pooler": _build_pooler(
                head_cfg, in_features, input_shape, head_cfg.ASSIGN_CRITERION
            ),
            "keypoint_head": build_keypoint_head(
                cfg, ShapeSpec(channels=channels, height=resolution, width=resolution)
            ),
        }

    @torch.no_grad()
    def label_and_sample_proposals(
        self, proposals: List[Instances], targets: List[Instances]
    ) -> List[Instances]:
        """Match FCOS detections (renamed to ``proposal_boxes``, plus the GT boxes when
        ``append_gt_to_proposals``) to the GT and subsample them; see detectron2's
        :meth:`ROIHeads.label_and_sample_proposals`. Logs ``roi_head/num_fg_samples`` and
        ``roi_head/num_bg_samples``."""
        proposals = [detections_to_proposals(p) for p in proposals]
        if self.append_gt_to_proposals:
            proposals = add_ground_truth_to_detections(targets, proposals)
        return super().label_and_sample_proposals(proposals, targets)

    def forward(
        self,
        images: ImageList,
        features: Dict[str, torch.Tensor],
        proposals: Optional[List[Instances]],
        targets: Optional[List[Instances]] = None,
    ) -> Tuple[List[Instances], Dict[str, torch.Tensor]]:
        """
        Args:
            images: unused (the per-image sizes come from the Instances).
            features: the backbone features by name.
            proposals: per image, FCOS detections with ``pred_boxes``, ``scores``,
                ``pred_classes`` and ``locations``. In training with no head enabled it may be
                None (FCOS skips decoding then).
            targets: per image GT Instances, in training only.

        Returns:
            In training, the sampled proposals and a dict of losses (``loss_mask``,
            ``loss_maskiou``, ``loss_keypoint`` when enabled). In inference, the detections
            with the head outputs and an empty dict.
        """
        del images
        if not self.training:
            return self.forward_with_given_boxes(features, proposals), {}
        if not (self.mask_on or self.keypoint_on):
            return [] if proposals is None else proposals, {}
        if targets is None or proposals is None:
            raise ValueError(
                "CenterROIHeads needs proposals and targets in training (the FCOS proposal "
                "generator produces proposals when MODEL.MASK_ON or MODEL.KEYPOINT_ON is set)."
            )
        proposals = self.label_and_sample_proposals(proposals, targets)
        losses = {}
        losses.update(self._forward_mask(features, proposals))
        losses.update(self._forward_keypoint(features, proposals))
        return proposals, losses

    def forward_with_given_boxes(
        self, features: Dict[str, torch.Tensor], instances: List[Instances]
    ) -> List[Instances]:
        """Run the enabled heads on boxes that are already predicted.

        Args:
            features: the backbone features by name.
            instances: per image, Instances with ``pred_boxes``, ``pred_classes`` and ``scores``.

        Returns:
            The same Instances with ``pred_masks`` (M, 1, S, S) probabilities, ``mask_scores``
            (M,) and ``pred_keypoints`` added, for the enabled heads.
        """
        assert not self.training
        instances = self._forward_mask(features, instances)
        return self._forward_keypoint(features, instances)

    def _forward_mask(self, features: Dict[str, torch.Tensor], instances: List[Instances]):
        """Training: {"loss_mask", "loss_maskiou"}. Inference: ``instances`` with ``pred_masks``
        and ``mask_scores``."""
        if not self.mask_on:
            return {} if self.training else instances
        feature_maps = [features[f] for f in self.mask_in_features]

        if not self.training:
            image_sizes = [x.image_size for x in instances]
            roi_features = self.mask_pooler(
                feature_maps, [x.pred_boxes for x in instances], image_sizes
            )
            mask_rcnn_inference(self.mask_head.layers(roi_features), instances)
            if self.maskiou_on:
                mask_probs = torch.cat([x.pred_masks for x in instances])
                maskiou_inference(self.maskiou_head(roi_features, mask_probs), instances)
            return instances

        foreground, _ = select_foreground_proposals(instances, self.num_classes)
        image_sizes = [x.image_size for x in foreground]
        roi_features = self.mask_pooler(
            feature_maps, [x.proposal_boxes for x in foreground], image_sizes
        )
        pred_mask_logits = self.mask_head.layers(roi_features)
        gt_classes, gt_masks = mask_rcnn_targets(
            foreground, pred_mask_logits.shape[-1], pred_mask_logits.device
        )
        mask_logits = class_mask_logits(pred_mask_logits, gt_classes)
        loss_weight = getattr(self.mask_head, "loss_weight", 1.0)
        losses = {"loss_mask": mask_loss(mask_logits, gt_masks) * loss_weight}
        if self.maskiou_on:
            # Not detached: the MaskIoU loss also trains the mask head, as in the original.
            pred_maskiou = self.maskiou_head(roi_features, mask_logits.sigmoid()[:, None])
            targets = maskiou_targets(foreground, mask_logits, gt_masks)
            losses["loss_maskiou"] = maskiou_loss(
                pred_maskiou, gt_classes, targets, self.maskiou_loss_weight
            )
        return losses

    def _forward_keypoint(self, features: Dict[str, torch.Tensor], instances: List[Instances]):
        """Training: {"loss_keypoint"}. Inference: ``instances`` with ``pred_keypoints``."""
        if not self.keypoint_on:
            return {} if self.training else instances
        feature_maps = [features[f] for f in self.keypoint_in_features]
        if self.training:
            instances, _ = select_foreground_proposals(instances, self.num_classes)
            instances = select_proposals_with_visible_keypoints(instances)
            boxes = [x.proposal_boxes for x in instances]
        else:
            boxes = [x.pred_boxes for x in instances]
        roi_features = self.keypoint_pooler(feature_maps, boxes, [x.image_size for x in instances])
        return self.keypoint_head(roi_features, instances)
