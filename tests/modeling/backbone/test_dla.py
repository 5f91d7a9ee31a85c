"""DLA-34 and its up-path: timm's ``dla34`` weights load strictly and give timm's features;
forward and backward with and without the deformable up-path; the up-path's building blocks."""

import runpy

import pytest
import torch
from torch.nn import functional as F

from centermask.checkpoint import CenterMaskCheckpointer
from centermask.config import get_cfg
from centermask.modeling.backbone.dla import DLA, DLA_SPECS, imagenet_dla_state_dict
from centermask.modeling.backbone.dla_up import (
    DLAUpBackbone,
    IDAUp,
    ModulatedDeformConv3x3,
    build_dla_backbone,
)
from tests.support.helpers import ROOT

timm = pytest.importorskip("timm")

pytestmark = pytest.mark.usefixtures("one_thread")


def _timm_dla34():
    torch.manual_seed(0)
    model = timm.create_model("dla34", pretrained=False).eval()
    # Non-trivial BN statistics, so a BN mapped onto the wrong conv shows.
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, torch.nn.BatchNorm2d):
                m.running_mean.uniform_(-0.2, 0.2)
                m.running_var.uniform_(0.5, 1.5)
                m.weight.uniform_(0.5, 1.5)
                m.bias.uniform_(-0.2, 0.2)
    return model


def test_timm_dla34_state_dict_loads_strictly_and_gives_timm_levels():
    reference = _timm_dla34()
    body = DLA(DLA_SPECS["DLA-34"]).eval()
    state = imagenet_dla_state_dict(reference.state_dict())
    assert not any(k.startswith("fc.") for k in state)
    body.load_state_dict(state, strict=True)

    x = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        ours = body(x)
        theirs = reference.forward_intermediates(x, intermediates_only=True)
    shapes = [(16, 64, 64), (32, 32, 32), (64, 16, 16), (128, 8, 8), (256, 4, 4), (512, 2, 2)]
    assert [tuple(o.shape[1:]) for o in ours] == shapes
    for level, (a, b) in enumerate(zip(ours, theirs)):
        torch.testing.assert_close(a, b, rtol=0, atol=0, msg=f"level{level}")


def test_ucb_layout_drops_the_classifier_the_unread_projects_and_module_prefix():
    state = {f"module.{k}": v for k, v in _timm_dla34().state_dict().items()}
    for level, (cin, cout) in {"level3": (64, 128), "level4": (128, 256)}.items():
        state[f"module.{level}.project.0.weight"] = torch.zeros(cout, cin, 1, 1)
        state[f"module.{level}.project.1.weight"] = torch.ones(cout)
    DLA(DLA_SPECS["DLA-34"]).load_state_dict(imagenet_dla_state_dict(state), strict=True)


def _cfg(*overrides):
    cfg = get_cfg()
    cfg.merge_from_list(["MODEL.BACKBONE.FREEZE_AT", "0", *overrides])
    return cfg


@pytest.mark.parametrize("deformable", [True, False])
def test_forward_backward_reach_every_parameter(deformable):
    torch.manual_seed(0)
    backbone = build_dla_backbone(_cfg("MODEL.DLA.DEFORMABLE_UP", str(deformable)))
    shape = backbone.output_shape()["up4"]
    assert (shape.channels, shape.stride, backbone.size_divisibility) == (64, 4, 32)
    out = backbone(torch.randn(2, 3, 64, 96))["up4"]
    assert out.shape == (2, 64, 16, 24)
    out.square().mean().backward()
    no_grad = [n for n, p in backbone.named_parameters() if p.grad is None or not p.grad.any()]
    # The offset convs start at zero: their gradient is what moves the sampling points.
    assert no_grad == []
    has_offsets = any("conv_offset_mask" in n for n, _ in backbone.named_parameters())
    assert has_offsets == deformable


