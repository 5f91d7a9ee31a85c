"""VoVNet builds the stages its requested features need, and loads the published layout (all
stages) with the unused stages reported, not failing."""

import torch
from detectron2.checkpoint import DetectionCheckpointer
from torch import nn

from centermask.modeling.backbone.vovnet import VoVNet


def test_stages_after_the_last_requested_feature_are_not_built():
    backbone = VoVNet(conv_body="V-19-slim-dw-eSE", out_features=["stage3", "stage4"])
    names = {name for name, _ in backbone.named_children()}
    assert {"stem", "stage2", "stage3", "stage4"} <= names and "stage5" not in names
    outputs = backbone(torch.rand(1, 3, 64, 64))
    assert sorted(outputs) == ["stage3", "stage4"]
    assert outputs["stage4"].shape[-2:] == (4, 4)


def test_stem_only_builds_no_stage():
    backbone = VoVNet(conv_body="V-19-slim-dw-eSE", out_features=["stem"])
    assert not any(name.startswith("stage") for name, _ in backbone.named_children())


def test_a_checkpoint_with_every_stage_loads_into_a_truncated_backbone(tmp_path):
    full = nn.Sequential()
    full.add_module("bottom_up", VoVNet(conv_body="V-19-slim-dw-eSE", out_features=["stage5"]))
    torch.save({"model": full.state_dict()}, tmp_path / "published.pth")
    part = nn.Sequential()
    part.add_module("bottom_up", VoVNet(conv_body="V-19-slim-dw-eSE", out_features=["stage4"]))
    for p in part.parameters():
        nn.init.zeros_(p)
    checkpointer = DetectionCheckpointer(part)
    incompatible = checkpointer._load_model(
        checkpointer._load_file(str(tmp_path / "published.pth"))
    )
    assert not incompatible.missing_keys
    assert incompatible.unexpected_keys and all(
        k.startswith("bottom_up.stage5.") for k in incompatible.unexpected_keys
    )
    loaded, published = part.state_dict(), full.state_dict()
    assert all(torch.equal(loaded[k], published[k]) for k in loaded)
