"""The package's import graph: no circle between modules, and no import from a lower layer to a
higher one (read from the sources, function-level imports included)."""

import ast
import importlib
from pathlib import Path
from typing import Dict, List, Set

from tests.support.helpers import ROOT

PACKAGE = ROOT / "centermask"

# Subpackages (and top-level modules) from the bottom up. A module may import its own
# subpackage and the layers below it; the same layer's other subpackages are off limits too, so
# that, e.g., the data pipeline never depends on the models.
LAYERS: List[Set[str]] = [
    {"utils", "designs"},
    {"config", "layers", "checkpoint"},
    {"data", "modeling", "evaluation"},
    {"model_zoo"},
    {"acceleration"},
    {"export"},
    {"engine"},
    {"benchmark"},
    {"diagnostics"},
    {"cli"},
]
LAYER_OF = {name: level for level, names in enumerate(LAYERS) for name in names}


def _module_name(path: Path, root: Path) -> str:
    parts = list(path.relative_to(root).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def import_graph(package: Path) -> Dict[str, Set[str]]:
    """{module: the package modules it imports}, for every module under ``package``."""
    modules = {_module_name(p, package.parent): p for p in package.rglob("*.py")}
    graph = {}
    for name, path in modules.items():
        parent = name if path.name == "__init__.py" else name.rpartition(".")[0]
        targets = set()
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                targets |= {alias.name for alias in node.names}
            elif isinstance(node, ast.ImportFrom):
                module = node.module
                if node.level:  # relative: up (level - 1) packages from this module's package
                    base = parent.split(".")[: len(parent.split(".")) - (node.level - 1)]
                    module = ".".join(base + ([node.module] if node.module else []))
                for alias in node.names:
                    submodule = f"{module}.{alias.name}"
                    targets.add(submodule if submodule in modules else module)
        graph[name] = {t for t in targets if t in modules and t != name}
    return graph


def _subpackage(module: str) -> str:
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else ""


def find_cycle(graph: Dict[str, Set[str]]) -> List[str]:
    """One circle of imports (its modules in order), or [] when there is none."""
    state: Dict[str, int] = {}  # 1: on the current path, 2: done
    path: List[str] = []

    def visit(node: str) -> List[str]:
        state[node] = 1
        path.append(node)
        for target in sorted(graph[node]):
            if state.get(target) == 1:
                return path[path.index(target) :] + [target]
            if target not in state:
                found = visit(target)
                if found:
                    return found
        state[node] = 2
        path.pop()
        return []

    for start in sorted(graph):
        if start not in state:
            found = visit(start)
            if found:
                return found
    return []


GRAPH = import_graph(PACKAGE)


def test_every_subpackage_has_a_layer():
    subpackages = {_subpackage(m) for m in GRAPH} - {""}
    assert subpackages <= set(LAYER_OF), sorted(subpackages - set(LAYER_OF))


def test_no_import_circle():
    assert find_cycle(GRAPH) == []


def test_no_import_from_a_lower_layer_to_a_higher_one():
    upward = []
    for module, targets in GRAPH.items():
        source = _subpackage(module)
        if not source:  # the package's __init__ sits above everything
            continue
        for target in targets:
            if _subpackage(target) == source:
                continue
            if not _subpackage(target) or LAYER_OF[_subpackage(target)] >= LAYER_OF[source]:
                upward.append(f"{module} -> {target}")
    assert not upward, upward


def test_the_checks_see_circles_and_upward_imports(tmp_path):
    """The graph reader and the circle search on a package written for the purpose."""
    package = tmp_path / "centermask"
    (package / "modeling").mkdir(parents=True)
    (package / "__init__.py").write_text("")
    (package / "modeling" / "__init__.py").write_text("from . import head\n")
    (package / "modeling" / "head.py").write_text(
        "from centermask.export import api\n\ndef f():\n    from . import loss\n"
    )
    (package / "modeling" / "loss.py").write_text("from .head import f\n")
    (package / "export").mkdir()
    (package / "export" / "__init__.py").write_text("")
    (package / "export" / "api.py").write_text("import centermask.modeling.head\n")
    graph = import_graph(package)
    assert graph["centermask.modeling.head"] == {
        "centermask.export.api",
        "centermask.modeling.loss",
    }
    cycle = find_cycle(graph)
    assert cycle and cycle[0] == cycle[-1] and len(cycle) >= 3


def test_every_module_imports():
    for module in sorted(GRAPH):
        importlib.import_module(module)
