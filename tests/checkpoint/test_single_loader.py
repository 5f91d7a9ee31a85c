"""Every checkpoint read of the package and its tools goes through the one safe loader."""

import re

from tests.support.helpers import ROOT

LOADER = ROOT / "centermask" / "checkpoint" / "loading.py"
# Calls that read pickles (torch's format included) or safetensors files.
FORBIDDEN = re.compile(
    r"\btorch\.load\(|\bserialization\.load\(|\bpickle\.loads?\(|\bUnpickler\b"
    r"|from pickle import|from torch import load\b|safetensors\.torch import load|safe_open\("
)


def _offending_lines():
    files = sorted((ROOT / "centermask").rglob("*.py")) + sorted((ROOT / "tools").rglob("*.py"))
    assert len(files) > 20, "package and tools not found"
    for path in files:
        if path == LOADER:
            continue
        for number, line in enumerate(path.read_text().splitlines(), 1):
            if FORBIDDEN.search(line):
                yield f"{path.relative_to(ROOT)}:{number}: {line.strip()}"


def test_only_the_loader_reads_pickles_or_torch_files():
    assert list(_offending_lines()) == []


def test_the_pattern_catches_a_direct_torch_load():
    assert FORBIDDEN.search('state = torch.load(path, map_location="cpu")')
    assert FORBIDDEN.search("data = pickle.load(f, encoding='latin1')")
    assert not FORBIDDEN.search("state = load_checkpoint(path)")
