"""FPN backbones of CenterMask: VoVNet / MobileNetV2 / ResNet + detectron2's FPN.

The FCOS variants add P6 (and P7) computed from the FPN output P5 (not from C5):
P6 = conv3x3/s2(P5), P7 = conv3x3/s2(ReLU(P6)).
"""

import math
from typing import Dict, Optional

import fvcore.nn.weight_init as weight_init
import torch
from detectron2.layers import ShapeSpec
from detectron2.modeling import BACKBONE_REGISTRY, Backbone
from detectron2.modeling.backbone.fpn import FPN, LastLevelMaxPool, LastLevelP6P7
from detectron2.modeling.backbone.resnet import build_resnet_backbone
from torch import nn

from .mobilenet import build_mnv2_backbone
from .vovnet import build_vovnet_backbone

__all__ = [
    "LastLevelP6",
    "SizeCheckedFPN",
    "build_fcos_top_block",
    "build_fpn",
    "build_vovnet_fpn_backbone",
    "build_fcos_vovnet_fpn_backbone",
    "build_mobilenetv2_fpn_backbone",
    "build_fcos_mobilenetv2_fpn_backbone",
    "build_fcos_resnet_fpn_backbone",
]


class SizeCheckedFPN(FPN):
    """detectron2's FPN that rejects inputs whose sides are not multiples of its stride.

    Otherwise such inputs fail with a shape mismatch in the top-down sum: the bottom-up networks
    round odd sizes up (ceil-mode pooling / padded stride-2 convs) while the FPN upsamples by 2.
    """

    def forward(self, x: torch.Tensor) -> Dict[str, torch.Tensor]:
        """(N, C, H, W) with H, W multiples of ``size_divisibility`` -> {p<k>: (N, C_fpn, ...)}."""
        divisor = self.size_divisibility
        if divisor > 1 and not (torch.jit.is_tracing() or torch.jit.is_scripting()):
            height, width = int(x.shape[-2]), int(x.shape[-1])
            if height % divisor or width % divisor:
                raise ValueError(
                    f"the FPN backbone needs input sides divisible by {divisor}, got "
                    f"{height}x{width}. Pad the images (detectron2's ImageList.from_tensors with "
                    f"the backbone's size_divisibility={divisor} does this in the model)."
                )
        return super().forward(x)


class LastLevelP6(nn.Module):
    """One extra level: P6 = conv3x3/s2 (with bias) of ``in_feature``."""

    def __init__(self, in_channels: int, out_channels: int, in_feature: str = "p5"):
        super().__init__()
        self.num_levels = 1
        self.in_feature = in_feature
        self.p6 = nn.Conv2d(in_channels, out_channels, 3, 2, 1)
        weight_init.c2_xavier_fill(self.p6)

    def forward(self, x: torch.Tensor):
        """(N, C_in, H, W) -> [P6 (N, C_out, ceil(H/2), ceil(W/2))]."""
        return [self.p6(x)]


def _last_fpn_level(cfg, bottom_up: Backbone) -> str:
    """Name of the coarsest FPN output, e.g. "p5" for in-features stage3..stage5."""
    shapes = bottom_up.output_shape()
    # Missing in-features are reported by build_fpn; fall back to the usual P5 here.
    strides = [shapes[f].stride for f in cfg.MODEL.FPN.IN_FEATURES if f in shapes] or [32]
    return f"p{int(math.log2(max(strides)))}"


def build_fcos_top_block(cfg, bottom_up: Backbone) -> Optional[nn.Module]:
    """P6/P7 (TOP_LEVELS 2), P6 (1) or nothing (0) on top of the FPN output P5."""
    levels = cfg.MODEL.FCOS.TOP_LEVELS
    channels = cfg.MODEL.FPN.OUT_CHANNELS
    in_feature = _last_fpn_level(cfg, bottom_up)
    if levels == 2:
        return LastLevelP6P7(channels, channels, in_feature=in_feature)
    if levels == 1:
        return LastLevelP6(channels, channels, in_feature=in_feature)
    if levels == 0:
        return None
    raise ValueError(
        f"MODEL.FCOS.TOP_LEVELS={levels!r} is not supported: use 2 (P6 and P7), 1 (P6 only) or "
        "0 (no extra level), and list the resulting levels in MODEL.FCOS.IN_FEATURES"
    )