def test_deformable_conv_starts_as_half_a_plain_conv_and_follows_its_offsets():
    torch.manual_seed(0)
    dcn = ModulatedDeformConv3x3(4, 5)
    torch.nn.init.normal_(dcn.bias)
    x = torch.randn(1, 4, 8, 8)
    plain = F.conv2d(x, dcn.weight, dcn.bias, padding=1)
    # Zero offsets and a mask of sigmoid(0) = 0.5 on every tap.
    torch.testing.assert_close(
        dcn(x), 0.5 * (plain - dcn.bias[:, None, None]) + dcn.bias[:, None, None]
    )

    # Channels 0..17 are (dy, dx) per tap: dx = +1 everywhere samples one pixel to the right.
    with torch.no_grad():
        dcn.conv_offset_mask.bias[1:18:2] = 1.0
        dcn.conv_offset_mask.bias[18:] = 20.0  # mask ~ 1
    shifted = F.conv2d(x[..., 1:], dcn.weight, dcn.bias, padding=1)
    # Columns 1..5: where neither reads beyond an edge (the shifted conv pads column 0 with 0).
    torch.testing.assert_close(dcn(x)[..., 1:6], shifted[..., 1:6], atol=1e-5, rtol=1e-5)


def test_up_steps_start_as_bilinear_upsampling():
    ida = IDAUp(3, [3, 3, 3], [1, 2, 4], "BN", deformable=False)
    x = torch.randn(1, 3, 6, 6)
    for i, factor in ((1, 2), (2, 4)):
        up = getattr(ida, f"up_{i}")(x)
        expected = F.interpolate(x, scale_factor=factor, mode="bilinear", align_corners=False)
        border = factor  # the transposed conv sees zeros beyond the edge
        torch.testing.assert_close(
            up[..., border:-border, border:-border], expected[..., border:-border, border:-border]
        )


def test_freeze_at_two_freezes_base_layer_to_level2():
    backbone = build_dla_backbone(_cfg("MODEL.BACKBONE.FREEZE_AT", "2", "MODEL.DLA.NORM", "BN"))
    frozen = {n.split(".")[1] for n, p in backbone.named_parameters() if not p.requires_grad}
    assert frozen == {"base_layer", "level0", "level1", "level2"}
    assert all(p.requires_grad for p in backbone.dla_up.parameters())
    assert type(backbone.base.level2.tree1.bn1).__name__ == "FrozenBatchNorm2d"
    assert type(backbone.base.level3.tree1.tree1.bn1).__name__ == "BatchNorm2d"


def test_bad_settings_name_the_key():
    with pytest.raises(ValueError, match="MODEL.DLA.CONV_BODY='DLA-102'"):
        DLAUpBackbone(conv_body="DLA-102")
    with pytest.raises(ValueError, match="MODEL.DLA.UP_NORM"):
        DLAUpBackbone(up_norm="")
    with pytest.raises(ValueError, match="FREEZE_AT=7"):
        DLAUpBackbone(freeze_at=7)
    with pytest.raises(ValueError, match="multiples of 32"):
        DLAUpBackbone(deformable_up=False)(torch.zeros(1, 3, 48, 64))


def _conversion_tool():
    return runpy.run_path(str(ROOT / "tools/convert/convert_imagenet_dla.py"), run_name="tool")


def test_imagenet_conversion_tool_writes_weights_the_dla_backbone_loads(tmp_path):
    reference = _timm_dla34()
    source, output = tmp_path / "dla34_timm.pth", tmp_path / "dla34_imagenet.pth"
    torch.save(reference.state_dict(), source)
    assert _conversion_tool()["main"](["--weights", str(source), "--output", str(output)]) == 0

    saved = torch.load(output, weights_only=True)
    assert saved["matching_heuristics"] is False
    assert all(k.startswith("backbone.base.") for k in saved["model"])

    model = torch.nn.Module()
    model.backbone = build_dla_backbone(_cfg("MODEL.DLA.DEFORMABLE_UP", "False"))
    up_before = {k: v.clone() for k, v in model.backbone.dla_up.state_dict().items()}
    CenterMaskCheckpointer(model).load(str(output))
    for key in ("level5.tree2.bn2.running_var", "base_layer.0.weight"):
        assert torch.equal(model.backbone.base.state_dict()[key], reference.state_dict()[key])
    # The up-path is not in ImageNet weights: it keeps its initialisation.
    after = model.backbone.dla_up.state_dict()
    assert all(torch.equal(after[k], v) for k, v in up_before.items())


def test_imagenet_conversion_tool_names_a_file_of_another_network(tmp_path):
    source = tmp_path / "resnet.pth"
    torch.save({"conv1.weight": torch.zeros(64, 3, 7, 7)}, source)
    with pytest.raises(SystemExit, match="resnet.pth is not a DLA-34 state dict"):
        _conversion_tool()["main"](["--weights", str(source), "--output", str(tmp_path / "o.pth")])
    assert not (tmp_path / "o.pth").exists()
