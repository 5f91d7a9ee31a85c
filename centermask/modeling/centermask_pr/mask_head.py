"""The CenterMask-PR mask head: local shape + global saliency, shared by both detectors.

The detector (centre heatmap or FCOS) says where the instances are and hands over one feature
vector per instance (the shape features at its centre / location); this head projects it to the
S x S local shape, predicts the saliency map on one backbone feature, assembles the masks and
computes their losses.
"""

from dataclasses import dataclass
from typing import Dict, List, Optional, Tuple

import torch
from detectron2.config import configurable
from detectron2.layers import ShapeSpec
from detectron2.structures import Instances
from torch import nn
from torch.nn import functional as F

from .assembly import (
    MASK_MODES,
    assemble_masks,
    box_windows,
    boxes_at_least_one_pixel,
    full_map,
    inside_box,
)
from .losses import assembled_mask_loss, saliency_loss
from .targets import mask_targets

__all__ = ["MaskQueries", "ShapeSaliencyMaskHead", "check_mask_stride", "conv_head"]


def check_mask_stride(mask_stride: int, saliency_stride: int) -> int:
    """The stride of the mask grid: ``mask_stride``, or ``saliency_stride`` when it is 0. Raises
    a ValueError naming ``MODEL.CENTERMASK_PR.MASK_STRIDE`` unless it divides the saliency
    feature's stride (the saliency logits are upsampled by an integer factor)."""
    stride = mask_stride or saliency_stride
    if stride <= 0 or saliency_stride % stride:
        raise ValueError(
            f"MODEL.CENTERMASK_PR.MASK_STRIDE must be 0 or a divisor of the saliency feature's "
            f"stride {saliency_stride}, got {mask_stride}"
        )
    return stride


@dataclass
class MaskQueries:
    """The instances whose masks are trained in one batch (K of them).

    Attributes:
        image_index: (K,) long, image of the batch.
        boxes: (K, 4) boxes (x0, y0, x1, y1, input-image pixels) the masks are assembled in.
        classes: (K,) long, class (selects the class-specific saliency channel).
        shape_features: (K, C) per-instance features the local shape is projected from.
        gt_index: (K,) long, index of the GT instance in the batch (images concatenated).
    """

    image_index: torch.Tensor
    boxes: torch.Tensor
    classes: torch.Tensor
    shape_features: torch.Tensor
    gt_index: torch.Tensor


def conv_head(in_channels: int, hidden: int, out_channels: int, bias: float = 0.0) -> nn.Sequential:
    """CenterNet's head: 3x3 conv, ReLU, 1x1 conv (final bias set to ``bias``)."""
    head = nn.Sequential(
        nn.Conv2d(in_channels, hidden, 3, padding=1),
        nn.ReLU(inplace=True),
        nn.Conv2d(hidden, out_channels, 1),
    )
    for module in head:
        if isinstance(module, nn.Conv2d):
            nn.init.normal_(module.weight, std=0.01)
            nn.init.constant_(module.bias, 0.0)
    nn.init.constant_(head[-1].bias, bias)
    return head


