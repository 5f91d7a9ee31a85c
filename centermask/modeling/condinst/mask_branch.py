"""CondInst's mask branch: FPN levels fused into a few shared mask-feature channels at stride 8,
plus the optional semantic head that adds an auxiliary loss in training."""

import math
from typing import Dict, List, Optional, Sequence, Tuple

import torch
from detectron2.config import configurable
from detectron2.layers import ShapeSpec, get_norm
from detectron2.structures import Instances
from torch import nn

from centermask.layers.aligned_bilinear import aligned_bilinear

from .losses import semantic_focal_loss
from .targets import semantic_targets

__all__ = ["MaskBranch"]


def _conv_norm_relu(in_channels: int, out_channels: int, norm: str) -> nn.Sequential:
    """3x3 conv (bias only without norm) -> norm -> ReLU; indices 0 and 1 are checkpoint keys."""
    use_norm = norm not in ("", "none", None)
    conv = nn.Conv2d(in_channels, out_channels, kernel_size=3, padding=1, bias=not use_norm)
    nn.init.kaiming_uniform_(conv.weight, a=1)
    if conv.bias is not None:
        nn.init.constant_(conv.bias, 0.0)
    layers = [conv]
    if use_norm:
        layers.append(get_norm(norm, out_channels))
    layers.append(nn.ReLU(inplace=True))
    return nn.Sequential(*layers)


class MaskBranch(nn.Module):
    """Mask features (N, out_channels, H/s, W/s), s = the stride of the first input feature.

    Each input level is refined by its own conv block, upsampled with :func:`aligned_bilinear`
    to the first level's size and summed; a tower of conv blocks and a 1x1 conv then give the
    mask features. With ``semantic_loss_on``, a separate head on the first level predicts
    per-pixel classes in training (``loss_sem``); it never runs at inference.
    """

    @configurable
    def __init__(
        self,
        *,
        input_shape: Dict[str, ShapeSpec],
        in_features: Sequence[str] = ("p3", "p4", "p5"),
        channels: int = 128,
        out_channels: int = 8,
        num_convs: int = 4,
        norm: str = "BN",
        semantic_loss_on: bool = False,
        num_classes: int = 80,
        prior_prob: float = 0.01,
        focal_alpha: float = 0.25,
        focal_gamma: float = 2.0,
    ):
        """
        Args:
            input_shape: backbone output shapes by name.
            in_features: fused levels, finest first (it sets the output stride).
            channels: width of the refine blocks and the tower.
            out_channels: mask feature channels.
            num_convs: conv blocks in the tower.
            norm: detectron2 norm name ("BN", "GN", "SyncBN", ...) or "none".
            semantic_loss_on: add the semantic head and ``loss_sem``.
            num_classes, prior_prob, focal_alpha, focal_gamma: semantic head and its loss.
        """
        super().__init__()
        missing = [f for f in in_features if f not in input_shape]
        if missing:
            raise ValueError(
                f"MODEL.CONDINST.MASK_BRANCH.IN_FEATURES {list(in_features)} asks for {missing}, "
                f"but the backbone only outputs {sorted(input_shape)}"
            )
        if out_channels < 1:
            raise ValueError(
                f"MODEL.CONDINST.MASK_BRANCH.OUT_CHANNELS must be at least 1, got {out_channels}"
            )
        self.in_features = list(in_features)
        self.out_stride = input_shape[self.in_features[0]].stride
        self.refine = nn.ModuleList(
            [_conv_norm_relu(input_shape[f].channels, channels, norm) for f in self.in_features]
        )
        tower = [_conv_norm_relu(channels, channels, norm) for _ in range(num_convs)]
        tower.append(nn.Conv2d(channels, out_channels, kernel_size=1))
        self.tower = nn.Sequential(*tower)
        self.semantic_loss_on = semantic_loss_on
        self.focal_alpha, self.focal_gamma = focal_alpha, focal_gamma
        if semantic_loss_on:
            in_channels = input_shape[self.in_features[0]].channels
            self.seg_head = nn.Sequential(
                _conv_norm_relu(in_channels, channels, norm),
                _conv_norm_relu(channels, channels, norm),
            )
            self.logits = nn.Conv2d(channels, num_classes, kernel_size=1)
            nn.init.normal_(self.logits.weight, std=0.01)
            nn.init.constant_(self.logits.bias, -math.log((1 - prior_prob) / prior_prob))

    @classmethod
    def from_config(cls, cfg, input_shape: Dict[str, ShapeSpec]):
        branch = cfg.MODEL.CONDINST.MASK_BRANCH
        return {
            "input_shape": input_shape,
            "in_features": list(branch.IN_FEATURES),
            "channels": branch.CHANNELS,
            "out_channels": branch.OUT_CHANNELS,
            "num_convs": branch.NUM_CONVS,
            "norm": branch.NORM,
            "semantic_loss_on": branch.SEMANTIC_LOSS_ON,
            "num_classes": cfg.MODEL.FCOS.NUM_CLASSES,
            "prior_prob": cfg.MODEL.FCOS.PRIOR_PROB,
            "focal_alpha": cfg.MODEL.FCOS.LOSS_ALPHA,
            "focal_gamma": cfg.MODEL.FCOS.LOSS_GAMMA,
        }

    def fuse(self, features: Dict[str, torch.Tensor]) -> torch.Tensor:
        """(N, out_channels, H_0, W_0) mask features from the input levels."""
        levels = [features[f] for f in self.in_features]
        fused = self.refine[0](levels[0])
        target_h, target_w = fused.shape[2:]
        for refine, level in zip(self.refine[1:], levels[1:]):
            refined = refine(level)
            h, w = refined.shape[2:]
            factor_h, factor_w = target_h // h, target_w // w
            if factor_h != factor_w or factor_h * h != target_h or factor_w * w != target_w:
                raise ValueError(
                    f"Mask branch: a {h}x{w} level does not upsample by one integer factor to the "
                    f"finest level's {target_h}x{target_w} (pad images to a multiple of the "
                    "coarsest stride)"
                )
            fused = fused + aligned_bilinear(refined, factor_h)
        return self.tower(fused)

    def forward(
        self, features: Dict[str, torch.Tensor], gt_instances: Optional[List[Instances]] = None
    ) -> Tuple[torch.Tensor, Dict[str, torch.Tensor]]:
        """Mask features and, in training with the semantic head, ``{"loss_sem": ...}``.

        ``gt_instances`` need ``gt_bitmasks_full`` and ``gt_classes`` for the semantic loss.
        """
        mask_feats = self.fuse(features)
        losses = {}
        if self.training and self.semantic_loss_on:
            if gt_instances is None:
                raise ValueError("The semantic head needs gt_instances in training mode")
            logits = self.logits(self.seg_head(features[self.in_features[0]]))
            targets = semantic_targets(gt_instances, self.out_stride)
            losses["loss_sem"] = semantic_focal_loss(
                logits, targets, alpha=self.focal_alpha, gamma=self.focal_gamma
            )
        return mask_feats, losses
