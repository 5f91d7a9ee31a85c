"""The FCOS proposal generator (registered as ``FCOS``)."""

from typing import Dict, List, Optional, Sequence, Tuple, Union

import torch
from detectron2.config import configurable
from detectron2.layers import ShapeSpec
from detectron2.modeling import PROPOSAL_GENERATOR_REGISTRY
from detectron2.structures import Boxes, ImageList, Instances
from torch import nn

from centermask.config import check_class_counts
from centermask.layers.iou_loss import IOU_LOSS_TYPES

from .head import FCOSHead
from .inference import fcos_detections
from .losses import fcos_losses
from .targets import compute_locations, fcos_targets, level_indices, size_ranges_for_levels

__all__ = ["FCOS"]


def _flatten_predictions(per_level: List[torch.Tensor]) -> torch.Tensor:
    """Per level (N, C, H, W) -> (N * sum(H*W), C), image-major like the targets of fcos_targets."""
    n, c = per_level[0].shape[:2]
    return torch.cat([x.permute(0, 2, 3, 1).reshape(n, -1, c) for x in per_level], dim=1).reshape(
        -1, c
    )


def _empty_detections(image_size: Tuple[int, int], device: torch.device) -> Instances:
    instances = Instances(image_size)
    instances.pred_boxes = Boxes(torch.zeros((0, 4), device=device))
    instances.scores = torch.zeros((0,), device=device)
    instances.pred_classes = torch.zeros((0,), dtype=torch.int64, device=device)
    instances.locations = torch.zeros((0, 2), device=device)
    return instances