class ShapeSaliencyMaskHead(nn.Module):
    """Local shape (S^2 per instance) x global saliency (C or 1 channels at one stride)."""

    @configurable
    def __init__(
        self,
        *,
        num_classes: int,
        shape_in_channels: int,
        saliency_in_feature: str,
        saliency_in_channels: int,
        saliency_stride: int,
        mask_stride: int = 0,
        shape_size: int = 32,
        head_channels: int = 64,
        mode: str = "both",
        class_specific_saliency: bool = True,
        mask_loss_weight: float = 1.0,
        saliency_loss_weight: float = 1.0,
    ):
        """
        Args:
            num_classes: foreground classes.
            shape_in_channels: channels of the per-instance shape features.
            saliency_in_feature, saliency_in_channels, saliency_stride: the backbone feature the
                saliency map is predicted on.
            mask_stride: stride of the grid the masks are assembled and trained on: 0 for
                ``saliency_stride``, else a divisor of it (the saliency logits are upsampled).
            shape_size: S, the side of the local shape.
            head_channels: hidden channels of the saliency head.
            mode: "both" (the paper's model), "local" (shape only) or "global" (saliency only).
            class_specific_saliency: C saliency channels (the instance's class is used) or 1.
            mask_loss_weight: weight of the assembled-mask BCE.
            saliency_loss_weight: weight of the direct saliency BCE (class-specific saliency only).
        """
        super().__init__()
        if mode not in MASK_MODES:
            raise ValueError(
                f"MODEL.CENTERMASK_PR.MASK_MODE must be one of {MASK_MODES}, got {mode!r}"
            )
        mask_stride = check_mask_stride(mask_stride, saliency_stride)
        self.num_classes = num_classes
        self.shape_size = shape_size
        self.mode = mode
        self.class_specific_saliency = class_specific_saliency
        self.saliency_in_feature = saliency_in_feature
        self.saliency_stride = saliency_stride
        self.mask_stride = mask_stride
        self.mask_loss_weight = mask_loss_weight
        self.saliency_loss_weight = saliency_loss_weight
        self.shape_proj: Optional[nn.Linear] = None
        self.saliency_head: Optional[nn.Sequential] = None
        if mode != "global":
            # A 1x1 conv over the shape features, applied only where instances are.
            self.shape_proj = nn.Linear(shape_in_channels, shape_size**2)
            nn.init.normal_(self.shape_proj.weight, std=0.01)
            nn.init.constant_(self.shape_proj.bias, 0.0)
        if mode != "local":
            channels = num_classes if class_specific_saliency else 1
            self.saliency_head = conv_head(saliency_in_channels, head_channels, channels)

    @classmethod
    def from_config(cls, cfg, input_shape: Dict[str, ShapeSpec], shape_in_channels: int):
        pr = cfg.MODEL.CENTERMASK_PR
        name = pr.SALIENCY_IN_FEATURE
        if name not in input_shape:
            raise ValueError(
                f"MODEL.CENTERMASK_PR.SALIENCY_IN_FEATURE is {name!r}, but the backbone outputs "
                f"only {sorted(input_shape)}"
            )
        return {
            "num_classes": cfg.MODEL.FCOS.NUM_CLASSES,
            "shape_in_channels": shape_in_channels,
            "saliency_in_feature": name,
            "saliency_in_channels": input_shape[name].channels,
            "saliency_stride": input_shape[name].stride,
            "mask_stride": pr.MASK_STRIDE,
            "shape_size": pr.SHAPE_SIZE,
            "head_channels": pr.HEAD_CHANNELS,
            "mode": pr.MASK_MODE,
            "class_specific_saliency": pr.CLASS_SPECIFIC_SALIENCY,
            "mask_loss_weight": pr.MASK_LOSS_WEIGHT,
            "saliency_loss_weight": pr.SALIENCY_LOSS_WEIGHT,
        }

    def saliency_map(self, features: Dict[str, torch.Tensor]) -> Optional[torch.Tensor]:
        """(N, C or 1, H, W) saliency logits, or None without the global branch."""
        if self.saliency_head is None:
            return None
        return self.saliency_head(features[self.saliency_in_feature])

    def mask_grid(self, saliency_size: Tuple[int, int]) -> Tuple[int, int]:
        """(H, W) of the mask grid (stride ``mask_stride``) for a saliency grid of that size."""
        factor = self.saliency_stride // self.mask_stride
        return saliency_size[0] * factor, saliency_size[1] * factor

    @staticmethod
    def _on_mask_grid(saliency: torch.Tensor, grid: Tuple[int, int]) -> torch.Tensor:
        """Saliency logits (N, C, H, W) bilinearly resampled to the mask grid (N, C, *grid);
        unchanged when already there."""
        if tuple(saliency.shape[-2:]) == grid:
            return saliency
        return F.interpolate(saliency, size=grid, mode="bilinear", align_corners=False)

    def _assemble(
        self,
        saliency: Optional[torch.Tensor],
        saliency_size: Tuple[int, int],
        image_index: torch.Tensor,
        boxes: torch.Tensor,
        classes: torch.Tensor,
        shape_features: Optional[torch.Tensor],
        windows: bool,
    ) -> Tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        """Masks on the mask grid (:meth:`mask_grid`): on the whole grid, or with ``windows`` on
        a window around each box (:func:`box_windows`).

        Returns:
            probs (K, h, w), the boxes widened to a cell (K, 4), and the rows (K, h) and columns
            (K, w) of the grid the masks are on.
        """
        grid = self.mask_grid(saliency_size)
        boxes = boxes_at_least_one_pixel(boxes.float(), self.mask_stride)
        if windows:
            rows, cols = box_windows(boxes, self.mask_stride, grid)
        else:
            rows, cols = full_map(len(boxes), grid[0], grid[1], boxes.device)
        shape_logits = None
        if self.shape_proj is not None:
            size = self.shape_size
            shape_logits = self.shape_proj(shape_features).view(-1, size, size)
        instance_saliency = None
        if saliency is not None:
            saliency = self._on_mask_grid(saliency, grid)
            channel = classes if self.class_specific_saliency else torch.zeros_like(classes)
            instance_saliency = saliency[
                image_index[:, None, None], channel[:, None, None], rows[:, :, None], cols[:, None]
            ]
        probs = assemble_masks(boxes, shape_logits, instance_saliency, rows, cols, self.mask_stride)
        return probs, boxes, rows, cols

    def losses(
        self,
        features: Dict[str, torch.Tensor],
        queries: MaskQueries,
        gt_instances: List[Instances],
    ) -> Dict[str, torch.Tensor]:
        """``loss_mask`` (and ``loss_saliency`` with class-specific saliency) of a batch."""
        feature = features[self.saliency_in_feature]
        saliency_size = tuple(feature.shape[-2:])
        padded = (saliency_size[0] * self.saliency_stride, saliency_size[1] * self.saliency_stride)
        saliency = self.saliency_map(features)
        targets = mask_targets(gt_instances, padded, self.mask_stride)
        # Windows around the boxes: outside its box a mask is 0 and has no loss, and a finer mask
        # grid (MASK_STRIDE) costs no more than the boxes' extent.
        probs, boxes, rows, cols = self._assemble(
            saliency,
            saliency_size,
            queries.image_index,
            queries.boxes,
            queries.classes,
            queries.shape_features,
            windows=True,
        )
        inside = inside_box(boxes, rows, cols, self.mask_stride)
        gt_index = queries.gt_index[:, None, None]
        loss = assembled_mask_loss(
            probs, targets[gt_index, rows[:, :, None], cols[:, None]], inside
        )
        losses = {"loss_mask": self.mask_loss_weight * loss}
        if self.class_specific_saliency and saliency is not None:
            factor = self.saliency_stride // self.mask_stride
            if factor > 1:
                # The direct saliency loss stays on the saliency map's own grid; averaging the
                # cell fractions over factor x factor blocks gives that grid's fractions.
                targets = F.avg_pool2d(targets[:, None], factor)[:, 0]
            union = self._class_union(targets, gt_instances, saliency.shape)
            losses["loss_saliency"] = self.saliency_loss_weight * saliency_loss(saliency, union)
        return losses

    @staticmethod
    def _class_union(
        targets: torch.Tensor, gt_instances: List[Instances], shape: torch.Size
    ) -> torch.Tensor:
        """(N, C, H, W): per image and class, the maximum of its GT masks (0 where none)."""
        num_images, num_classes = shape[0], shape[1]
        union = targets.new_zeros((num_images * num_classes, shape[2] * shape[3]))
        if targets.shape[0] == 0:
            return union.view(shape)
        # Row image * C + class of each GT mask; the fractions are >= 0, so the zeros the union
        # starts from change no maximum, and the classes never need reading on the host.
        rows = torch.cat(
            [
                inst.gt_classes.long() + image * num_classes
                for image, inst in enumerate(gt_instances)
            ]
        )
        flat = targets.flatten(1)
        union.scatter_reduce_(0, rows[:, None].expand_as(flat), flat, reduce="amax")
        return union.view(shape)

    def predict_masks(
        self,
        saliency: Optional[torch.Tensor],
        map_size: Tuple[int, int],
        detections: List[Instances],
    ) -> List[Instances]:
        """Adds ``mask_probs`` (K, H_m, W_m), the assembled masks on the mask grid of the padded
        input (:meth:`mask_grid` of the saliency grid ``map_size``), to each image's detections
        (``pred_boxes`` in input pixels, ``pred_classes`` and ``shape_features``), given the
        saliency logits (:meth:`saliency_map`)."""
        if saliency is not None:
            # The whole batch's map at once, not each image's or instance's.
            saliency = self._on_mask_grid(saliency, self.mask_grid(map_size))
        for index, instances in enumerate(detections):
            classes = instances.pred_classes
            instances.mask_probs = self._assemble(
                saliency,
                map_size,
                torch.full_like(classes, index),
                instances.pred_boxes.tensor,
                classes,
                instances.shape_features if instances.has("shape_features") else None,
                windows=False,
            )[0]
        return detections
