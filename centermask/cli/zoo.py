"""``centermask zoo``: the published models, and fetching one into the cache.

    centermask zoo list
    centermask zoo fetch centermask/centermask_lite_V_39_eSE_FPN_ms_4x

The names are what ``--config-file centermask://NAME`` takes (see :mod:`centermask.model_zoo`).
"""

import argparse
import sys
from typing import List, Optional

from detectron2.utils.file_io import PathManager

from centermask.cli.common import command_parser, parse_and_run
from centermask.model_zoo import PUBLISHED_MODELS, cache_dir, canonical_name, get_config_file
from centermask.model_zoo.model_zoo import PREFIX

EPILOG = """
Examples:

  centermask zoo list
  centermask zoo fetch centermask/centermask_lite_V_39_eSE_FPN_ms_4x
  centermask demo --config-file centermask://centermask_lite_V_39_eSE_FPN_ms_4x \\
      --input photo.jpg --output out/

Checkpoints are downloaded once into $CENTERMASK_CACHE (default ~/.cache/centermask);
$CENTERMASK_MIRROR serves them from another base URL (file:///folder works).
"""

# Weight licences by the name's sub-folder (docs/MODEL_ZOO.md, "Licence of the weights").
WEIGHT_TERMS = {
    "centermask": "CC BY-NC 4.0 (non-commercial)",
    "condinst": "AdelaiDet: non-commercial use only",
}
LICENCE_NOTE = (
    "The code of this package is Apache-2.0; the published weights are the original authors' "
    "and keep their terms, which do not allow commercial use."
)


def build_parser(prog: Optional[str] = None) -> argparse.ArgumentParser:
    parser = command_parser(
        prog,
        "The published models: list them, or download one into the cache.",
        EPILOG,
        config_file=None,
    )
    actions = parser.add_subparsers(dest="action", required=True, metavar="{list,fetch}")
    actions.add_parser("list", help="name, COCO box / mask AP and weight terms of every model")
    fetch = actions.add_parser("fetch", help="download a model's checkpoint, print its path")
    fetch.add_argument("name", help="a name of `centermask zoo list` (centermask:// optional)")
    return parser


def _has_config(name: str) -> bool:
    try:
        get_config_file(name)
    except FileNotFoundError:
        return False
    return True


def format_models() -> str:
    """One row per published model: name, COCO val2017 box / mask AP (and PQ) as published,
    whether this package has its config, and the weight terms."""
    rows = [("name", "box AP", "mask AP", "PQ", "config", "weights")]
    for name, model in PUBLISHED_MODELS.items():
        pq = f"{model.pq:.1f}" if model.pq is not None else "-"
        config = "yes" if _has_config(name) else "no"
        terms = WEIGHT_TERMS.get(name.split("/", 1)[0], "the authors' terms")
        rows.append((name, f"{model.box_ap:.1f}", f"{model.mask_ap:.1f}", pq, config, terms))
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    lines = ["  ".join(cell.ljust(w) for cell, w in zip(row, widths)).rstrip() for row in rows]
    footer = [
        "",
        "Use a name as --config-file centermask://NAME (config and weights); a model without a "
        "config here can be fetched, not built.",
        LICENCE_NOTE,
    ]
    return "\n".join(lines + footer)


def fetch(name: str) -> str:
    """Local path of ``name``'s checkpoint, downloaded into the cache when it is not there."""
    return PathManager.get_local_path(PREFIX + canonical_name(name))


def command(args: argparse.Namespace) -> int:
    if args.action == "list":
        print(format_models())
    else:
        # The path alone on stdout, for scripts: the rest goes to stderr.
        print(f"cache: {cache_dir()}; {LICENCE_NOTE}", file=sys.stderr, flush=True)
        print(fetch(args.name))
    return 0


def main(argv: Optional[List[str]] = None) -> int:
    return parse_and_run(build_parser(), command, argv)
