"""Backbones: VoVNetV2, MobileNetV2, the (FCOS-)FPN builders and the upsampling neck; importing
registers them."""

from .fpn import (  # noqa: F401
    LastLevelP6,
    SizeCheckedFPN,
    build_fcos_mobilenetv2_fpn_backbone,
    build_fcos_resnet_fpn_backbone,
    build_fcos_top_block,
    build_fcos_vovnet_fpn_backbone,
    build_mobilenetv2_fpn_backbone,
    build_vovnet_fpn_backbone,
)
from .mobilenet import MobileNetV2, build_mnv2_backbone  # noqa: F401
from .upsampling_neck import UpsamplingNeck, build_upsampling_neck_backbone  # noqa: F401
from .vovnet import VOVNET_SPECS, VoVNet, VoVNetSpec, build_vovnet_backbone  # noqa: F401
