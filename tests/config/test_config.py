"""The configuration system: keys, defaults, every shipped YAML, class-count check."""

import logging

import pytest
import yaml
from detectron2.config import CfgNode
from detectron2.config import get_cfg as d2_get_cfg

from centermask.config import add_centermask_config, check_class_counts, get_cfg
from tests.support.helpers import (
    CONFIGS,
    PARITY_DIRS,
    QUICK_CONFIGS,
    parity_config_file,
    parity_dir,
)

ALL_YAMLS = sorted(CONFIGS.glob("*.yaml"))
BASE_YAMLS = [p for p in ALL_YAMLS if p.name.startswith("Base-")]
CONCRETE_YAMLS = [p for p in ALL_YAMLS if not p.name.startswith("Base-")]


def test_model_zoo_has_every_original_yaml():
    assert len(BASE_YAMLS) == 5
    assert len(CONCRETE_YAMLS) == 20
    assert len([p for p in CONCRETE_YAMLS if p.name.startswith("panoptic_")]) == 6


@pytest.mark.parametrize(
    "path", ALL_YAMLS + sorted(QUICK_CONFIGS.glob("*.yaml")), ids=lambda p: p.name
)
def test_every_yaml_loads(path):
    cfg = get_cfg()
    cfg.merge_from_file(str(path))
    check_class_counts(cfg)


def test_detectron2_global_defaults_untouched():
    before = d2_get_cfg().dump()
    cfg = d2_get_cfg()
    add_centermask_config(cfg)
    assert "FCOS" in cfg.MODEL and "VOVNET" in cfg.MODEL and "MASKIOU_ON" in cfg.MODEL
    import centermask  # noqa: F401

    after = d2_get_cfg()
    assert after.dump() == before
    assert "FCOS" not in after.MODEL


def test_add_centermask_config_is_idempotent():
    cfg = get_cfg()
    cfg.MODEL.FCOS.NUM_CLASSES = 3
    add_centermask_config(cfg)
    assert cfg.MODEL.FCOS.NUM_CLASSES == 3


def test_reference_defaults():
    cfg = get_cfg()
    assert cfg.MODEL.FCOS.NUM_CLASSES == 80
    assert cfg.MODEL.FCOS.FPN_STRIDES == [8, 16, 32, 64, 128]
    assert cfg.MODEL.FCOS.SIZES_OF_INTEREST == [64, 128, 256, 512]
    assert cfg.MODEL.FCOS.LOC_LOSS_TYPE == "giou"
    assert cfg.MODEL.FCOS.POS_RADIUS == 1.5
    assert cfg.MODEL.VOVNET.CONV_BODY == "V-39-eSE"
    assert cfg.MODEL.VOVNET.STAGE_WITH_DCN == (False, False, False, False)
    assert cfg.MODEL.ROI_MASK_HEAD.ASSIGN_CRITERION == "area"
    assert cfg.MODEL.MASKIOU_ON is False
    assert cfg.MODEL.ROI_MASKIOU_HEAD.NAME == "MaskIoUHead"
    assert cfg.MODEL.ROI_KEYPOINT_HEAD.IN_FEATURES == ["p2", "p3", "p4", "p5"]


def _flatten(d, prefix=""):
    for k, v in d.items():
        if isinstance(v, dict):
            yield from _flatten(v, prefix + k + ".")
        else:
            yield prefix + k, v


@pytest.mark.parametrize("name", PARITY_DIRS)
def test_yaml_resolves_like_the_reference(name):
    """Our YAML + defaults equal the reference's resolved config on every key both versions know."""
    cfg = get_cfg()
    cfg.merge_from_file(str(parity_config_file(name)))
    cfg.merge_from_list(["MODEL.DEVICE", "cpu", "MODEL.WEIGHTS", ""])
    ours = dict(_flatten(yaml.safe_load(cfg.dump())))
    ref = dict(_flatten(yaml.safe_load((parity_dir(name) / "config_resolved.yaml").read_text())))
    centermask_keys = [
        k for k in ref if any(s in k for s in ("FCOS", "VOVNET", "MASKIOU", "MOBILENET"))
    ]
    assert all(k in ours for k in centermask_keys)
    diffs = {k: (ours[k], ref[k]) for k in ref if k in ours and _norm(ours[k]) != _norm(ref[k])}
    assert diffs == {}


def _norm(v):
    return [_norm(x) for x in v] if isinstance(v, (list, tuple)) else v


def test_mismatched_class_counts_name_both_keys():
    cfg = get_cfg()
    cfg.MODEL.FCOS.NUM_CLASSES = 3
    cfg.MODEL.ROI_HEADS.NUM_CLASSES = 5
    with pytest.raises(
        ValueError, match=r"MODEL\.FCOS\.NUM_CLASSES.*MODEL\.ROI_HEADS\.NUM_CLASSES"
    ):
        check_class_counts(cfg)


def test_merging_a_yaml_without_version_is_quiet_and_gives_the_same_values(caplog):
    compat = logging.getLogger("detectron2.config.compat")
    compat.addHandler(caplog.handler)  # detectron2's setup_logger may stop propagation
    caplog.set_level(logging.WARNING, logger="detectron2.config.compat")
    path = str(CONFIGS / "centermask_lite_V_39_eSE_FPN_ms_4x.yaml")
    try:
        cfg = get_cfg()
        cfg.merge_from_file(path)
        assert "has no VERSION" not in caplog.text
        plain = add_centermask_config(d2_get_cfg())
        plain.merge_from_file(path)  # detectron2's own CfgNode: warns as before
        assert f"Config '{path}' has no VERSION" in caplog.text
    finally:
        compat.removeHandler(caplog.handler)
    assert dict(cfg) == dict(plain)
    assert not compat.filters  # the filter lives only while a file is merged


def test_a_sub_node_added_by_the_user_still_merges_from_a_yaml(tmp_path):
    cfg = get_cfg()
    cfg.MODEL.MY_HEAD = CfgNode()
    cfg.MODEL.MY_HEAD.DEPTH = 1
    path = tmp_path / "mine.yaml"
    path.write_text("MODEL:\n  MY_HEAD:\n    DEPTH: 3\n")
    cfg.merge_from_file(str(path))
    assert cfg.MODEL.MY_HEAD.DEPTH == 3
    assert cfg.clone().MODEL.MY_HEAD.DEPTH == 3
