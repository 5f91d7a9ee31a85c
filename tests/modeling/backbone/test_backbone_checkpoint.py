"""CenterMaskCheckpointer: published checkpoints (pixel_mean/std) and ImageNet backbone files."""

import pytest
import torch
from detectron2.modeling import build_backbone
from torch import nn

from centermask.checkpoint import CenterMaskCheckpointer
from tests.support.helpers import CONFIGS, get_config

LITE_DW = CONFIGS / "centermask_lite_V_19_slim_dw_eSE_FPN_ms_4x.yaml"


class Detector(nn.Module):
    """Just enough of a detectron2 model for the key layout: ``backbone.*``."""

    def __init__(self, cfg):
        super().__init__()
        self.backbone = build_backbone(cfg)
        self.register_buffer("pixel_mean", torch.zeros(3, 1, 1), persistent=False)


@pytest.fixture(scope="module")
def cfg():
    return get_config(LITE_DW)


def random_like(state_dict):
    return {k: torch.randn_like(v) for k, v in state_dict.items()}


def load(model, path):
    """Load ``path`` with the checkpointer; return its incompatible-keys report."""
    checkpointer = CenterMaskCheckpointer(model)
    return checkpointer._load_model(checkpointer._load_file(str(path)))


def test_published_checkpoint_with_pixel_mean_and_std_loads_cleanly(cfg, tmp_path):
    source = random_like(Detector(cfg).state_dict())
    path = tmp_path / "model_final.pth"
    weights = dict(source, pixel_mean=torch.zeros(3, 1, 1), pixel_std=torch.ones(3, 1, 1))
    torch.save({"model": weights, "iteration": 10}, path)

    model = Detector(cfg)
    report = load(model, path)
    assert report.missing_keys == [] and report.unexpected_keys == []
    assert report.incorrect_shapes == []
    for key, value in model.state_dict().items():
        assert torch.equal(value, source[key]), key


def test_other_unexpected_keys_are_still_reported(cfg, tmp_path):
    weights = dict(random_like(Detector(cfg).state_dict()), extra_head_weight=torch.zeros(1))
    torch.save({"model": weights}, tmp_path / "m.pth")
    assert load(Detector(cfg), tmp_path / "m.pth").unexpected_keys == ["extra_head_weight"]


@pytest.mark.parametrize("layout", ["prefixed", "bare", "bare_without_model_wrapper"])
def test_imagenet_backbone_weights_load_in_either_layout(cfg, tmp_path, layout):
    bottom_up = random_like(Detector(cfg).backbone.bottom_up.state_dict())
    if layout == "prefixed":
        content = {"model": {f"backbone.bottom_up.{k}": v for k, v in bottom_up.items()}}
    elif layout == "bare":
        content = {"model": bottom_up, "__author__": "someone"}
    else:
        content = bottom_up
    path = tmp_path / "vovnet19_ese_slim_dw_detectron2.pth"
    torch.save(content, path)

    model = Detector(cfg)
    report = load(model, path)
    assert report.unexpected_keys == []
    # Only the FPN and P6/P7 (trained from scratch) are missing.
    assert report.missing_keys and all(
        not k.startswith("backbone.bottom_up.") for k in report.missing_keys
    )
    for key, value in model.backbone.bottom_up.state_dict().items():
        assert torch.equal(value, bottom_up[key]), key


def test_public_load_returns_the_remaining_checkpoint_content(cfg, tmp_path):
    weights = dict(random_like(Detector(cfg).state_dict()), pixel_std=torch.ones(3, 1, 1))
    torch.save({"model": weights, "iteration": 7}, tmp_path / "m.pth")
    model = Detector(cfg)
    assert CenterMaskCheckpointer(model).load(str(tmp_path / "m.pth")) == {"iteration": 7}
    for key, value in model.state_dict().items():
        assert torch.equal(value, weights[key]), key
