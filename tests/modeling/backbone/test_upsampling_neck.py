"""The upsampling neck: one stride-4 map from a bottom-up network (CenterMask-PR without an FPN)."""

import pytest
import torch
from detectron2.layers import ShapeSpec
from detectron2.modeling import Backbone, build_model

from centermask.modeling.backbone import UpsamplingNeck
from tests.support.helpers import ROOT, get_config

NECK_CONFIG = ROOT / "configs/centermask_pr/centermask_pr_lite_V_19_slim_dw_eSE_neck_ms_4x.yaml"
QUICK = ["MODEL.WEIGHTS", "", "MODEL.FCOS.NUM_CLASSES", "3", "MODEL.ROI_HEADS.NUM_CLASSES", "3"]
QUICK += ["MODEL.CENTERMASK_PR.HEAD_CHANNELS", "8", "MODEL.CENTERMASK_PR.SHAPE_SIZE", "8"]
QUICK += ["MODEL.UPSAMPLING_NECK.OUT_CHANNELS", "16", "MODEL.VOVNET.NORM", "BN"]


class _FixedFeatures(Backbone):
    """A bottom-up stand-in returning given maps at strides 4 and 8."""

    def __init__(self, c4: torch.Tensor, c8: torch.Tensor):
        super().__init__()
        self.maps = {"c4": c4, "c8": c8}

    def output_shape(self):
        return {
            "c4": ShapeSpec(channels=self.maps["c4"].shape[1], stride=4),
            "c8": ShapeSpec(channels=self.maps["c8"].shape[1], stride=8),
        }

    def forward(self, x):
        return dict(self.maps)


def test_neck_output_is_lateral_plus_bilinear_upsampled_coarser_level():
    c4 = torch.zeros(1, 1, 2, 4)
    c4[0, 0, 1] = torch.tensor([10.0, 20.0, 30.0, 40.0])
    c8 = torch.tensor([[[[0.0, 4.0]]]])
    neck = UpsamplingNeck(_FixedFeatures(c4, c8), ["c4", "c8"], out_channels=1)
    with torch.no_grad():
        for conv in neck.laterals:  # identity 1x1 laterals
            conv.weight.fill_(1.0)
            conv.bias.zero_()
        neck.output_conv.weight.zero_()  # identity 3x3 (centre tap only)
        neck.output_conv.weight[0, 0, 1, 1] = 1.0
        neck.output_conv.bias.zero_()
        out = neck(torch.zeros(1, 3, 8, 16))
    # Bilinear x2 (half-pixel centres) of [0, 4]: output columns read input x = -0.25, 0.25,
    # 0.75, 1.25, clamped to [0, 1] -> 0, 1, 3, 4; both output rows read the single input row.
    expected = torch.tensor([[0.0, 1.0, 3.0, 4.0], [10.0, 21.0, 33.0, 44.0]])
    assert list(out) == ["up4"]
    torch.testing.assert_close(out["up4"][0, 0], expected)
    assert neck.output_shape()["up4"].stride == 4
    assert neck.size_divisibility == 8


def test_neck_rejects_features_whose_strides_do_not_double():
    features = _FixedFeatures(torch.zeros(1, 1, 2, 2), torch.zeros(1, 1, 1, 1))
    with pytest.raises(ValueError, match="MODEL.UPSAMPLING_NECK.IN_FEATURES"):
        UpsamplingNeck(features, ["c8", "c4"], out_channels=4)


@pytest.mark.parametrize(
    "key, value, message",
    [
        ("MODEL.UPSAMPLING_NECK.BOTTOM_UP", "build_nothing", "not a registered backbone builder"),
        ("MODEL.VOVNET.OUT_FEATURES", '["stage3", "stage4", "stage5"]', "needs \\['stage2'\\]"),
    ],
)
def test_neck_config_errors_name_the_key(key, value, message):
    with pytest.raises(ValueError, match=message):
        build_model(get_config(NECK_CONFIG, *QUICK, key, value))


def test_centermask_pr_on_the_neck_trains_and_predicts_full_size_masks():
    model = build_model(get_config(NECK_CONFIG, *QUICK))
    assert type(model.backbone).__name__ == "UpsamplingNeck"
    assert model.detector.stride == 4 and model.mask_head.saliency_stride == 4
    from detectron2.structures import BitMasks, Boxes, Instances

    inst = Instances((64, 96))
    inst.gt_boxes = Boxes(torch.tensor([[8.0, 8.0, 40.0, 48.0]]))
    inst.gt_classes = torch.tensor([1])
    mask = torch.zeros(1, 64, 96, dtype=torch.bool)
    mask[0, 10:46, 10:38] = True
    inst.gt_masks = BitMasks(mask)
    model.train()
    losses = model([{"image": torch.rand(3, 64, 96) * 255, "instances": inst}])
    sum(losses.values()).backward()
    assert all(torch.isfinite(v) for v in losses.values())
    assert model.backbone.output_conv.weight.grad.abs().sum() > 0
    model.eval()
    with torch.no_grad():
        out = model([{"image": torch.rand(3, 64, 96) * 255, "height": 32, "width": 48}])
    assert out[0]["instances"].pred_masks.shape[1:] == (32, 48)
