"""Deformable VoVNet stages through torchvision's deform_conv2d (runs on CPU)."""

import pytest
import torch
import torch.nn.functional as F

from centermask.layers.deform_conv import DeformConv, split_offset_and_mask
from centermask.modeling.backbone import VoVNet
from centermask.modeling.backbone.osa import DeformableConvUnit, DeformableSetting

DCN_STAGES = (False, True, True, True)


def dcn_vovnet(modulated=True, groups=1, conv_body="V-19-slim-eSE"):
    return VoVNet(
        conv_body=conv_body,
        out_features=["stage3", "stage4", "stage5"],
        stage_with_dcn=DCN_STAGES,
        with_modulated_dcn=modulated,
        deformable_groups=groups,
    )


@pytest.mark.parametrize("modulated,groups", [(True, 1), (False, 1), (True, 2)])
def test_dcn_vovnet_runs_forward_and_backward_on_cpu(modulated, groups):
    backbone = dcn_vovnet(modulated, groups).train()
    outputs = backbone(torch.randn(1, 3, 64, 64))
    assert outputs["stage5"].shape == (1, 512, 2, 2)
    sum(o.square().mean() for o in outputs.values()).backward()
    offset_conv = backbone.stage4.OSA4_1.layers[1]._modules["OSA4_1_1/conv_offset"]
    per_tap = 3 if modulated else 2
    assert offset_conv.out_channels == per_tap * 9 * groups
    # Zero-initialised offsets still receive gradients through the bilinear sampling.
    assert offset_conv.weight.grad is not None and offset_conv.weight.grad.abs().sum() > 0


@pytest.mark.parametrize("modulated", [False, True])
def test_zero_offsets_reduce_to_a_plain_conv(modulated):
    unit = DeformableConvUnit("u", 16, 8, "FrozenBN", setting=DeformableSetting(modulated, 1))
    conv, norm = unit._modules["u/conv"], unit._modules["u/norm"]
    x = torch.randn(2, 16, 12, 10)
    plain = F.conv2d(x, conv.weight, padding=1)
    # A zero-initialised offset conv gives zero offsets and, for DCNv2, a mask of sigmoid(0) = 0.5.
    expected = F.relu(norm(plain * (0.5 if modulated else 1.0)))
    with torch.no_grad():
        torch.testing.assert_close(unit(x), expected, rtol=1e-5, atol=1e-5)


def test_deform_conv_follows_the_offsets():
    conv = DeformConv(1, 1, 3, padding=1)
    with torch.no_grad():
        conv.weight.zero_()
        conv.weight[0, 0, 1, 1] = 1.0  # centre tap only: output = input sampled at the offset
    x = torch.arange(30.0).reshape(1, 1, 5, 6)
    offset = torch.zeros(1, 18, 5, 6)
    offset[:, 9] = 1.0  # centre tap (index 4) dx = +1: read the right-hand neighbour
    out = conv(x, offset)
    torch.testing.assert_close(out[..., :5], x[..., 1:])
    assert torch.all(out[..., 5] == 0)  # sampled outside the image


def test_offset_channel_mismatch_is_a_clear_error():
    with pytest.raises(ValueError, match="offset tensor has 18 channels; expected 27"):
        split_offset_and_mask(torch.zeros(1, 18, 2, 2), 3, 1, modulated=True)
    with pytest.raises(ValueError, match="expected 36"):
        DeformConv(4, 4, 3, padding=1, deformable_groups=2)(
            torch.zeros(1, 4, 3, 3), torch.zeros(1, 18, 3, 3)
        )


def test_non_dcn_weights_load_into_dcn_model_with_only_conv_offset_missing():
    plain = VoVNet(conv_body="V-19-slim-eSE", out_features=["stage5"])
    deformable = dcn_vovnet()
    result = deformable.load_state_dict(plain.state_dict(), strict=False)
    assert result.unexpected_keys == []
    assert result.missing_keys and all("/conv_offset." in k for k in result.missing_keys)
    # 3 stages x 1 module x 3 layers, weight and bias each.
    assert len(result.missing_keys) == 3 * 3 * 2
    key = "stage3.OSA3_1.layers.0.OSA3_1_0/conv.weight"
    assert torch.equal(deformable.state_dict()[key], plain.state_dict()[key])


def test_depthwise_vovnet_rejects_dcn():
    with pytest.raises(ValueError, match="STAGE_WITH_DCN"):
        dcn_vovnet(conv_body="V-19-slim-dw-eSE")


def test_empty_batch_gives_empty_output():
    backbone = dcn_vovnet().eval()
    with torch.no_grad():
        assert backbone(torch.zeros(0, 3, 64, 64))["stage5"].shape == (0, 512, 2, 2)
