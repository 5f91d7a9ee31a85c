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


def test_every_added_key_has_a_description():
    missing = keys_without_description()
    assert not missing, f"write a comment directly above the assignment of {missing}"


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
