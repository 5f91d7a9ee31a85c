"""SAG-Mask: the spatial-attention-guided mask head of CenterMask, and its loss.

The plain head without attention is detectron2's ``MaskRCNNConvUpsampleHead``: it has the same
state_dict keys (``mask_fcn{i}``, ``deconv``, ``predictor``), so it is reused rather than redefined.
"""

from typing import List, Tuple

import fvcore.nn.weight_init as weight_init
import torch
import torch.nn.functional as F
from detectron2.config import configurable
from detectron2.layers import Conv2d, ConvTranspose2d, ShapeSpec, cat, get_norm
from detectron2.modeling.roi_heads.mask_head import ROI_MASK_HEAD_REGISTRY, BaseMaskRCNNHead
from detectron2.structures import Instances
from detectron2.utils.events import get_event_storage
from torch import nn

__all__ = [
    "SpatialAttention",
    "SpatialAttentionMaskHead",
    "class_mask_logits",
    "mask_rcnn_targets",
    "mask_loss",
]


class SpatialAttention(nn.Module):
    """Spatial attention module (SAM): reweights every location by a sigmoid map computed from
    the channel-wise mean and max of the input.

    (M, C, H, W) -> (M, C, H, W).
    """

    def __init__(self, kernel_size: int = 3):
        super().__init__()
        # Input channel 0 is the channel mean, channel 1 the channel max.
        self.conv = Conv2d(2, 1, kernel_size, padding=kernel_size // 2, bias=False)
        weight_init.c2_msra_fill(self.conv)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        mean_map = x.mean(dim=1, keepdim=True)
        max_map = x.amax(dim=1, keepdim=True)
        attention = torch.sigmoid(self.conv(torch.cat([mean_map, max_map], dim=1)))
        return x * attention


@ROI_MASK_HEAD_REGISTRY.register()
class SpatialAttentionMaskHead(BaseMaskRCNNHead):
    """SAG-Mask: ``mask_fcn1..N`` (3x3 conv + ReLU), one spatial attention module, a 2x2 stride-2
    deconv + ReLU and a 1x1 per-class predictor.

    Input (M, C, R, R) pooled RoI features; :meth:`layers` returns logits (M, K, 2R, 2R).
    """

    @configurable
    def __init__(
        self,
        input_shape: ShapeSpec,
        *,
        num_classes: int,
        conv_dims: List[int],
        conv_norm: str = "",
        **kwargs,
    ):
        """
        Args:
            input_shape: channels of the pooled features.
            num_classes: number of foreground classes, 1 for a class-agnostic mask.
            conv_dims: output channels of the N 3x3 convs followed by those of the deconv.
            conv_norm: normalization of the 3x3 convs (see detectron2's ``get_norm``).
            kwargs: ``loss_weight``, ``vis_period`` of :class:`BaseMaskRCNNHead`.
        """
        super().__init__(**kwargs)
        if len(conv_dims) < 2:
            raise ValueError(
                "SpatialAttentionMaskHead needs at least one conv (MODEL.ROI_MASK_HEAD.NUM_CONV "
                f">= 1); got conv_dims={conv_dims}."
            )
        self.conv_norm_relus = []
        channels = input_shape.channels
        for index, conv_dim in enumerate(conv_dims[:-1], start=1):
            conv = Conv2d(
                channels,
                conv_dim,
                kernel_size=3,
                padding=1,
                bias=not conv_norm,
                norm=get_norm(conv_norm, conv_dim),
                activation=nn.ReLU(),
            )
            self.add_module(f"mask_fcn{index}", conv)
            self.conv_norm_relus.append(conv)
            channels = conv_dim
        self.spatialAtt = SpatialAttention()
        self.deconv = ConvTranspose2d(channels, conv_dims[-1], kernel_size=2, stride=2, padding=0)
        self.predictor = Conv2d(conv_dims[-1], num_classes, kernel_size=1)

        for layer in self.conv_norm_relus + [self.deconv]:
            weight_init.c2_msra_fill(layer)
        nn.init.normal_(self.predictor.weight, std=0.001)
        nn.init.constant_(self.predictor.bias, 0)

    @classmethod
    def from_config(cls, cfg, input_shape: ShapeSpec):
        ret = super().from_config(cfg, input_shape)
        head = cfg.MODEL.ROI_MASK_HEAD
        ret.update(
            input_shape=input_shape,
            conv_dims=[head.CONV_DIM] * (head.NUM_CONV + 1),  # the last one is the deconv
            conv_norm=head.NORM,
            num_classes=1 if head.CLS_AGNOSTIC_MASK else cfg.MODEL.ROI_HEADS.NUM_CLASSES,
        )
        return ret

    def layers(self, x: torch.Tensor) -> torch.Tensor:
        for conv in self.conv_norm_relus:
            x = conv(x)
        x = self.spatialAtt(x)
        x = F.relu(self.deconv(x))
        return self.predictor(x)


def class_mask_logits(pred_mask_logits: torch.Tensor, classes: torch.Tensor) -> torch.Tensor:
    """Pick the mask of each RoI's class.

    Args:
        pred_mask_logits: (M, K, S, S), or (M, 1, S, S) for a class-agnostic head.
        classes: (M,) int64 class of each RoI.

    Returns:
        (M, S, S) logits.
    """
    if pred_mask_logits.shape[1] == 1:
        return pred_mask_logits[:, 0]
    rows = torch.arange(pred_mask_logits.shape[0], device=pred_mask_logits.device)
    return pred_mask_logits[rows, classes.to(torch.int64)]


def mask_rcnn_targets(
    instances: List[Instances], mask_side_len: int, device: torch.device
) -> Tuple[torch.Tensor, torch.Tensor]:
    """GT classes and GT masks cropped to the proposal boxes and resized to S x S.

    Args:
        instances: foreground proposals per image with ``proposal_boxes``, ``gt_classes`` and
            ``gt_masks`` (PolygonMasks or BitMasks).
        mask_side_len: S.

    Returns:
        gt_classes (M,) int64 and gt_masks (M, S, S) bool, in the order of the concatenated
        instances.
    """
    gt_classes, gt_masks = [], []
    for instances_per_image in instances:
        if len(instances_per_image) == 0:
            continue
        gt_classes.append(instances_per_image.gt_classes.to(torch.int64))
        masks = instances_per_image.gt_masks.crop_and_resize(
            instances_per_image.proposal_boxes.tensor, mask_side_len
        )
        if masks.dtype != torch.bool:  # rasterizers may return soft masks
            masks = masks > 0.5
        gt_masks.append(masks.to(device))
    if not gt_masks:
        empty = torch.zeros((0, mask_side_len, mask_side_len), dtype=torch.bool, device=device)
        return torch.zeros((0,), dtype=torch.int64, device=device), empty
    return cat(gt_classes).to(device), cat(gt_masks)


def mask_loss(mask_logits: torch.Tensor, gt_masks: torch.Tensor) -> torch.Tensor:
    """Per-pixel binary cross-entropy, averaged over all RoIs and pixels.

    Also logs ``mask_rcnn/accuracy``, ``mask_rcnn/false_positive`` and
    ``mask_rcnn/false_negative`` (prediction = logit > 0) to the current EventStorage.

    Args:
        mask_logits: (M, S, S) logits of each RoI's GT class.
        gt_masks: (M, S, S) bool targets.

    Returns:
        Scalar loss; ``mask_logits.sum() * 0`` when M = 0, so the graph stays connected.
    """
    if mask_logits.shape[0] == 0:
        return mask_logits.sum() * 0

    predicted = mask_logits > 0
    wrong = predicted != gt_masks
    # The four counts reach the host in one copy (one wait for the device, not four).
    counts = torch.stack(
        [wrong.sum(), (wrong & ~gt_masks).sum(), (wrong & gt_masks).sum(), gt_masks.sum()]
    )
    num_wrong, false_positive, false_negative, num_positive = counts.tolist()
    num_pixels = max(gt_masks.numel(), 1)
    storage = get_event_storage()
    storage.put_scalar("mask_rcnn/accuracy", 1.0 - num_wrong / num_pixels)
    storage.put_scalar(
        "mask_rcnn/false_positive",
        false_positive / max(gt_masks.numel() - num_positive, 1),
    )
    storage.put_scalar("mask_rcnn/false_negative", false_negative / max(num_positive, 1))
    return F.binary_cross_entropy_with_logits(
        mask_logits, gt_masks.to(mask_logits.dtype), reduction="mean"
    )
