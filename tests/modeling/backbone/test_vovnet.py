"""VoVNet construction: norms, freezing, argument errors, output shapes."""

import pytest
import torch
from detectron2.layers import FrozenBatchNorm2d
from detectron2.modeling import build_backbone
from torch import nn

from centermask.layers.ese import EffectiveSE
from centermask.modeling.backbone import VoVNet
from tests.support.helpers import CONFIGS, get_config

LITE_DW = CONFIGS / "centermask_lite_V_19_slim_dw_eSE_FPN_ms_4x.yaml"
ALL_STAGES = ["stem", "stage2", "stage3", "stage4", "stage5"]


def norms_of(module: nn.Module):
    return [
        m
        for m in module.modules()
        if isinstance(m, (nn.BatchNorm2d, nn.SyncBatchNorm, FrozenBatchNorm2d, nn.GroupNorm))
    ]


@pytest.mark.parametrize("conv_body", ["V-19-slim-dw-eSE", "V-19-dw-eSE", "V-19-slim-eSE"])
def test_output_shapes_and_strides_for_multiple_of_32_inputs(conv_body):
    backbone = VoVNet(conv_body=conv_body, out_features=ALL_STAGES).eval()
    with torch.no_grad():
        outputs = backbone(torch.randn(2, 3, 96, 64))
    for name, spec in backbone.output_shape().items():
        assert outputs[name].shape == (2, spec.channels, 96 // spec.stride, 64 // spec.stride)
    assert [backbone.output_shape()[n].stride for n in ALL_STAGES] == [4, 4, 8, 16, 32]


def test_every_osa_module_has_ese_and_later_modules_an_identity_shortcut():
    backbone = VoVNet(conv_body="V-39-eSE", out_features=["stage5"])
    modules = [(n, m) for n, m in backbone.named_modules() if type(m).__name__ == "OSAModule"]
    assert len(modules) == 6
    assert all(isinstance(m.ese, EffectiveSE) for _, m in modules)
    assert [m.identity for _, m in modules] == [False, False, False, True, False, True]


def test_only_requested_features_are_returned():
    backbone = VoVNet(conv_body="V-19-slim-dw-eSE", out_features=["stage3"]).eval()
    with torch.no_grad():
        assert list(backbone(torch.randn(1, 3, 64, 64))) == ["stage3"]


def test_two_vovnets_with_different_norms_coexist():
    frozen = VoVNet(conv_body="V-19-slim-dw-eSE", out_features=["stage5"], norm="FrozenBN")
    batch = VoVNet(conv_body="V-19-slim-dw-eSE", out_features=["stage5"], norm="BN")
    assert all(isinstance(m, FrozenBatchNorm2d) for m in norms_of(frozen))
    assert all(type(m).__name__ == "BatchNorm2d" for m in norms_of(batch))
    assert len(norms_of(frozen)) == len(norms_of(batch)) > 0


def test_bn_trains_and_syncbn_builds():
    bn = build_backbone(get_config(LITE_DW, "MODEL.VOVNET.NORM", "BN")).train()
    outputs = bn(torch.randn(2, 3, 64, 64))
    sum(o.mean() for o in outputs.values()).backward()
    assert bn.bottom_up.stem[0].weight.grad is not None
    sync = build_backbone(get_config(LITE_DW, "MODEL.VOVNET.NORM", "SyncBN"))
    assert all(isinstance(m, nn.SyncBatchNorm) for m in norms_of(sync.bottom_up))


def test_gn_works_when_every_width_is_a_multiple_of_32():
    backbone = VoVNet(conv_body="V-19-eSE", out_features=["stage5"], norm="GN").eval()
    assert all(isinstance(m, nn.GroupNorm) for m in norms_of(backbone))
    with torch.no_grad():
        assert backbone(torch.randn(1, 3, 64, 64))["stage5"].shape == (1, 1024, 2, 2)


def test_gn_error_names_the_key_the_channels_and_the_groups():
    cfg = get_config(
        CONFIGS / "centermask_lite_V_19_slim_eSE_FPN_ms_4x.yaml", "MODEL.VOVNET.NORM", "GN"
    )
    with pytest.raises(ValueError, match=r"MODEL\.VOVNET\.NORM='GN'.*32 groups.*80.*112") as err:
        build_backbone(cfg)
    assert "not divisible by 32" in str(err.value)


def test_unknown_norm_and_conv_body_are_config_errors():
    with pytest.raises(ValueError, match=r"MODEL\.VOVNET\.NORM='LayerNorm2'"):
        VoVNet(conv_body="V-19-eSE", out_features=["stage5"], norm="LayerNorm2")
    with pytest.raises(ValueError, match=r"MODEL\.VOVNET\.CONV_BODY='V-42'.*V-39-eSE"):
        VoVNet(conv_body="V-42", out_features=["stage5"])
    with pytest.raises(ValueError, match=r"MODEL\.VOVNET\.OUT_FEATURES"):
        VoVNet(conv_body="V-19-eSE", out_features=["res5"])


@pytest.mark.parametrize("freeze_at", [0, 1, 2, 4])
def test_freeze_at_freezes_exactly_the_stem_and_stages_up_to_it(freeze_at):
    backbone = VoVNet(
        conv_body="V-19-slim-dw-eSE", out_features=["stage5"], norm="BN", freeze_at=freeze_at
    )
    for index, name in enumerate(ALL_STAGES):
        part = getattr(backbone, name)
        frozen = index < freeze_at
        assert all(p.requires_grad != frozen for p in part.parameters()), name
        norms = norms_of(part)
        assert norms, name
        if frozen:
            assert all(isinstance(m, FrozenBatchNorm2d) for m in norms), name
        else:
            assert all(isinstance(m, nn.BatchNorm2d) for m in norms), name


def test_freeze_at_out_of_range_is_a_config_error():
    with pytest.raises(ValueError, match=r"MODEL\.BACKBONE\.FREEZE_AT=6"):
        VoVNet(conv_body="V-19-slim-dw-eSE", out_features=["stage5"], freeze_at=6)


def test_frozen_backbone_still_loads_its_own_state_dict():
    source = VoVNet(conv_body="V-19-slim-dw-eSE", out_features=["stage5"], norm="FrozenBN")
    frozen = VoVNet(
        conv_body="V-19-slim-dw-eSE", out_features=["stage5"], norm="FrozenBN", freeze_at=5
    )
    frozen.load_state_dict(source.state_dict(), strict=True)
    assert not any(p.requires_grad for p in frozen.parameters())


@pytest.mark.parametrize("conv_body", ["V-19-slim-dw-eSE", "V-19-slim-eSE"])
def test_training_with_frozen_norms_in_the_conv_weights_matches_the_unfolded_network(conv_body):
    torch.manual_seed(0)
    backbone = VoVNet(conv_body=conv_body, norm="FrozenBN", out_features=["stage5"])
    for norm in norms_of(backbone):  # non-trivial statistics
        norm.weight.uniform_(0.5, 1.5)
        norm.bias.uniform_(-0.5, 0.5)
        norm.running_mean.uniform_(-0.5, 0.5)
        norm.running_var.uniform_(0.5, 2.0)
    image = torch.randn(2, 3, 64, 96)
    results = []
    for training in (True, False):  # eval mode runs conv and norm one after the other
        backbone.train(training)
        backbone.zero_grad()
        output = backbone(image)["stage5"]
        output.square().mean().backward()
        results.append((output.detach(), [p.grad.clone() for p in backbone.parameters()]))
    (folded, folded_grads), (plain, plain_grads) = results
    assert torch.allclose(folded, plain, rtol=1e-4, atol=1e-5)
    for a, b in zip(folded_grads, plain_grads):
        assert torch.allclose(a, b, rtol=1e-3, atol=1e-6)
