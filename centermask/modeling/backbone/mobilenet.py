"""MobileNetV2 (width 1.0, no final 1x1 conv) backbone with the CenterMask-Lite checkpoint layout.

``features`` is a ModuleList: ``features.0`` is a 3x3 stride-2 conv unit and ``features.1..17``
are inverted residual blocks; ``res2..res5`` are the outputs of blocks 3, 6, 13 and 17.
"""

import math
from typing import Dict, List, Optional, Sequence, Tuple

import torch
from detectron2.config import configurable
from detectron2.layers import FrozenBatchNorm2d, ShapeSpec
from detectron2.modeling import BACKBONE_REGISTRY, Backbone
from torch import nn

from centermask.layers.norm import NormSpec, check_norm, make_norm

__all__ = ["InvertedResidual", "MobileNetV2", "build_mnv2_backbone"]

# (expansion t, output channels c, repeats n, first stride s) of the inverted residual groups.
INVERTED_RESIDUAL_SETTINGS: Tuple[Tuple[int, int, int, int], ...] = (
    (1, 16, 1, 1),
    (6, 24, 2, 2),
    (6, 32, 3, 2),
    (6, 64, 4, 2),
    (6, 96, 3, 1),
    (6, 160, 3, 2),
    (6, 320, 1, 1),
)
STEM_CHANNELS = 32
# feature name -> index in ``features`` of the block that produces it
RETURN_LAYERS = {"res2": 3, "res3": 6, "res4": 13, "res5": 17}


