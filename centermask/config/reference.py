"""The reference of every config key this package adds to detectron2's config, rendered from the
code: ``docs/CONFIG_REFERENCE.md``.

The keys and their defaults come from the config itself: a fresh detectron2 config before and
after :func:`~centermask.config.add_centermask_config` (keys added inside detectron2's own nodes
included). Each key's description is the first sentence of the comment directly above its
assignment in ``centermask/config/*.py`` (or of its trailing comment), read with :mod:`ast` and
:mod:`tokenize`; a key without one gets an empty description.

    python -m centermask.config.reference --write    # regenerate docs/CONFIG_REFERENCE.md
    python -m centermask.config.reference --check    # exit status 1 when the file is out of date
"""

import argparse
import ast
import io
import sys
import tokenize
from pathlib import Path
from typing import Any, Dict, Iterable, List, Optional, Sequence, Tuple

from detectron2.config import CfgNode
from detectron2.config import get_cfg as detectron2_get_cfg

__all__ = [
    "REFERENCE_PATH",
    "added_keys",
    "key_comments",
    "keys_without_description",
    "render_reference",
]

CONFIG_SOURCES = Path(__file__).resolve().parent
REFERENCE_PATH = CONFIG_SOURCES.parents[1] / "docs" / "CONFIG_REFERENCE.md"
WRITE_COMMAND = "python -m centermask.config.reference --write"


def _flatten(node: CfgNode, prefix: str = "") -> Dict[str, Any]:
    """``{"MODEL.FCOS.NUM_CLASSES": 80, ...}``: the leaves of ``node`` in definition order."""
    leaves = {}
    for name, value in node.items():
        key = f"{prefix}{name}"
        if isinstance(value, CfgNode):
            leaves.update(_flatten(value, key + "."))
        else:
            leaves[key] = value
    return leaves


def added_keys() -> Dict[str, Any]:
    """Every key :func:`add_centermask_config` adds to a fresh detectron2 config, with its
    default, in the order they are defined."""
    from centermask.config import add_centermask_config

    before = _flatten(detectron2_get_cfg())
    after = _flatten(add_centermask_config(detectron2_get_cfg()))
    return {key: value for key, value in after.items() if key not in before}


def _is_decoration(comment: str) -> bool:
    """A ruler line of a section header (``# ----- #``)."""
    return not comment.strip("#-=*~ \t")


def _first_sentence(text: str) -> str:
    """Up to the first full stop followed by a capital letter, outside parentheses."""
    depth = 0
    for i, char in enumerate(text):
        depth += {"(": 1, ")": -1}.get(char, 0)
        if char == "." and depth == 0 and text[i + 1 : i + 3].strip()[:1].isupper():
            if text[i + 1 : i + 2] == " ":
                return text[: i + 1]
    return text


def _comments_by_line(source: str) -> Tuple[Dict[int, str], Dict[int, str]]:
    """(comments alone on their line, trailing comments), keyed by line number, ``#`` removed."""
    alone, trailing = {}, {}
    code_lines = set()
    for token in tokenize.generate_tokens(io.StringIO(source).readline):
        if token.type == tokenize.COMMENT:
            line = token.start[0]
            text = token.string.lstrip("#").strip()
            (trailing if line in code_lines else alone)[line] = text
        elif token.type not in (tokenize.NL, tokenize.NEWLINE, tokenize.INDENT, tokenize.DEDENT):
            code_lines.update(range(token.start[0], token.end[0] + 1))
    return alone, trailing


def _description(line: int, alone: Dict[int, str], trailing: Dict[int, str]) -> str:
    block: List[str] = []
    above = line - 1
    while above in alone:
        if _is_decoration("#" + alone[above]):
            break  # a section header: not about this key
        block.insert(0, alone[above])
        above -= 1
    text = " ".join(block) or trailing.get(line, "")
    return _first_sentence(" ".join(text.split()))


def _dotted(node: ast.AST, aliases: Dict[str, str]) -> Optional[str]:
    """``cfg.MODEL.FCOS`` -> ``"MODEL.FCOS"`` when ``cfg`` is a known config alias."""
    parts = []
    while isinstance(node, ast.Attribute):
        parts.insert(0, node.attr)
        node = node.value
    if not isinstance(node, ast.Name) or node.id not in aliases:
        return None
    return ".".join(p for p in [aliases[node.id], *parts] if p)


