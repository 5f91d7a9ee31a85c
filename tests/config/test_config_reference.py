"""docs/CONFIG_REFERENCE.md is rendered from the code and kept up to date."""

import textwrap

from centermask.config import reference
from centermask.config.reference import (
    REFERENCE_PATH,
    WRITE_COMMAND,
    added_keys,
    key_comments,
    keys_without_description,
    render_reference,
)

# Keys whose assignment in centermask/config/*.py has no comment yet, so their description in the
# reference is empty. Write a comment directly above the assignment, then remove the key here.
KEYS_WITHOUT_DESCRIPTION = (
    "MODEL.ROI_KEYPOINT_HEAD.IN_FEATURES",
    "MODEL.ROI_KEYPOINT_HEAD.ASSIGN_CRITERION",
    "MODEL.MOBILENET",
    "MODEL.FCOS.IN_FEATURES",
    "MODEL.FCOS.FPN_STRIDES",
    "MODEL.FCOS.PRIOR_PROB",
    "MODEL.FCOS.INFERENCE_TH_TRAIN",
    "MODEL.FCOS.INFERENCE_TH_TEST",
    "MODEL.FCOS.NMS_TH",
    "MODEL.FCOS.PRE_NMS_TOPK_TRAIN",
    "MODEL.FCOS.PRE_NMS_TOPK_TEST",
    "MODEL.FCOS.POST_NMS_TOPK_TRAIN",
    "MODEL.FCOS.POST_NMS_TOPK_TEST",
    "MODEL.FCOS.USE_SCALE",
    "MODEL.FCOS.LOSS_ALPHA",
    "MODEL.FCOS.LOSS_GAMMA",
    "MODEL.FCOS.SIZES_OF_INTEREST",
    "MODEL.FCOS.USE_DEFORMABLE",
    "MODEL.FCOS.NUM_CLS_CONVS",
    "MODEL.FCOS.NUM_BOX_CONVS",
    "MODEL.FCOS.NUM_SHARE_CONVS",
    "MODEL.FCOS.CENTER_SAMPLE",
    "MODEL.FCOS.POS_RADIUS",
    "MODEL.VOVNET.CONV_BODY",
    "MODEL.VOVNET.OUT_FEATURES",
    "MODEL.VOVNET.WITH_MODULATED_DCN",
    "MODEL.VOVNET.DEFORMABLE_GROUPS",
    "MODEL.MASKIOU_ON",
    "MODEL.MASKIOU_LOSS_WEIGHT",
    "MODEL.ROI_MASKIOU_HEAD.NAME",
    "MODEL.ROI_MASKIOU_HEAD.CONV_DIM",
    "MODEL.ROI_MASKIOU_HEAD.NUM_CONV",
    "MODEL.CONDINST.MASK_HEAD.CHANNELS",
    "MODEL.CONDINST.MASK_HEAD.NUM_LAYERS",
    "MODEL.CONDINST.MASK_HEAD.DISABLE_REL_COORDS",
    "MODEL.CONDINST.MASK_BRANCH.OUT_CHANNELS",
    "MODEL.CONDINST.MASK_BRANCH.CHANNELS",
    "MODEL.CONDINST.MASK_BRANCH.NORM",
    "MODEL.CONDINST.MASK_BRANCH.NUM_CONVS",
    "MODEL.CENTERMASK_PR.HEAD_CHANNELS",
    "MODEL.CENTERMASK_PR.FOCAL_ALPHA",
    "MODEL.CENTERMASK_PR.FOCAL_BETA",
    "MODEL.CENTERMASK_PR.HEATMAP_LOSS_WEIGHT",
    "MODEL.CENTERMASK_PR.OFFSET_LOSS_WEIGHT",
    "MODEL.CENTERMASK_PR.SIZE_LOSS_WEIGHT",
    "MODEL.CENTERMASK_PR.MASK_LOSS_WEIGHT",
    "MODEL.CENTERMASK_PR.SCORE_THRESH_TEST",
    "MODEL.CENTERMASK_PR.MASK_THRESHOLD",
    "MODEL.UPSAMPLING_NECK.BOTTOM_UP",
    "MODEL.UPSAMPLING_NECK.IN_FEATURES",
    "MODEL.UPSAMPLING_NECK.OUT_CHANNELS",
    "MODEL.UPSAMPLING_NECK.NORM",
)


def test_the_config_reference_is_up_to_date():
    current = REFERENCE_PATH.read_text() if REFERENCE_PATH.is_file() else ""
    assert (
        current == render_reference()
    ), f"{REFERENCE_PATH.name} differs from the config code; regenerate it: {WRITE_COMMAND}"


def test_the_reference_lists_every_added_key_with_its_default():
    text = render_reference()
    keys = added_keys()
    assert "MODEL.FCOS.NUM_CLASSES" in keys and "MODEL.ROI_HEADS.NUM_CLASSES" not in keys
    # A key added inside one of detectron2's own nodes counts too.
    assert keys["MODEL.ROI_MASK_HEAD.ASSIGN_CRITERION"] == "area"
    for key in keys:
        assert f"| `{key}` |" in text, key
    assert '| `MODEL.CENTERMASK_PR.MASK_MODE` | `"both"` |' in text


def test_no_new_key_lacks_a_description():
    missing = keys_without_description()
    new = sorted(set(missing) - set(KEYS_WITHOUT_DESCRIPTION))
    assert not new, f"write a comment directly above the assignment of {new}"
    described = sorted(set(KEYS_WITHOUT_DESCRIPTION) - set(missing))
    assert (
        not described
    ), f"these keys have a description now; remove them from the list: {described}"


def test_descriptions_come_from_the_comment_directly_above_or_beside_the_assignment(tmp_path):
    source = tmp_path / "fake_config.py"
    source.write_text(textwrap.dedent("""
            def add_fake_config(cfg):
                _C = cfg
                # ------------------------------------------------------------------ #
                # A section header, not a description
                # ------------------------------------------------------------------ #
                _C.MODEL.FAKE = CN()
                # How many: at least one (see Sec. 2). Second sentence left out.
                _C.MODEL.FAKE.COUNT = 1
                _C.MODEL.FAKE.NAME = "x"  # trailing comment
                node = cfg.MODEL.OTHER = CN()
                # Reached through an alias
                # spanning two lines.
                node.SIZE = 2

                node.PLAIN = 3

            def unrelated(cfg):
                # Not a config function.
                cfg.MODEL.IGNORED = 0
            """))
    assert key_comments([source]) == {
        "MODEL.FAKE": "",
        "MODEL.FAKE.COUNT": "How many: at least one (see Sec. 2).",
        "MODEL.FAKE.NAME": "trailing comment",
        "MODEL.OTHER": "",
        "MODEL.OTHER.SIZE": "Reached through an alias spanning two lines.",
        "MODEL.OTHER.PLAIN": "",
    }


def test_the_write_command_writes_what_the_check_accepts(tmp_path, monkeypatch):
    target = tmp_path / "CONFIG_REFERENCE.md"
    monkeypatch.setattr(reference, "REFERENCE_PATH", target)
    assert reference.main(["--check"]) == 1
    assert reference.main(["--write"]) == 0
    assert reference.main(["--check"]) == 0
    assert target.read_text() == render_reference()
