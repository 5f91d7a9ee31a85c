"""The documentation names only config files and links that exist, the README stays a short hub,
and the prose files and configs describe the software, not its development history."""

import json
import re
import subprocess
import sys
from pathlib import Path

import pytest

from tests.support.helpers import ROOT

CONFIG_PATH = re.compile(r"configs/[A-Za-z0-9_./-]+\.yaml")
# [text](target) with a relative target (no scheme, no pure #anchor).
MARKDOWN_LINK = re.compile(r"\]\((?![a-z]+:|#)([^)\s]+)\)")
README_MAX_LINES = 200
# Phrases that tell the story of the project's development instead of describing the software.
HISTORY_PHRASES = (
    "previous session",
    "this session",
    "earlier session",
    "earlier version",
    "previous version",
    "goal met",
    "not met",
    "shared machine",
    "busy machine",
)


def _relative(path: Path) -> str:
    return str(path.relative_to(ROOT))


def _markdown_documents():
    """README, docs/**, datasets/ and tools/ READMEs, configs/** READMEs (not the changelog, whose
    old paths are history by design)."""
    return sorted(
        {ROOT / "README.md", *ROOT.glob("docs/**/*.md"), *ROOT.glob("datasets/**/*.md"),
         *ROOT.glob("tools/**/README.md"), *ROOT.glob("configs/**/README.md")}
    )  # fmt: skip


def _tool_scripts():
    return sorted(p for p in ROOT.glob("tools/**/*.py") if p.name != "__init__.py")


def _tool_sources():
    """The scripts and the command's modules, which hold most of the scripts' code and help."""
    sources = [*_tool_scripts(), *ROOT.glob("centermask/cli/*.py")]
    return sorted(p for p in sources if p.name != "__init__.py")


def _missing_configs(text: str):
    return sorted(p for p in set(CONFIG_PATH.findall(text)) if not (ROOT / p).is_file())


@pytest.mark.parametrize("document", _markdown_documents(), ids=_relative)
def test_every_config_path_a_document_names_exists(document):
    missing = _missing_configs(document.read_text())
    assert not missing, f"{_relative(document)} names missing config files: {missing}"


@pytest.mark.parametrize("document", _markdown_documents(), ids=_relative)
def test_every_relative_link_of_a_document_resolves(document):
    targets = MARKDOWN_LINK.findall(document.read_text())
    missing = [t for t in targets if not (document.parent / t.split("#")[0]).exists()]
    assert not missing, f"{_relative(document)} links to missing files: {missing}"


@pytest.mark.parametrize("source", _tool_sources(), ids=_relative)
def test_every_config_path_in_a_tool_source_exists(source):
    # Docstrings, defaults and help strings as written in the source.
    missing = _missing_configs(source.read_text())
    assert not missing, f"{_relative(source)} names missing config files: {missing}"


# Runs every tool's --help in one child process (importing torch once), as a user would see it.
_HELP_RUNNER = r"""
import contextlib, io, json, runpy, sys
texts = {}
for path in sys.argv[1:]:
    out = io.StringIO()
    sys.argv = [path, "--help"]
    with contextlib.redirect_stdout(out):
        try:
            runpy.run_path(path, run_name="__main__")
        except SystemExit:
            pass
    texts[path] = out.getvalue()
print(json.dumps(texts))
"""


@pytest.fixture(scope="module")
def help_texts():
    scripts = [str(p) for p in _tool_scripts()]
    done = subprocess.run(
        [sys.executable, "-c", _HELP_RUNNER, *scripts],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    return json.loads(done.stdout.strip().splitlines()[-1])


def test_every_tool_prints_a_help_text(help_texts):
    silent = [path for path, text in help_texts.items() if "usage:" not in text]
    assert not silent, f"no --help output from {silent}"


def test_every_config_path_in_the_tools_help_texts_exists(help_texts):
    missing = {path: _missing_configs(text) for path, text in help_texts.items()}
    missing = {path: paths for path, paths in missing.items() if paths}
    assert not missing, f"help texts name missing config files: {missing}"


def test_the_train_net_help_gives_an_existing_example_config(help_texts):
    (text,) = [t for path, t in help_texts.items() if path.endswith("train_net.py")]
    assert CONFIG_PATH.findall(text), "the train_net help text gives no example config"


def test_the_scan_finds_config_paths_in_the_docs():
    # Guards the tests above against a pattern that silently matches nothing.
    assert len(CONFIG_PATH.findall((ROOT / "docs/QUICKSTART.md").read_text())) >= 2
    assert MARKDOWN_LINK.findall((ROOT / "README.md").read_text())


def test_the_readme_is_a_hub_of_at_most_200_lines():
    lines = (ROOT / "README.md").read_text().splitlines()
    assert (
        len(lines) <= README_MAX_LINES
    ), f"README.md has {len(lines)} lines (at most {README_MAX_LINES}): move details to docs/"


def _prose_and_configs():
    return sorted({*_markdown_documents(), *ROOT.glob("configs/**/*.yaml"), ROOT / "CITATION.cff"})


@pytest.mark.parametrize("document", _prose_and_configs(), ids=_relative)
def test_a_document_does_not_tell_development_history(document):
    text = document.read_text().lower()
    found = [phrase for phrase in HISTORY_PHRASES if phrase in text]
    assert not found, (
        f"{_relative(document)} contains {found}: describe the software as it is; changes go to "
        "CHANGELOG.md"
    )


@pytest.mark.parametrize("document", _markdown_documents(), ids=_relative)
def test_a_document_naming_published_weights_gives_their_licence(document):
    text = document.read_text()
    if "centermask://" in text:
        assert "non-commercial" in text.lower(), (
            f"{_relative(document)} names centermask:// weights without saying that they keep "
            "their authors' non-commercial licences"
        )