def _assignments(function: ast.FunctionDef) -> Iterable[Tuple[str, int]]:
    """(dotted key, line) of every config assignment in an ``add_*_config(cfg)`` function,
    following aliases such as ``_C = cfg`` and ``pr = cfg.MODEL.CENTERMASK_PR = CN()``."""
    aliases = {function.args.args[0].arg: ""}
    for node in ast.walk(function):
        if not isinstance(node, ast.Assign):
            continue
        paths = [_dotted(t, aliases) for t in node.targets if isinstance(t, ast.Attribute)]
        paths = [p for p in paths if p is not None]
        for path in paths:
            yield path, node.lineno
        value_path = _dotted(node.value, aliases)
        for target in node.targets:
            if isinstance(target, ast.Name):
                alias = value_path if value_path is not None else (paths[0] if paths else None)
                if alias is not None:
                    aliases[target.id] = alias


def key_comments(sources: Optional[Sequence[Path]] = None) -> Dict[str, str]:
    """``{key: description}`` for every key assigned in the config sources' ``add_*_config``
    functions (default: the ``.py`` files of ``centermask/config``)."""
    if sources is None:
        sources = sorted(CONFIG_SOURCES.glob("*.py"))
    descriptions: Dict[str, str] = {}
    for path in sources:
        source = Path(path).read_text()
        alone, trailing = _comments_by_line(source)
        for function in ast.walk(ast.parse(source, filename=str(path))):
            if not isinstance(function, ast.FunctionDef) or not function.args.args:
                continue
            if not (function.name.startswith("add_") and function.name.endswith("_config")):
                continue
            for key, line in _assignments(function):
                descriptions.setdefault(key, _description(line, alone, trailing))
    return descriptions


def keys_without_description(sources: Optional[Sequence[Path]] = None) -> List[str]:
    """The added keys whose assignment has no comment (listed so that one can be written)."""
    descriptions = key_comments(sources)
    return [key for key in added_keys() if not descriptions.get(key)]


def _format_default(value: Any) -> str:
    if isinstance(value, str):
        text = f'"{value}"'
    elif isinstance(value, (list, tuple)):
        items = ", ".join(_format_default(v).strip("`") for v in value)
        text = (
            f"[{items}]"
            if isinstance(value, list)
            else f"({items}{',' if len(value) == 1 else ''})"
        )
    else:
        text = str(value)
    return f"`{text}`"


def _cell(text: str) -> str:
    return text.replace("|", "\\|")


def render_reference(sources: Optional[Sequence[Path]] = None) -> str:
    """The text of ``docs/CONFIG_REFERENCE.md``."""
    descriptions = key_comments(sources)
    keys = added_keys()
    lines = [
        "# Config reference",
        "",
        "<!-- Generated by `" + WRITE_COMMAND + "` from centermask/config/*.py; do not edit. -->",
        "",
        f"The {len(keys)} keys that `centermask.config.add_centermask_config` (and so",
        "`centermask.config.get_cfg`) adds to detectron2's config, with their defaults. Every other",
        "key is detectron2's own: see its [config reference]"
        "(https://detectron2.readthedocs.io/en/latest/modules/config.html#yaml-config-references).",
        "The configs in `configs/` set many of these keys; a YAML file or `KEY VALUE` pairs on the",
        "command line override them.",
    ]
    sections: Dict[str, List[str]] = {}  # parent node -> its keys, in definition order
    for key in keys:
        sections.setdefault(key.rpartition(".")[0], []).append(key)
    for section, section_keys in sections.items():
        lines += ["", f"## `{section}`", "", "| key | default | description |", "|---|---|---|"]
        for key in section_keys:
            default = _cell(_format_default(keys[key]))
            description = _cell(descriptions.get(key, "").replace("``", "`"))
            lines.append(f"| `{key}` | {default} | {description} |")
    return "\n".join(lines) + "\n"


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description="Render docs/CONFIG_REFERENCE.md from the code.")
    action = parser.add_mutually_exclusive_group()
    action.add_argument("--write", action="store_true", help=f"write {REFERENCE_PATH.name}")
    action.add_argument("--check", action="store_true", help="exit 1 when the file is out of date")
    args = parser.parse_args(argv)
    text = render_reference()
    if args.write:
        REFERENCE_PATH.write_text(text)
        print(f"wrote {REFERENCE_PATH}")
    elif args.check:
        current = REFERENCE_PATH.read_text() if REFERENCE_PATH.is_file() else ""
        if current != text:
            print(f"{REFERENCE_PATH} is out of date; run: {WRITE_COMMAND}", file=sys.stderr)
            return 1
    else:
        sys.stdout.write(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
