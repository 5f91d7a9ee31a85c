"""Backbones: VoVNetV2, MobileNetV2, DLA-34 with its up-path, the (FCOS-)FPN builders and the
upsampling neck; importing registers them."""

from .dla import DLA, DLA_SPECS  # noqa: F401
from .dla_up import DLAUpBackbone, build_dla_backbone  # noqa: F401
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
