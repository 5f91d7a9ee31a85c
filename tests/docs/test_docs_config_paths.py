"""Every config file named in the tools' help texts and in the READMEs exists."""

import re

import pytest

from centermask.engine import argument_parser
from tests.support.helpers import ROOT

CONFIG_PATH = re.compile(r"configs/[A-Za-z0-9_./-]+\.yaml")
# The tools' sources (help texts, docstrings, defaults), the train_net help epilog's module, and
# the documentation.
DOCUMENTS = sorted(
    [*ROOT.glob("tools/**/*.py"), ROOT / "centermask/engine/defaults.py", ROOT / "README.md",
     *ROOT.glob("datasets/README.md"), *ROOT.glob("configs/**/README.md")]
)  # fmt: skip


def _config_paths(text):
    return set(CONFIG_PATH.findall(text))


@pytest.mark.parametrize("document", DOCUMENTS, ids=lambda p: str(p.relative_to(ROOT)))
def test_every_config_path_a_document_names_exists(document):
    missing = [p for p in _config_paths(document.read_text()) if not (ROOT / p).is_file()]
    assert not missing, f"{document.relative_to(ROOT)} names missing config files: {missing}"


def test_the_train_net_help_names_existing_config_files():
    paths = _config_paths(argument_parser().format_help())
    assert paths, "the help text gives no example config"
    assert all((ROOT / p).is_file() for p in paths), paths


def test_the_scan_finds_config_paths_in_the_readme():
    # Guards the test above against a pattern that silently matches nothing.
    assert len(_config_paths((ROOT / "README.md").read_text())) >= 2