@PROPOSAL_GENERATOR_REGISTRY.register()
class FCOS(nn.Module):
    """FCOS: fully convolutional one-stage detection, used as CenterMask's proposal generator.

    In training it returns the FCOS losses, plus detections decoded with the training thresholds
    when the ROI heads need proposals (``proposals_in_training``); otherwise an empty Instances per
    image. In inference it returns the detections (boxes in the padded network-input frame, not
    clipped) with fields ``pred_boxes``, ``scores``, ``pred_classes`` and ``locations``.

    A downstream per-location head (``top_module``, e.g. CondInst's controller) runs on the box
    tower of every level. Its outputs reach the detections as ``top_feat`` (with ``fpn_levels``)
    and, with ``positives_in_training``, the training positives instead of proposals: per image
    the positive locations in level-major, then row-major order, with ``locations``,
    ``fpn_levels``, ``gt_inds`` (index into the image's GT), ``labels``, ``reg_targets`` (stride
    units), ``logits_pred``, ``ctrness_pred`` and, with a ``top_module``, ``top_feats``.
    Center sampling uses GT field ``gt_centers`` (e.g. mask centroids) when the GT has it.

    Same numbers as the original (centermask2); deliberate differences, none visible in its
    supported use:
      * box-only training (MODEL.MASK_ON and KEYPOINT_ON off) returns empty proposals instead of
        ``None``, so the ROI heads can pass through;
      * training proposals are decoded under ``no_grad`` (the original detached them later);
      * an image is "without GT" when it has no boxes, not when its first box is centred on x = 0;
      * the post-NMS top-k threshold is computed on the scores' device (no host copy);
      * SIZES_OF_INTEREST must have one entry less than IN_FEATURES (the original silently used
        a bounded range on its last level when fewer levels were configured);
      * losses flatten image-major instead of level-major, which changes only summation order.
    """

    @configurable
    def __init__(
        self,
        *,
        in_features: Sequence[str],
        strides: Sequence[int],
        head: nn.Module,
        num_classes: int,
        sizes_of_interest: Sequence[float] = (64, 128, 256, 512),
        center_sample: bool = True,
        pos_radius: float = 1.5,
        focal_alpha: float = 0.25,
        focal_gamma: float = 2.0,
        loc_loss_type: str = "giou",
        thresh_with_ctr: bool = False,
        score_thresh: Tuple[float, float] = (0.05, 0.05),
        pre_nms_topk: Tuple[int, int] = (1000, 1000),
        nms_thresh: float = 0.6,
        post_nms_topk: Tuple[int, int] = (100, 100),
        proposals_in_training: bool = True,
        positives_in_training: bool = False,
    ):
        """
        Args:
            in_features: names of the backbone features used, finest first.
            strides: stride of each of those features.
            head: module mapping the list of features to (logits, bbox_reg, ctrness, ...) per
                level, e.g. :class:`FCOSHead`; kept as ``fcos_head``.
            num_classes: foreground classes.
            sizes_of_interest: boundaries of the per-level size ranges (one less than levels).
            center_sample, pos_radius: center sampling and its radius in strides.
            focal_alpha, focal_gamma: focal loss parameters.
            loc_loss_type: "iou", "linear_iou" or "giou".
            thresh_with_ctr: threshold candidates on class x centerness.
            score_thresh, pre_nms_topk, post_nms_topk: (train, test) decoding parameters.
            nms_thresh: class-aware NMS IoU threshold.
            proposals_in_training: decode proposals during training (the ROI heads need them).
            positives_in_training: return the positive locations in training instead of
                proposals (see the class docstring).
        """
        super().__init__()
        if len(in_features) != len(strides):
            raise ValueError(
                f"MODEL.FCOS.IN_FEATURES {list(in_features)} and MODEL.FCOS.FPN_STRIDES "
                f"{list(strides)} must have the same length (e.g. with MODEL.FCOS.TOP_LEVELS 1, "
                "drop 'p7' and 128)"
            )
        if len(sizes_of_interest) != len(in_features) - 1:
            raise ValueError(
                f"MODEL.FCOS.SIZES_OF_INTEREST {list(sizes_of_interest)} must have one entry less "
                f"than MODEL.FCOS.IN_FEATURES {list(in_features)} (the boundaries between levels)"
            )
        if loc_loss_type not in IOU_LOSS_TYPES:
            raise ValueError(
                f"MODEL.FCOS.LOC_LOSS_TYPE must be one of {IOU_LOSS_TYPES}, got {loc_loss_type!r}"
            )
        self.in_features = list(in_features)
        self.strides = [int(s) for s in strides]
        self.fcos_head = head
        self.num_classes = num_classes
        self.size_ranges = size_ranges_for_levels(sizes_of_interest)
        self.center_sample = center_sample
        self.pos_radius = pos_radius
        self.focal_alpha = focal_alpha
        self.focal_gamma = focal_gamma
        self.loc_loss_type = loc_loss_type
        self.thresh_with_ctr = thresh_with_ctr
        self.score_thresh = score_thresh
        self.pre_nms_topk = pre_nms_topk
        self.nms_thresh = nms_thresh
        self.post_nms_topk = post_nms_topk
        self.proposals_in_training = proposals_in_training
        self.positives_in_training = positives_in_training

    @classmethod
    def from_config(cls, cfg, input_shape: Dict[str, ShapeSpec]):
        check_class_counts(cfg)
        fcos = cfg.MODEL.FCOS
        in_features, strides = list(fcos.IN_FEATURES), list(fcos.FPN_STRIDES)
        missing = [f for f in in_features if f not in input_shape]
        if missing:
            raise ValueError(
                f"MODEL.FCOS.IN_FEATURES {in_features} asks for {missing}, but the backbone only "
                f"outputs {sorted(input_shape)} (MODEL.FCOS.TOP_LEVELS is {fcos.TOP_LEVELS})"
            )
        for name, stride in zip(in_features, strides):
            actual = input_shape[name].stride
            if actual is not None and actual != stride:
                raise ValueError(
                    f"MODEL.FCOS.FPN_STRIDES gives stride {stride} for '{name}', but the backbone "
                    f"feature has stride {actual}"
                )
        return {
            "in_features": in_features,
            "strides": strides,
            "head": FCOSHead(cfg, [input_shape[f] for f in in_features]),
            "num_classes": fcos.NUM_CLASSES,
            "sizes_of_interest": list(fcos.SIZES_OF_INTEREST),
            "center_sample": fcos.CENTER_SAMPLE,
            "pos_radius": fcos.POS_RADIUS,
            "focal_alpha": fcos.LOSS_ALPHA,
            "focal_gamma": fcos.LOSS_GAMMA,
            "loc_loss_type": fcos.LOC_LOSS_TYPE,
            "thresh_with_ctr": fcos.THRESH_WITH_CTR,
            "score_thresh": (fcos.INFERENCE_TH_TRAIN, fcos.INFERENCE_TH_TEST),
            "pre_nms_topk": (fcos.PRE_NMS_TOPK_TRAIN, fcos.PRE_NMS_TOPK_TEST),
            "nms_thresh": fcos.NMS_TH,
            "post_nms_topk": (fcos.POST_NMS_TOPK_TRAIN, fcos.POST_NMS_TOPK_TEST),
            "proposals_in_training": cfg.MODEL.MASK_ON or cfg.MODEL.KEYPOINT_ON,
        }

    def _select_features(
        self, features: Union[Dict[str, torch.Tensor], List[torch.Tensor]]
    ) -> List[torch.Tensor]:
        if isinstance(features, dict):
            missing = [f for f in self.in_features if f not in features]
            if missing:
                raise KeyError(
                    f"FCOS needs features {self.in_features}; missing {missing} among "
                    f"{sorted(features)}"
                )
            return [features[f] for f in self.in_features]
        return list(features)

    def compute_locations(
        self, features: Union[Dict[str, torch.Tensor], List[torch.Tensor]]
    ) -> List[torch.Tensor]:
        """Per level (H_l*W_l, 2) input-image (x, y) of every feature cell, row-major."""
        return compute_locations(self._select_features(features), self.strides)

    def forward(
        self,
        images: ImageList,
        features: Dict[str, torch.Tensor],
        gt_instances: Optional[List[Instances]] = None,
        top_module: Optional[nn.Module] = None,
    ) -> Tuple[List[Instances], Dict[str, torch.Tensor]]:
        """
        Args:
            images: the padded input batch (only ``image_sizes`` is used).
            features: backbone outputs by name, (N, C, H_l, W_l).
            gt_instances: per image ``gt_boxes`` and ``gt_classes`` (optionally ``gt_centers``),
                required in training.
            top_module: optional module run on every level's box tower, (N, C, H, W) ->
                (N, D, H, W); shared over levels.

        Returns:
            per-image detections (or training proposals / positives, see the class docstring)
            and a dict of losses (empty in inference).
        """
        features = self._select_features(features)
        locations = compute_locations(features, self.strides)
        head_outputs = self.fcos_head(features)
        logits, bbox_reg, ctrness = head_outputs[:3]
        top_feats = None
        if top_module is not None:
            top_feats = [top_module(tower) for tower in head_outputs[3]]

        if not self.training:
            with torch.no_grad():
                detections = self._decode(
                    locations, logits, bbox_reg, ctrness, images, train=False, top_feats=top_feats
                )
            return detections, {}

        if gt_instances is None:
            raise ValueError("FCOS needs gt_instances in training mode")
        labels, reg_targets, gt_index = self._targets(locations, gt_instances)
        losses = self._losses_from_targets(logits, bbox_reg, ctrness, labels, reg_targets)
        if self.positives_in_training:
            results = self._positives(
                images, locations, logits, ctrness, top_feats, labels, reg_targets, gt_index
            )
        elif self.proposals_in_training:
            with torch.no_grad():
                results = self._decode(
                    locations, logits, bbox_reg, ctrness, images, train=True, top_feats=top_feats
                )
        else:
            device = logits[0].device
            results = [_empty_detections(size, device) for size in images.image_sizes]
        return results, losses

    def _targets(self, locations: List[torch.Tensor], gt_instances: List[Instances]):
        """(labels (N, L), reg_targets (N, L, 4), gt_index (N, L)), see :func:`fcos_targets`."""
        return fcos_targets(
            locations,
            gt_instances,
            strides=self.strides,
            size_ranges=self.size_ranges,
            num_classes=self.num_classes,
            center_sample=self.center_sample,
            radius=self.pos_radius,
            with_gt_index=True,
        )

    def losses(
        self,
        locations: List[torch.Tensor],
        logits: List[torch.Tensor],
        bbox_reg: List[torch.Tensor],
        ctrness: List[torch.Tensor],
        gt_instances: List[Instances],
    ) -> Dict[str, torch.Tensor]:
        """FCOS losses of a batch from per-level head outputs and per-image ground truth."""
        labels, reg_targets, _ = self._targets(locations, gt_instances)
        return self._losses_from_targets(logits, bbox_reg, ctrness, labels, reg_targets)

    def _losses_from_targets(self, logits, bbox_reg, ctrness, labels, reg_targets):
        return fcos_losses(
            _flatten_predictions(logits),
            _flatten_predictions(bbox_reg),
            _flatten_predictions(ctrness).reshape(-1),
            labels.reshape(-1),
            reg_targets.reshape(-1, 4),
            focal_alpha=self.focal_alpha,
            focal_gamma=self.focal_gamma,
            loc_loss_type=self.loc_loss_type,
        )

    def _positives(
        self, images, locations, logits, ctrness, top_feats, labels, reg_targets, gt_index
    ) -> List[Instances]:
        """Per image the positive locations and what downstream heads need of them."""
        num_images = len(images.image_sizes)
        all_locations = torch.cat(locations)
        levels = level_indices(locations)
        per_location = {
            "logits_pred": _flatten_predictions(logits).reshape(num_images, len(levels), -1),
            "ctrness_pred": _flatten_predictions(ctrness).reshape(num_images, len(levels)),
        }
        if top_feats is not None:
            per_location["top_feats"] = _flatten_predictions(top_feats).reshape(
                num_images, len(levels), -1
            )
        results = []
        for i, image_size in enumerate(images.image_sizes):
            index = torch.nonzero(labels[i] != self.num_classes).squeeze(1)
            positives = Instances(image_size)
            positives.locations = all_locations[index]
            positives.fpn_levels = levels[index]
            positives.gt_inds = gt_index[i][index]
            positives.labels = labels[i][index]
            positives.reg_targets = reg_targets[i][index]
            for name, values in per_location.items():
                positives.set(name, values[i][index])
            results.append(positives)
        return results

    def _decode(
        self, locations, logits, bbox_reg, ctrness, images: ImageList, *, train: bool, top_feats
    ):
        """Detections with the train (proposals for the ROI heads) or test thresholds."""
        phase = 0 if train else 1
        return fcos_detections(
            locations,
            [x.detach() for x in logits],
            [x.detach() for x in bbox_reg],
            [x.detach() for x in ctrness],
            self.strides,
            images.image_sizes,
            score_thresh=self.score_thresh[phase],
            pre_nms_topk=self.pre_nms_topk[phase],
            nms_thresh=self.nms_thresh,
            post_nms_topk=self.post_nms_topk[phase],
            thresh_with_ctr=self.thresh_with_ctr,
            top_feats=None if top_feats is None else [x.detach() for x in top_feats],
        )
