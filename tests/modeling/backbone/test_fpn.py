"""FPN builders: P6/P7 top blocks, input-size check, MobileNetV2 and ResNet routing."""

import pytest
import torch
import torch.nn.functional as F
from detectron2.modeling import BACKBONE_REGISTRY, build_backbone
from detectron2.modeling.backbone.fpn import LastLevelMaxPool

import centermask  # noqa: F401  (registers the builders)
from centermask.modeling.backbone import MobileNetV2
from tests.support.helpers import CONFIGS, get_config

LITE_DW = CONFIGS / "centermask_lite_V_19_slim_dw_eSE_FPN_ms_4x.yaml"
MV2 = CONFIGS / "centermask_lite_Mv2_FPN_ms_4x.yaml"
R50 = CONFIGS / "centermask_R_50_FPN_ms_3x.yaml"

BUILDERS = [
    "build_vovnet_backbone",
    "build_vovnet_fpn_backbone",
    "build_fcos_vovnet_fpn_backbone",
    "build_mnv2_backbone",
    "build_mobilenetv2_fpn_backbone",
    "build_fcos_mobilenetv2_fpn_backbone",
    "build_fcos_resnet_fpn_backbone",
]


def test_builders_are_registered_under_the_original_names():
    assert all(name in BACKBONE_REGISTRY for name in BUILDERS)


def forward(backbone, height=128, width=160):
    with torch.no_grad():
        return backbone.eval()(torch.randn(1, 3, height, width))


@pytest.mark.parametrize(
    "levels,expected",
    [(2, ["p3", "p4", "p5", "p6", "p7"]), (1, ["p3", "p4", "p5", "p6"]), (0, ["p3", "p4", "p5"])],
)
def test_top_levels_select_the_extra_fpn_levels(levels, expected):
    backbone = build_backbone(get_config(LITE_DW, "MODEL.FCOS.TOP_LEVELS", str(levels)))
    outputs = forward(backbone)
    assert list(outputs) == expected == backbone._out_features
    assert {k.split(".")[1] for k in backbone.state_dict() if k.startswith("top_block.")} == {
        "p6",
        "p7",
    }.intersection(expected)
    assert (
        outputs[expected[-1]].shape[-2:] == {"p7": (1, 2), "p6": (2, 3), "p5": (4, 5)}[expected[-1]]
    )


def test_p6_p7_are_computed_from_fpn_p5():
    backbone = build_backbone(get_config(LITE_DW))
    outputs = forward(backbone)
    block = backbone.top_block
    assert block.in_feature == "p5"
    with torch.no_grad():
        p6 = block.p6(outputs["p5"])
        torch.testing.assert_close(outputs["p6"], p6)
        torch.testing.assert_close(outputs["p7"], block.p7(F.relu(p6)))


def test_unsupported_top_levels_is_a_config_error():
    with pytest.raises(ValueError, match=r"MODEL\.FCOS\.TOP_LEVELS=3"):
        build_backbone(get_config(LITE_DW, "MODEL.FCOS.TOP_LEVELS", "3"))


def test_inputs_not_divisible_by_32_get_a_clear_error():
    backbone = build_backbone(get_config(LITE_DW))
    assert backbone.size_divisibility == 32
    with pytest.raises(ValueError, match=r"divisible by 32, got 100x130.*size_divisibility"):
        forward(backbone, 100, 130)
    assert forward(backbone, 64, 96)["p3"].shape == (1, 128, 8, 12)


def test_plain_vovnet_fpn_uses_max_pool_p6():
    backbone = build_backbone(
        get_config(LITE_DW, "MODEL.BACKBONE.NAME", "build_vovnet_fpn_backbone")
    )
    assert isinstance(backbone.top_block, LastLevelMaxPool)
    assert list(forward(backbone)) == ["p3", "p4", "p5", "p6"]


def test_fpn_in_features_missing_from_the_bottom_up_is_a_config_error():
    cfg = get_config(LITE_DW, "MODEL.VOVNET.OUT_FEATURES", '["stage4", "stage5"]')
    with pytest.raises(
        ValueError, match=r"MODEL\.FPN\.IN_FEATURES.*stage3.*MODEL\.VOVNET\.OUT_FEATURES"
    ):
        build_backbone(cfg)


def test_mobilenetv2_fcos_fpn_outputs_and_strides():
    backbone = build_backbone(get_config(MV2))
    assert isinstance(backbone.bottom_up, MobileNetV2)
    shapes = backbone.bottom_up.output_shape()
    assert {k: (s.channels, s.stride) for k, s in shapes.items()} == {
        "res3": (32, 8),
        "res4": (96, 16),
        "res5": (320, 32),
    }
    outputs = forward(backbone)
    assert [o.shape[1:] for o in outputs.values()] == [
        (128, 16, 20),
        (128, 8, 10),
        (128, 4, 5),
        (128, 2, 3),
        (128, 1, 2),
    ]


def test_mobilenetv2_freeze_at_counts_feature_blocks():
    backbone = MobileNetV2(freeze_at=3, norm="BN")
    frozen = [not any(p.requires_grad for p in block.parameters()) for block in backbone.features]
    assert frozen == [True] * 3 + [False] * (len(backbone.features) - 3)


def test_mobilenet_flag_routes_the_resnet_builder_to_mobilenetv2():
    cfg = get_config(R50, "MODEL.MOBILENET", "True", "MODEL.FPN.OUT_CHANNELS", "128")
    with torch.device("meta"):
        backbone = build_backbone(cfg)
    assert isinstance(backbone.bottom_up, MobileNetV2)
    assert backbone.fpn_lateral5.weight.shape == (128, 320, 1, 1)
