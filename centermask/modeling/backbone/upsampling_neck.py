"""An upsampling neck: one fine feature map from a bottom-up network, for dense heads at a small
stride (CenterMask-PR's centre-heatmap detector at stride 4) without a whole FPN.

From the coarsest bottom-up feature down to the finest, each step upsamples the running sum by 2
(bilinear) and adds a 1x1 projection of the next finer feature; one 3x3 conv smooths the final
sum. Against an FPN's P2 it skips the P3-P6 output convs (which the heatmap detector does not
read) and can be narrower than the FPN, which is what costs most at stride 4.
"""

from typing import Dict, List

import fvcore.nn.weight_init as weight_init
import torch
from detectron2.layers import Conv2d, ShapeSpec, get_norm
from detectron2.modeling import BACKBONE_REGISTRY, Backbone
from torch import nn
from torch.nn import functional as F

__all__ = ["UpsamplingNeck", "build_upsampling_neck_backbone"]


def _conv_norm(in_channels: int, out_channels: int, kernel_size: int, norm: str) -> Conv2d:
    """A conv keeping the spatial size, with ``norm`` ("": none, and a bias instead)."""
    return Conv2d(
        in_channels,
        out_channels,
        kernel_size,
        padding=kernel_size // 2,
        bias=not norm,
        norm=get_norm(norm, out_channels),
    )


class UpsamplingNeck(Backbone):
    """bottom-up features ``in_features`` -> {"up<stride>": (N, out_channels, H/s, W/s)}, s being
    the stride of the finest in-feature."""

    def __init__(
        self,
        bottom_up: Backbone,
        in_features: List[str],
        out_channels: int,
        norm: str = "",
    ):
        """
        Args:
            bottom_up: a backbone returning ``in_features``.
            in_features: bottom-up features, strides doubling from one to the next (finest
                first, e.g. ["stage2", "stage3", "stage4", "stage5"]).
            out_channels: channels of the laterals and of the output.
            norm: detectron2 norm name for every conv ("" for none, with conv biases).
        """
        super().__init__()
        shapes = bottom_up.output_shape()
        strides = [shapes[name].stride for name in in_features]
        if any(coarse != 2 * fine for fine, coarse in zip(strides, strides[1:])):
            raise ValueError(
                f"MODEL.UPSAMPLING_NECK.IN_FEATURES={in_features} must go from fine to coarse "
                f"with strides doubling at each step, got strides {strides}"
            )
        self.bottom_up = bottom_up
        self.in_features = list(in_features)
        self.laterals = nn.ModuleList(
            _conv_norm(shapes[name].channels, out_channels, 1, norm) for name in in_features
        )
        self.output_conv = _conv_norm(out_channels, out_channels, 3, norm)
        for conv in (*self.laterals, self.output_conv):
            weight_init.c2_xavier_fill(conv)
        self.out_feature = f"up{strides[0]}"
        self._out_features = [self.out_feature]
        self._out_feature_channels = {self.out_feature: out_channels}
        self._out_feature_strides = {self.out_feature: strides[0]}
        self._size_divisibility = strides[-1]

    @property
    def size_divisibility(self) -> int:
        return self._size_divisibility

    def forward(self, x: torch.Tensor) -> Dict[str, torch.Tensor]:
        """(N, 3, H, W), H and W multiples of ``size_divisibility`` -> {out_feature: map}."""
        features = self.bottom_up(x)
        merged = self.laterals[-1](features[self.in_features[-1]])
        for name, lateral in zip(self.in_features[-2::-1], self.laterals[-2::-1]):
            finer = lateral(features[name])
            merged = finer + F.interpolate(
                merged, size=finer.shape[-2:], mode="bilinear", align_corners=False
            )
        return {self.out_feature: self.output_conv(merged)}


@BACKBONE_REGISTRY.register()
def build_upsampling_neck_backbone(cfg, input_shape: ShapeSpec) -> UpsamplingNeck:
    """``MODEL.UPSAMPLING_NECK.BOTTOM_UP`` (a registered bottom-up builder: VoVNet, MobileNetV2,
    ResNet) + :class:`UpsamplingNeck` over ``MODEL.UPSAMPLING_NECK.IN_FEATURES``."""
    neck = cfg.MODEL.UPSAMPLING_NECK
    try:
        build_bottom_up = BACKBONE_REGISTRY.get(neck.BOTTOM_UP)
    except KeyError:
        raise ValueError(
            f"MODEL.UPSAMPLING_NECK.BOTTOM_UP={neck.BOTTOM_UP!r} is not a registered backbone "
            "builder (e.g. build_vovnet_backbone, build_mnv2_backbone, build_resnet_backbone)"
        ) from None
    bottom_up = build_bottom_up(cfg, input_shape)
    available = bottom_up.output_shape()
    missing = [name for name in neck.IN_FEATURES if name not in available]
    if missing:
        raise ValueError(
            f"MODEL.UPSAMPLING_NECK.IN_FEATURES={list(neck.IN_FEATURES)} needs {missing}, but "
            f"{neck.BOTTOM_UP} returns only {sorted(available)}: add them to the bottom-up "
            "network's OUT_FEATURES (e.g. MODEL.VOVNET.OUT_FEATURES)"
        )
    return UpsamplingNeck(bottom_up, list(neck.IN_FEATURES), neck.OUT_CHANNELS, neck.NORM)
