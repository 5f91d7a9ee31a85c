"""The FCOS head: classification and box towers shared over the FPN levels."""

import math
from typing import List, Tuple

import torch
from detectron2.config import configurable
from detectron2.layers import ShapeSpec
from torch import nn
from torch.nn import functional as F

__all__ = ["FCOS_NORMS", "Scale", "FCOSHead"]

FCOS_NORMS = ("GN", "none", "")


class Scale(nn.Module):
    """Multiplies its input by one learnable scalar (one per FPN level in FCOS)."""

    def __init__(self, init_value: float = 1.0):
        super().__init__()
        self.scale = nn.Parameter(torch.tensor([init_value], dtype=torch.float32))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * self.scale


def _tower(num_convs: int, channels: int, norm: str) -> nn.Sequential:
    """``num_convs`` x [3x3 conv, (GroupNorm(32)), ReLU]; the index layout is part of the
    checkpoint format (conv at 3i, GN at 3i+1 with GN; conv at 2i without)."""
    layers: List[nn.Module] = []
    for _ in range(num_convs):
        layers.append(nn.Conv2d(channels, channels, kernel_size=3, stride=1, padding=1))
        if norm == "GN":
            layers.append(nn.GroupNorm(32, channels))
        layers.append(nn.ReLU())
    return nn.Sequential(*layers)


class FCOSHead(nn.Module):
    """Per-level FCOS predictions.

    Every level goes through the same ``share_tower``, then ``cls_tower`` -> ``cls_logits`` and
    ``bbox_tower`` -> (``bbox_pred``, ``ctrness``). Box regression is
    ``relu(scale_level * bbox_pred)``, in units of the level stride.
    """

    @configurable
    def __init__(
        self,
        *,
        in_channels: int,
        num_classes: int,
        num_levels: int,
        num_cls_convs: int = 4,
        num_box_convs: int = 4,
        num_share_convs: int = 0,
        norm: str = "GN",
        prior_prob: float = 0.01,
        use_scale: bool = True,
    ):
        """
        Args:
            in_channels: channels of every input level (they must all be equal).
            num_classes: foreground classes (no background logit).
            num_levels: number of FPN levels, i.e. of per-level ``Scale`` modules.
            num_cls_convs, num_box_convs, num_share_convs: tower depths.
            norm: "GN" (GroupNorm with 32 groups) or "none".
            prior_prob: initial foreground probability of the classifier.
            use_scale: learn one regression scale per level.
        """
        super().__init__()
        if norm not in FCOS_NORMS:
            raise ValueError(f"MODEL.FCOS.NORM must be 'GN' or 'none', got {norm!r}")
        if norm == "GN" and in_channels % 32 != 0:
            raise ValueError(
                f"MODEL.FCOS.NORM 'GN' uses 32 groups, which does not divide the {in_channels} "
                "input channels of the FCOS head; use NORM 'none' or change MODEL.FPN.OUT_CHANNELS"
            )
        self.num_classes = num_classes
        self.cls_tower = _tower(num_cls_convs, in_channels, norm)
        self.bbox_tower = _tower(num_box_convs, in_channels, norm)
        self.share_tower = _tower(num_share_convs, in_channels, norm)
        self.cls_logits = nn.Conv2d(in_channels, num_classes, kernel_size=3, stride=1, padding=1)
        self.bbox_pred = nn.Conv2d(in_channels, 4, kernel_size=3, stride=1, padding=1)
        self.ctrness = nn.Conv2d(in_channels, 1, kernel_size=3, stride=1, padding=1)
        self.scales = nn.ModuleList([Scale(1.0) for _ in range(num_levels)]) if use_scale else None

        for module in self.modules():
            if isinstance(module, nn.Conv2d):
                nn.init.normal_(module.weight, std=0.01)
                nn.init.constant_(module.bias, 0.0)
        # Start with every location predicting background with probability 1 - prior_prob, so the
        # focal loss is not swamped by the many easy negatives in the first iterations.
        nn.init.constant_(self.cls_logits.bias, -math.log((1.0 - prior_prob) / prior_prob))

    @classmethod
    def from_config(cls, cfg, input_shape: List[ShapeSpec]):
        channels = {s.channels for s in input_shape}
        if len(channels) != 1:
            raise ValueError(
                "The FCOS head is shared over levels, so every feature of MODEL.FCOS.IN_FEATURES "
                f"must have the same number of channels; got {[s.channels for s in input_shape]}"
            )
        if cfg.MODEL.FCOS.USE_DEFORMABLE:
            raise NotImplementedError(
                "MODEL.FCOS.USE_DEFORMABLE=True is not supported (it was broken in the original "
                "implementation, so no checkpoint uses it); set MODEL.FCOS.USE_DEFORMABLE to False"
            )
        return {
            "in_channels": channels.pop(),
            "num_classes": cfg.MODEL.FCOS.NUM_CLASSES,
            "num_levels": len(input_shape),
            "num_cls_convs": cfg.MODEL.FCOS.NUM_CLS_CONVS,
            "num_box_convs": cfg.MODEL.FCOS.NUM_BOX_CONVS,
            "num_share_convs": cfg.MODEL.FCOS.NUM_SHARE_CONVS,
            "norm": cfg.MODEL.FCOS.NORM,
            "prior_prob": cfg.MODEL.FCOS.PRIOR_PROB,
            "use_scale": cfg.MODEL.FCOS.USE_SCALE,
        }

    def forward(
        self, features: List[torch.Tensor]
    ) -> Tuple[List[torch.Tensor], List[torch.Tensor], List[torch.Tensor], List[torch.Tensor]]:
        """
        Args:
            features: per level (N, C, H_l, W_l).

        Returns:
            per-level lists of
            logits (N, num_classes, H_l, W_l), before sigmoid;
            bbox_reg (N, 4, H_l, W_l), (l, t, r, b) distances in units of the level stride;
            ctrness (N, 1, H_l, W_l), centerness logits;
            bbox_towers (N, C, H_l, W_l), the box-tower features.
        """
        if self.scales is not None and len(features) != len(self.scales):
            raise ValueError(
                f"The FCOS head was built for {len(self.scales)} levels, got {len(features)}"
            )
        logits, bbox_reg, ctrness, bbox_towers = [], [], [], []
        for level, feature in enumerate(features):
            feature = self.share_tower(feature)
            cls_feature = self.cls_tower(feature)
            box_feature = self.bbox_tower(feature)
            logits.append(self.cls_logits(cls_feature))
            ctrness.append(self.ctrness(box_feature))
            reg = self.bbox_pred(box_feature)
            if self.scales is not None:
                reg = self.scales[level](reg)
            bbox_reg.append(F.relu(reg))
            bbox_towers.append(box_feature)
        return logits, bbox_reg, ctrness, bbox_towers