def build_fpn(
    cfg, bottom_up: Backbone, top_block: Optional[nn.Module], out_features_key: str
) -> SizeCheckedFPN:
    """detectron2 FPN over ``MODEL.FPN.IN_FEATURES`` of ``bottom_up``.

    ``out_features_key`` names the config key that lists the bottom-up outputs, for the error
    raised when the FPN asks for a feature the bottom-up network does not return.
    """
    in_features = list(cfg.MODEL.FPN.IN_FEATURES)
    available = bottom_up.output_shape()
    missing = [f for f in in_features if f not in available]
    if missing:
        raise ValueError(
            f"MODEL.FPN.IN_FEATURES={in_features} needs {missing}, but the "
            f"{type(bottom_up).__name__} backbone only returns {list(available)}: add them to "
            f"{out_features_key}"
        )
    return SizeCheckedFPN(
        bottom_up=bottom_up,
        in_features=in_features,
        out_channels=cfg.MODEL.FPN.OUT_CHANNELS,
        norm=cfg.MODEL.FPN.NORM,
        top_block=top_block,
        fuse_type=cfg.MODEL.FPN.FUSE_TYPE,
    )


_VOVNET_KEY = "MODEL.VOVNET.OUT_FEATURES"
_RESNETS_KEY = "MODEL.RESNETS.OUT_FEATURES"


@BACKBONE_REGISTRY.register()
def build_vovnet_fpn_backbone(cfg, input_shape: ShapeSpec) -> SizeCheckedFPN:
    """VoVNet + FPN + max-pooled P6 (as in Mask R-CNN)."""
    bottom_up = build_vovnet_backbone(cfg, input_shape)
    return build_fpn(cfg, bottom_up, LastLevelMaxPool(), _VOVNET_KEY)


@BACKBONE_REGISTRY.register()
def build_fcos_vovnet_fpn_backbone(cfg, input_shape: ShapeSpec) -> SizeCheckedFPN:
    """VoVNet + FPN + P6/P7 from P5 (``MODEL.FCOS.TOP_LEVELS``)."""
    bottom_up = build_vovnet_backbone(cfg, input_shape)
    return build_fpn(cfg, bottom_up, build_fcos_top_block(cfg, bottom_up), _VOVNET_KEY)


@BACKBONE_REGISTRY.register()
def build_mobilenetv2_fpn_backbone(cfg, input_shape: ShapeSpec) -> SizeCheckedFPN:
    """MobileNetV2 + FPN + max-pooled P6."""
    bottom_up = build_mnv2_backbone(cfg, input_shape)
    return build_fpn(cfg, bottom_up, LastLevelMaxPool(), _RESNETS_KEY)


@BACKBONE_REGISTRY.register()
def build_fcos_mobilenetv2_fpn_backbone(cfg, input_shape: ShapeSpec) -> SizeCheckedFPN:
    """MobileNetV2 + FPN + P6/P7 from P5."""
    bottom_up = build_mnv2_backbone(cfg, input_shape)
    return build_fpn(cfg, bottom_up, build_fcos_top_block(cfg, bottom_up), _RESNETS_KEY)


@BACKBONE_REGISTRY.register()
def build_fcos_resnet_fpn_backbone(cfg, input_shape: ShapeSpec) -> SizeCheckedFPN:
    """ResNet/ResNeXt (or MobileNetV2 when ``MODEL.MOBILENET``) + FPN + P6/P7 from P5."""
    if cfg.MODEL.MOBILENET:
        bottom_up = build_mnv2_backbone(cfg, input_shape)
    else:
        bottom_up = build_resnet_backbone(cfg, input_shape)
    return build_fpn(cfg, bottom_up, build_fcos_top_block(cfg, bottom_up), _RESNETS_KEY)
