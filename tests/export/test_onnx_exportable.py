"""Models with deformable convolutions are refused by the ONNX export up front, naming the key
and the ways to deploy them."""

import pytest
from detectron2.modeling import build_model
from torch import nn
from torchvision.ops import DeformConv2d

from centermask.export.api import export_onnx
from centermask.export.common import check_no_deformable_convs
from tests.support.helpers import CONFIGS, get_config


def test_deformable_vovnet_export_names_the_config_key_and_the_alternatives(tmp_path):
    cfg = get_config(CONFIGS / "centermask_V_39_eSE_dcn_FPN_ms_3x.yaml")
    with pytest.raises(ValueError) as error:
        export_onnx(build_model(cfg), tmp_path, height=64, width=64)
    message = str(error.value)
    assert "MODEL.VOVNET.STAGE_WITH_DCN" in message
    assert "optimize_for_inference" in message and "TorchScript" in message
    assert not list(tmp_path.glob("*.onnx"))  # refused before tracing


def test_torchvisions_deformable_module_is_refused_too():
    with pytest.raises(ValueError, match="deform_conv2d.*'1'"):
        check_no_deformable_convs(nn.Sequential(nn.Conv2d(3, 4, 1), DeformConv2d(4, 4, 3)))


def test_the_same_backbone_without_dcn_passes_the_check():
    cfg = get_config(
        CONFIGS / "centermask_V_39_eSE_dcn_FPN_ms_3x.yaml",
        "MODEL.VOVNET.STAGE_WITH_DCN",
        "(False, False, False, False)",
    )
    check_no_deformable_convs(build_model(cfg))  # raises on failure
