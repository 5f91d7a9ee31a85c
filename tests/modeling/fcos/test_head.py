"""FCOS head: checkpoint layout, initialisation, and parity of its outputs with the original."""

import math

import numpy as np
import pytest
import torch
from detectron2.layers import ShapeSpec
from torch import nn

from centermask.modeling.fcos import FCOSHead
from tests.support.fcos import FCOS_PREFIX, LEVELS, small_features, synthetic_fcos
from tests.support.helpers import PARITY_DIRS, get_config, load_npz, parity_config_file, parity_keys

TENSOR_TOL = 1e-4  # max|diff| / max|ref|, meta.json tolerances


def _head(num_levels=5, channels=64, **kwargs):
    args = dict(in_channels=channels, num_classes=3, num_levels=num_levels)
    args.update(kwargs)
    return FCOSHead(**args)


@pytest.mark.parametrize("name", PARITY_DIRS)
def test_head_state_dict_matches_reference_keys_and_shapes(name):
    fcos, _ = synthetic_fcos(name)
    ours = {k: tuple(v.shape) for k, v in fcos.state_dict().items()}
    ref = {
        k[len(FCOS_PREFIX) :]: s for k, s in parity_keys(name).items() if k.startswith(FCOS_PREFIX)
    }
    assert ours == ref


@pytest.mark.parametrize("name", PARITY_DIRS)
def test_head_outputs_match_reference_on_small_input(name):
    fcos, _ = synthetic_fcos(name)
    features = small_features(name)
    ref = load_npz(name, "head_small.npz")
    with torch.no_grad():
        logits, bbox_reg, ctrness, _ = fcos.fcos_head([features[f] for f in LEVELS])
    failures = []
    for i, level in enumerate(LEVELS):
        for tensor_name, ours in [
            ("logits", logits[i]),
            ("bbox_reg", bbox_reg[i]),
            ("ctrness", ctrness[i]),
        ]:
            r = ref[f"{tensor_name}_{level}"]
            assert ours.shape == r.shape, f"{tensor_name}_{level}: shape {ours.shape} vs {r.shape}"
            rel = np.abs(ours.numpy().astype(np.float64) - r).max() / np.abs(r).max()
            if rel > TENSOR_TOL:
                failures.append(f"{tensor_name}_{level}: max|diff|/max|ref| = {rel:.3g}")
    assert not failures, f"{name}: " + "; ".join(failures)


@pytest.mark.parametrize("name", PARITY_DIRS)
def test_locations_equal_reference_exactly(name):
    fcos, _ = synthetic_fcos(name)
    ref = load_npz(name, "head_small.npz")
    locations = fcos.compute_locations(small_features(name))
    for level, loc in zip(LEVELS, locations):
        expected = ref[f"locations_{level}"]
        assert loc.dtype == torch.float32
        np.testing.assert_array_equal(loc.numpy(), expected, err_msg=f"locations_{level}")


def test_tower_index_layout_with_group_norm():
    head = _head(num_cls_convs=2, num_box_convs=3, norm="GN")
    assert [type(m) for m in head.cls_tower] == [nn.Conv2d, nn.GroupNorm, nn.ReLU] * 2
    assert [type(m) for m in head.bbox_tower] == [nn.Conv2d, nn.GroupNorm, nn.ReLU] * 3
    assert head.cls_tower[1].num_groups == 32
    assert len(head.share_tower) == 0


def test_tower_index_layout_without_norm():
    head = _head(num_cls_convs=2, num_box_convs=2, num_share_convs=1, norm="none")
    assert [type(m) for m in head.cls_tower] == [nn.Conv2d, nn.ReLU] * 2
    assert [type(m) for m in head.share_tower] == [nn.Conv2d, nn.ReLU]
    assert "cls_tower.2.weight" in head.state_dict()


def test_initialisation_normal_std_001_zero_bias_and_prior_on_classifier():
    torch.manual_seed(0)
    head = _head(channels=128, prior_prob=0.01)
    conv_weights = torch.cat(
        [m.weight.flatten() for m in head.modules() if isinstance(m, nn.Conv2d)]
    )
    assert abs(conv_weights.std().item() - 0.01) < 5e-4
    assert torch.all(head.bbox_pred.bias == 0) and torch.all(head.cls_tower[0].bias == 0)
    torch.testing.assert_close(
        head.cls_logits.bias, torch.full((3,), -math.log(0.99 / 0.01)), rtol=0, atol=1e-6
    )
    assert [s.scale.item() for s in head.scales] == [1.0] * 5
    assert head.cls_tower[1].weight.eq(1).all() and head.cls_tower[1].bias.eq(0).all()


def test_regression_is_relu_of_scaled_prediction_on_the_box_tower():
    torch.manual_seed(0)
    head = _head(num_levels=2, channels=32)
    head.scales[1].scale.data.fill_(-2.0)  # negative scale: ReLU must clamp everything to >= 0
    nn.init.normal_(head.bbox_pred.weight, std=0.5)
    features = [torch.randn(2, 32, 6, 5), torch.randn(2, 32, 3, 3)]
    logits, bbox_reg, ctrness, towers = head(features)
    assert [x.shape for x in logits] == [(2, 3, 6, 5), (2, 3, 3, 3)]
    assert [x.shape for x in ctrness] == [(2, 1, 6, 5), (2, 1, 3, 3)]
    expected = torch.relu(-2.0 * head.bbox_pred(towers[1]))
    torch.testing.assert_close(bbox_reg[1], expected)
    torch.testing.assert_close(ctrness[0], head.ctrness(towers[0]))
    assert bbox_reg[0].min() >= 0


def test_without_scales_there_are_no_scale_parameters():
    head = _head(use_scale=False)
    assert head.scales is None
    assert not any(k.startswith("scales") for k in head.state_dict())


def test_group_norm_needs_channels_divisible_by_32():
    with pytest.raises(ValueError, match="MODEL.FCOS.NORM"):
        _head(channels=48, norm="GN")


def test_unknown_norm_is_rejected_with_the_key_name():
    with pytest.raises(ValueError, match="MODEL.FCOS.NORM"):
        _head(norm="BN")


def test_from_config_rejects_levels_with_different_channels():
    cfg = get_config(parity_config_file(PARITY_DIRS[0]))
    shapes = [ShapeSpec(channels=128, stride=8), ShapeSpec(channels=256, stride=16)]
    with pytest.raises(ValueError, match="same number of channels"):
        FCOSHead(cfg, shapes)
