"""Models with deformable convolutions are refused by the ONNX export up front, naming the key."""

import pytest
from detectron2.modeling import build_model
from torch import nn
from torchvision.ops import DeformConv2d

from centermask.export.api import check_onnx_exportable, export_onnx
from tests.support.helpers import CONFIGS, get_config


def test_deformable_vovnet_export_names_the_config_key_and_the_alternatives(tmp_path):
    cfg = get_config(CONFIGS / "centermask_V_39_eSE_dcn_FPN_ms_3x.yaml")
    model = build_model(cfg)
    with pytest.raises(ValueError) as error:
        export_onnx(model, tmp_path, height=64, width=64)
    message = str(error.value)
    assert "MODEL.VOVNET.STAGE_WITH_DCN" in message
    assert "optimize_for_inference" in message and "TorchScript" in message
    assert not any(tmp_path.iterdir())  # refused before writing anything


class DLAUp(nn.Module):
    """Stands for a DLA deformable up-path (torchvision's module)."""

    def __init__(self):
        super().__init__()
        self.proj = DeformConv2d(4, 4, 3, padding=1)


class Keyed(nn.Module):
    deformable_config_key = "MODEL.SOMETHING.WITH_DCN"

    def __init__(self):
        super().__init__()
        self.up = DLAUp()


def test_the_key_comes_from_the_enclosing_module():
    with pytest.raises(ValueError, match=r"MODEL\.DLA"):
        check_onnx_exportable(nn.Sequential(nn.Conv2d(3, 4, 1), DLAUp()))
    # A module naming its own key wins over the class-name table.
    with pytest.raises(ValueError, match=r"from MODEL\.SOMETHING\.WITH_DCN: export"):
        check_onnx_exportable(nn.Sequential(Keyed()))


def test_the_same_backbone_without_dcn_passes_the_check():
    cfg = get_config(
        CONFIGS / "centermask_V_39_eSE_dcn_FPN_ms_3x.yaml",
        "MODEL.VOVNET.STAGE_WITH_DCN",
        "(False, False, False, False)",
    )
    check_onnx_exportable(build_model(cfg))  # raises on failure