class InvertedResidual(nn.Module):
    """[1x1 expand -> norm -> ReLU6] -> 3x3 depthwise (stride) -> norm -> ReLU6 -> 1x1 -> norm.

    The expansion conv is omitted when ``expand_ratio == 1``; the input is added back when the
    block keeps both resolution and width.
    """

    def __init__(
        self, in_channels: int, out_channels: int, stride: int, expand_ratio: int, norm: NormSpec
    ):
        super().__init__()
        hidden = int(round(in_channels * expand_ratio))
        self.use_residual = stride == 1 and in_channels == out_channels
        layers: List[nn.Module] = []
        if expand_ratio != 1:
            layers += [
                nn.Conv2d(in_channels, hidden, 1, 1, 0, bias=False),
                make_norm(norm, hidden),
                nn.ReLU6(inplace=True),
            ]
        layers += [
            nn.Conv2d(hidden, hidden, 3, stride, 1, groups=hidden, bias=False),
            make_norm(norm, hidden),
            nn.ReLU6(inplace=True),
            nn.Conv2d(hidden, out_channels, 1, 1, 0, bias=False),
            make_norm(norm, out_channels),
        ]
        self.conv = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(N, C_in, H, W) -> (N, C_out, ceil(H / stride), ceil(W / stride))."""
        y = self.conv(x)
        return x + y if self.use_residual else y


class MobileNetV2(Backbone):
    """MobileNetV2 feature extractor returning ``res2``..``res5`` (24/32/96/320 channels,
    strides 4/8/16/32)."""

    @configurable
    def __init__(
        self,
        *,
        out_features: Sequence[str] = ("res2", "res3", "res4", "res5"),
        norm: NormSpec = "FrozenBN",
        freeze_at: int = 0,
        in_channels: int = 3,
    ):
        """
        Args:
            out_features: subset of res2..res5.
            norm: norm of every conv (the original hard-codes FrozenBN).
            freeze_at: freeze ``features[0..freeze_at-1]`` (block indices, as in the original).
            in_channels: channels of the input image.
        """
        super().__init__()
        unknown = [f for f in out_features if f not in RETURN_LAYERS]
        if unknown or not out_features:
            raise ValueError(
                f"MODEL.RESNETS.OUT_FEATURES={list(out_features)} must be a non-empty subset of "
                f"{list(RETURN_LAYERS)} for MobileNetV2"
            )
        widths = [STEM_CHANNELS] + [c for _, c, _, _ in INVERTED_RESIDUAL_SETTINGS]
        check_norm(norm, widths, setting="MODEL.RESNETS.NORM")

        features: List[nn.Module] = [
            nn.Sequential(
                nn.Conv2d(in_channels, STEM_CHANNELS, 3, 2, 1, bias=False),
                make_norm(norm, STEM_CHANNELS),
                nn.ReLU6(inplace=True),
            )
        ]
        channels, stride = [STEM_CHANNELS], [2]
        for expand_ratio, out_channels, repeats, first_stride in INVERTED_RESIDUAL_SETTINGS:
            for i in range(repeats):
                block_stride = first_stride if i == 0 else 1
                features.append(
                    InvertedResidual(channels[-1], out_channels, block_stride, expand_ratio, norm)
                )
                channels.append(out_channels)
                stride.append(stride[-1] * block_stride)
        self.features = nn.ModuleList(features)
        if not 0 <= freeze_at <= len(self.features):
            raise ValueError(
                f"MODEL.BACKBONE.FREEZE_AT={freeze_at} must be in 0..{len(self.features)} for "
                "MobileNetV2 (the number of leading blocks of `features` to freeze)"
            )

        self._out_features = list(out_features)
        self._out_feature_channels = {f: channels[RETURN_LAYERS[f]] for f in out_features}
        self._out_feature_strides = {f: stride[RETURN_LAYERS[f]] for f in out_features}
        self._in_channels = in_channels
        self._last_index = max(RETURN_LAYERS[f] for f in out_features)
        self._initialize_weights()
        self.freeze(freeze_at)

    @classmethod
    def from_config(cls, cfg, input_shape: Optional[ShapeSpec] = None):
        return {
            "out_features": cfg.MODEL.RESNETS.OUT_FEATURES,
            "norm": cfg.MODEL.RESNETS.NORM,
            "freeze_at": cfg.MODEL.BACKBONE.FREEZE_AT,
            "in_channels": input_shape.channels if input_shape is not None else 3,
        }

    def _initialize_weights(self) -> None:
        # He init for training from scratch; pretrained weights overwrite it.
        for module in self.modules():
            if isinstance(module, nn.Conv2d):
                fan_out = module.kernel_size[0] * module.kernel_size[1] * module.out_channels
                nn.init.normal_(module.weight, 0.0, math.sqrt(2.0 / fan_out))

    def freeze(self, freeze_at: int = 0) -> "MobileNetV2":
        """Freeze ``features[0..freeze_at-1]``: no gradients, BatchNorms become FrozenBN."""
        for i in range(freeze_at):
            block = FrozenBatchNorm2d.convert_frozen_batchnorm(self.features[i])
            for p in block.parameters():
                p.requires_grad_(False)
            self.features[i] = block
        return self

    def forward(self, x: torch.Tensor) -> Dict[str, torch.Tensor]:
        """(N, in_channels, H, W) -> {res_k: (N, C_k, H / s_k, W / s_k) rounded up}."""
        if x.dim() != 4 or x.shape[1] != self._in_channels:
            raise ValueError(
                f"MobileNetV2 takes (N, {self._in_channels}, H, W) inputs, got {tuple(x.shape)}"
            )
        wanted = {RETURN_LAYERS[f]: f for f in self._out_features}
        outputs = {}
        for index, block in enumerate(self.features[: self._last_index + 1]):
            x = block(x)
            if index in wanted:
                outputs[wanted[index]] = x
        return outputs

    def output_shape(self) -> Dict[str, ShapeSpec]:
        return {
            f: ShapeSpec(
                channels=self._out_feature_channels[f], stride=self._out_feature_strides[f]
            )
            for f in self._out_features
        }


@BACKBONE_REGISTRY.register()
def build_mnv2_backbone(cfg, input_shape: ShapeSpec) -> MobileNetV2:
    """MobileNetV2 from ``MODEL.RESNETS.{OUT_FEATURES,NORM}`` and ``MODEL.BACKBONE.FREEZE_AT``."""
    return MobileNetV2(cfg, input_shape)
