"""timm eSE-VoVNet -> CenterMask VoVNet weight conversion (random timm weights, no download)."""

import runpy

import pytest
import timm
import torch
from torch import nn

from centermask.checkpoint import CenterMaskCheckpointer
from centermask.modeling.backbone import VoVNet
from centermask.modeling.backbone.timm_convert import TIMM_TO_CONV_BODY, convert_timm_vovnet
from tests.support.helpers import ROOT

STAGES = ["stage2", "stage3", "stage4", "stage5"]


def random_timm_vovnet(name: str) -> nn.Module:
    """A timm model with random, non-trivial BN statistics and eSE biases, in eval mode."""
    model = timm.create_model(name, pretrained=False).eval()
    generator = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for module in model.modules():
            if isinstance(module, nn.BatchNorm2d):
                for tensor, (low, high) in [
                    (module.weight, (0.5, 1.5)),
                    (module.bias, (-0.2, 0.2)),
                    (module.running_mean, (-0.2, 0.2)),
                    (module.running_var, (0.5, 1.5)),
                ]:
                    tensor.copy_(torch.rand(tensor.shape, generator=generator) * (high - low) + low)
            elif type(module).__name__ == "EffectiveSEModule":
                module.fc.bias.copy_(torch.rand(module.fc.bias.shape, generator=generator) * 2 - 1)
    return model


@pytest.mark.parametrize(
    "timm_name,identity_ese",
    [("ese_vovnet19b_slim_dw", 0), ("ese_vovnet19b_slim", 0), ("ese_vovnet39b", 2)],
)
def test_converted_timm_weights_give_timms_stage_features(timm_name, identity_ese):
    timm_model = random_timm_vovnet(timm_name)
    converted = convert_timm_vovnet(
        timm_model.state_dict(), TIMM_TO_CONV_BODY[timm_name], prefix=""
    )
    with torch.device("meta"):  # every tensor comes from the checkpoint: skip the init
        ours = VoVNet(conv_body=TIMM_TO_CONV_BODY[timm_name], out_features=STAGES)
    ours.load_state_dict(converted, strict=True, assign=True)
    ours.eval()

    # timm has eSE only on the last block of a stage; the others become exact identities.
    biases = [v for k, v in converted.items() if k.endswith("ese.fc.bias")]
    assert sum(bool(torch.all(b == 3.0)) for b in biases) == identity_ese

    image = torch.randn(1, 3, 64, 96)
    with torch.no_grad():
        expected = timm_model.forward_intermediates(
            image, indices=[1, 2, 3, 4], intermediates_only=True
        )
        features = ours(image)
    for name, reference in zip(STAGES, expected):
        torch.testing.assert_close(features[name], reference, rtol=1e-5, atol=1e-5, msg=name)


def test_conversion_rejects_weights_of_another_variant():
    weights = timm.create_model("ese_vovnet19b_slim_dw", pretrained=False).state_dict()
    with pytest.raises(ValueError, match="lack .* V-19-slim-eSE.*ese_vovnet19b_slim"):
        convert_timm_vovnet(weights, "V-19-slim-eSE")


def test_cli_writes_a_checkpoint_the_checkpointer_loads(tmp_path):
    timm_model = random_timm_vovnet("ese_vovnet19b_slim_dw")
    source = tmp_path / "timm.pth"
    torch.save(timm_model.state_dict(), source)
    output = tmp_path / "vovnet19_slim_dw.pth"
    tool = runpy.run_path(
        str(ROOT / "tools" / "convert" / "convert_timm_vovnet.py"), run_name="tool"
    )
    args = [
        "--timm-model",
        "ese_vovnet19b_slim_dw",
        "--weights",
        str(source),
        "--output",
        str(output),
    ]
    assert tool["main"](args) == 0

    saved = torch.load(output, weights_only=True)
    assert saved["matching_heuristics"] is False
    assert all(k.startswith("backbone.bottom_up.") for k in saved["model"])

    class Detector(nn.Module):
        def __init__(self):
            super().__init__()
            self.backbone = nn.Module()
            self.backbone.bottom_up = VoVNet(conv_body="V-19-slim-dw-eSE", out_features=STAGES)

    model = Detector()
    CenterMaskCheckpointer(model).load(str(output))
    key = "stage3.OSA3_1.conv_reduction.OSA3_1_reduction_0/norm.running_var"
    expected = timm_model.state_dict()["stages.1.blocks.0.conv_reduction.bn.running_var"]
    assert torch.equal(model.backbone.bottom_up.state_dict()[key], expected)
