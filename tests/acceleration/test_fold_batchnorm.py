"""Folding FrozenBN into convs: same outputs (1e-5 relative) for every backbone layout."""

import copy

import pytest
import torch
from detectron2.layers import FrozenBatchNorm2d
from detectron2.modeling import build_backbone
from torch import nn

from centermask.acceleration.fold_batchnorm import fold_conv_batchnorm, fold_frozen_batchnorm
from centermask.modeling.backbone import VoVNet
from centermask.modeling.backbone.mobilenet import MobileNetV2
from centermask.utils.synthetic_weights import load_synthetic_weights
from tests.support.helpers import CONFIGS, get_config

R50 = CONFIGS / "centermask_R_50_FPN_ms_3x.yaml"


def frozen_norms(module: nn.Module) -> int:
    return sum(isinstance(m, FrozenBatchNorm2d) for m in module.modules())


def assert_folding_keeps_outputs(backbone: nn.Module, image: torch.Tensor):
    backbone = load_synthetic_weights(backbone.eval())
    folded = copy.deepcopy(backbone)
    count = fold_frozen_batchnorm(folded)
    assert count == frozen_norms(backbone) and frozen_norms(folded) == 0
    with torch.no_grad():
        expected, actual = backbone(image), folded(image)
    for name in expected:
        scale = expected[name].abs().max()
        assert (expected[name] - actual[name]).abs().max() <= 1e-5 * scale, name


@pytest.mark.parametrize("conv_body", ["V-19-slim-dw-eSE", "V-19-slim-eSE"])
def test_vovnet_conv_and_depthwise_units_fold(conv_body):
    backbone = VoVNet(conv_body=conv_body, out_features=["stage3", "stage4", "stage5"])
    assert_folding_keeps_outputs(backbone, torch.randn(1, 3, 64, 96) * 50)


def test_vovnet_deformable_units_fold():
    backbone = VoVNet(
        conv_body="V-19-slim-eSE",
        out_features=["stage4", "stage5"],
        stage_with_dcn=(False, False, True, True),
        with_modulated_dcn=True,
    )
    assert_folding_keeps_outputs(backbone, torch.randn(1, 3, 64, 64) * 50)


def test_mobilenetv2_blocks_fold():
    assert_folding_keeps_outputs(MobileNetV2(), torch.randn(1, 3, 64, 96) * 50)


def test_resnet_detectron2_convs_with_norm_fold():
    cfg = get_config(R50, "MODEL.RESNETS.DEPTH", "50")
    backbone = build_backbone(cfg).bottom_up
    assert_folding_keeps_outputs(backbone, torch.randn(1, 3, 64, 64) * 50)


def test_training_mode_batchnorm_is_left_alone():
    model = nn.Sequential(nn.Conv2d(3, 8, 3), nn.BatchNorm2d(8), nn.ReLU())
    assert fold_frozen_batchnorm(model.train()) == 0
    assert fold_frozen_batchnorm(model.eval()) == 1
    assert isinstance(model[1], nn.Identity) and model[0].bias is not None


def test_norm_after_an_activation_is_not_folded():
    model = nn.Sequential(nn.Conv2d(3, 8, 3), nn.ReLU(), FrozenBatchNorm2d(8))
    assert fold_frozen_batchnorm(model) == 0


def test_channel_mismatch_is_reported():
    with pytest.raises(ValueError, match="4 output channels"):
        fold_conv_batchnorm(nn.Conv2d(3, 4, 1), FrozenBatchNorm2d(5))
