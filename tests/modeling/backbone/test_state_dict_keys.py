"""Checkpoint layout: backbone keys/shapes of every shipped config, and backbone sizes."""

import pytest
import torch
from detectron2.modeling import build_backbone

from centermask.modeling.backbone import MobileNetV2, VoVNet
from tests.support.helpers import CONFIGS, KEYS, get_config, spec_keys

CONFIG_STEMS = sorted(p.stem for p in KEYS.glob("*.tsv"))


def test_every_shipped_config_has_a_key_list():
    assert len(CONFIG_STEMS) == 20


@pytest.mark.parametrize("stem", CONFIG_STEMS)
def test_backbone_state_dict_matches_reference_keys_and_shapes(stem):
    cfg = get_config(CONFIGS / f"{stem}.yaml")
    with torch.device("meta"):  # shapes only: skip allocating and initialising the weights
        backbone = build_backbone(cfg)
    ours = {f"backbone.{k}": (tuple(v.shape), v.dtype) for k, v in backbone.state_dict().items()}
    reference = {
        k: (s, torch.float32) for k, s in spec_keys(stem).items() if k.startswith("backbone.")
    }
    missing = sorted(set(reference) - set(ours))
    unexpected = sorted(set(ours) - set(reference))
    wrong_shape = {
        k: (ours[k], reference[k]) for k in ours if k in reference and ours[k] != reference[k]
    }
    assert not missing, f"{stem}: {len(missing)} reference keys missing, e.g. {missing[:5]}"
    assert not unexpected, f"{stem}: {len(unexpected)} unexpected keys, e.g. {unexpected[:5]}"
    assert not wrong_shape, f"{stem}: shapes differ (ours, reference): {wrong_shape}"


# Spec §1.3: bottom-up parameters only; FrozenBN buffers are not parameters.
PARAMETER_COUNTS = {
    ("V-19-slim-dw-eSE", False): 1_379_152,
    ("V-19-slim-eSE", False): 2_647_984,
    ("V-19-eSE", False): 10_170_560,
    ("V-39-eSE", False): 25_163_712,
    ("V-57-eSE", False): 41_423_296,
    ("V-99-eSE", False): 69_469_376,
    ("V-39-eSE", True): 26_937_315,
    ("V-57-eSE", True): 44_410_360,
    ("V-99-eSE", True): 74_883_497,
}


@pytest.mark.parametrize("conv_body,dcn", sorted(PARAMETER_COUNTS), ids=str)
def test_vovnet_parameter_count_matches_reference(conv_body, dcn):
    with torch.device("meta"):
        backbone = VoVNet(
            conv_body=conv_body,
            out_features=["stage5"],
            stage_with_dcn=(False, dcn, dcn, dcn),
            with_modulated_dcn=True,
        )
    assert sum(p.numel() for p in backbone.parameters()) == PARAMETER_COUNTS[(conv_body, dcn)]


def test_mobilenetv2_parameter_count_matches_reference():
    with torch.device("meta"):
        backbone = MobileNetV2()
    assert sum(p.numel() for p in backbone.parameters()) == 1_780_160
