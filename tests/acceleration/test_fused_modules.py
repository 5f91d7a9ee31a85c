"""Inference-only fused modules compute what the modules they replace compute."""

import copy

import pytest
import torch
from detectron2.layers import Conv2d as D2Conv2d
from torch import nn

from centermask.acceleration.fold_batchnorm import fold_frozen_batchnorm
from centermask.acceleration.fused_modules import (
    ClassSelectedMaskPredictor,
    FusedFCOSHead,
    fuse_conv_activations,
    fused_conv_available,
)
from centermask.modeling.backbone.mobilenet import MobileNetV2
from centermask.modeling.backbone.vovnet import VoVNet
from centermask.modeling.fcos import FCOSHead
from centermask.utils.synthetic_weights import load_synthetic_weights


def close(expected, actual, rel=1e-5):
    return (expected - actual).abs().max() <= rel * expected.abs().max()


@pytest.mark.parametrize("norm, convs", [("GN", 2), ("GN", 4), ("none", 2)])
def test_fused_fcos_head_matches_the_two_towers(norm, convs):
    head = FCOSHead(
        in_channels=64,
        num_classes=7,
        num_levels=3,
        num_cls_convs=convs,
        num_box_convs=convs,
        norm=norm,
    )
    head = load_synthetic_weights(head).eval()
    fused = FusedFCOSHead.from_head(head)
    features = [torch.randn(2, 64, s, s + 3) for s in (16, 8, 4)]
    with torch.no_grad():
        expected, actual = head(features), fused(features)
    for kind in range(4):
        for e, a in zip(expected[kind], actual[kind]):
            assert e.shape == a.shape and close(e, a), kind


def test_heads_with_different_tower_depths_are_not_fused():
    head = FCOSHead(in_channels=64, num_classes=3, num_levels=1, num_cls_convs=2, num_box_convs=3)
    assert FusedFCOSHead.from_head(head) is None


@pytest.mark.skipif(not fused_conv_available(), reason="no oneDNN fused conv in this build")
@pytest.mark.parametrize("backbone", ["vovnet", "mobilenet"])
def test_conv_activation_fusion_keeps_backbone_outputs(backbone):
    if backbone == "vovnet":
        model = VoVNet(conv_body="V-19-slim-dw-eSE", out_features=["stage3", "stage5"])
    else:
        model = MobileNetV2()
    model = load_synthetic_weights(model).eval()
    fold_frozen_batchnorm(model)
    fused = copy.deepcopy(model)
    assert fuse_conv_activations(fused) > 10
    image = torch.randn(1, 3, 64, 96) * 50
    for layout in (torch.contiguous_format, torch.channels_last):
        with torch.no_grad():
            expected = model(image.contiguous(memory_format=layout))
            actual = fused(image.contiguous(memory_format=layout))
        assert all(close(expected[k], actual[k]) for k in expected)


@pytest.mark.skipif(not fused_conv_available(), reason="no oneDNN fused conv in this build")
def test_detectron2_conv_with_relu_is_fused_in_place_and_handles_empty_batches():
    conv = D2Conv2d(4, 6, 3, padding=1, activation=nn.ReLU())
    holder = [conv]  # heads keep such lists; fusion must not replace the object
    reference = copy.deepcopy(conv)
    assert fuse_conv_activations(nn.ModuleList(holder)) == 1 and holder[0] is conv
    x = torch.randn(3, 4, 7, 7)
    with torch.no_grad():
        assert torch.allclose(conv(x), reference(x), atol=1e-6)
        assert conv(x[:0]).shape == (0, 6, 7, 7)


def test_class_selected_predictor_picks_each_rois_class():
    predictor = nn.Conv2d(16, 5, 1)
    selected = ClassSelectedMaskPredictor(predictor)
    x, classes = torch.randn(4, 16, 6, 6), torch.tensor([3, 0, 4, 3])
    with torch.no_grad():
        expected = predictor(x)[torch.arange(4), classes][:, None]
        assert close(expected, selected(x, classes))
        assert selected(x[:0], classes[:0]).shape == (0, 1, 6, 6)
        agnostic = ClassSelectedMaskPredictor(nn.Conv2d(16, 1, 1))
        assert agnostic(x, classes).shape == (4, 1, 6, 6)
