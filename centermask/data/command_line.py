"""COCO-format data sets named on the command line, and class counts taken from them.

``tools/train_net.py --dataset NAME=ANNOTATIONS.json:IMAGE_DIR`` (and ``tools/demo.py``) register
``NAME`` through the checked loader (:func:`~centermask.data.register_coco_checked`), so that
``DATASETS.TRAIN`` / ``DATASETS.TEST`` of the same command can use it without a line of Python.
The categories are read at registration, so the data set's ``thing_classes`` are known before
anything else is loaded: :func:`apply_class_counts` then sets the model's class counts from them
when the user did not set those keys (in the config file, its bases, or the command line).

Registration happens in :func:`centermask.engine.build_config`, which every process of a
multi-process launch runs, with or without ``--eval-only``.
"""

import logging
import os
from dataclasses import dataclass
from typing import Any, Dict, Iterable, List, Optional, Sequence, Set

from detectron2.config import CfgNode
from detectron2.data import MetadataCatalog

from .coco_checks import CocoFormatError, read_coco_json, register_coco_checked

__all__ = [
    "DatasetSpec",
    "parse_dataset_spec",
    "read_category_metadata",
    "register_dataset_specs",
    "explicit_config_keys",
    "apply_class_counts",
]

logger = logging.getLogger(__name__)

_FORMAT = "NAME=ANNOTATIONS.json:IMAGE_DIR"


@dataclass(frozen=True)
class DatasetSpec:
    """One ``--dataset NAME=ANNOTATIONS.json:IMAGE_DIR`` argument."""

    name: str
    json_file: str
    image_root: str


def parse_dataset_spec(text: str) -> DatasetSpec:
    """Parse ``NAME=ANNOTATIONS.json:IMAGE_DIR``; a malformed value raises a ValueError naming it.

    The annotation file is split from the image folder at the ``:`` that follows ``.json``, so
    either path may itself contain ``:``.
    """
    name, sep, paths = text.partition("=")
    json_end = paths.lower().find(".json:") + len(".json")
    if not sep or not name.strip() or json_end < len(".json") or json_end + 1 >= len(paths):
        raise ValueError(f"--dataset {text!r}: expected {_FORMAT}")
    if any(c.isspace() for c in name) or "," in name:
        raise ValueError(f"--dataset {text!r}: the name {name!r} may not contain spaces or commas")
    return DatasetSpec(name, paths[:json_end], paths[json_end + 1 :])


def read_category_metadata(json_file: str) -> Dict[str, Any]:
    """``thing_classes`` and ``thing_dataset_id_to_contiguous_id`` of a COCO json, the same values
    detectron2's ``load_coco_json`` sets when it loads the file (categories sorted by id, which is
    the order of the model's class indices)."""
    data = read_coco_json(json_file)
    categories = data.get("categories") if isinstance(data, dict) else None
    if not isinstance(categories, list) or not categories:
        raise CocoFormatError(f"{json_file}: missing or empty top-level 'categories'")
    if not all(isinstance(c, dict) and "id" in c and "name" in c for c in categories):
        raise CocoFormatError(f"{json_file}: every category needs 'id' and 'name'")
    categories = sorted(categories, key=lambda c: c["id"])
    return {
        "thing_classes": [c["name"] for c in categories],
        "thing_dataset_id_to_contiguous_id": {c["id"]: i for i, c in enumerate(categories)},
    }


def register_dataset_specs(specs: Iterable[str]) -> List[str]:
    """Register every ``NAME=ANNOTATIONS.json:IMAGE_DIR`` (idempotent); returns the names.

    Missing files or folders fail here, naming them, rather than when the data set is first used.
    """
    names = []
    for text in specs:
        spec = parse_dataset_spec(text)
        json_file, image_root = os.path.abspath(spec.json_file), os.path.abspath(spec.image_root)
        if not os.path.isdir(image_root):
            raise FileNotFoundError(f"--dataset {text!r}: image folder not found: {image_root}")
        metadata = read_category_metadata(json_file)
        register_coco_checked(spec.name, metadata, json_file, image_root)
        logger.info(
            f"Registered data set {spec.name!r}: {json_file}, images in {image_root}, "
            f"{len(metadata['thing_classes'])} classes"
        )
        names.append(spec.name)
    return names


def _flat_keys(node, prefix: str = "") -> Set[str]:
    keys = set()
    for key, value in node.items():
        if isinstance(value, dict):
            keys |= _flat_keys(value, f"{prefix}{key}.")
        else:
            keys.add(prefix + key)
    return keys


def explicit_config_keys(config_file: Optional[str], opts: Sequence[str]) -> Set[str]:
    """The dotted keys a run sets itself: those in ``config_file`` (bases included) and the
    ``KEY VALUE`` overrides. Everything else keeps the default of ``get_cfg()``."""
    keys = set(opts[0::2])
    if config_file:
        keys |= _flat_keys(CfgNode.load_yaml_with_base(config_file, allow_unsafe=True))
    return keys


def _lookup(cfg: CfgNode, key: str):
    node = cfg
    for part in key.split("."):
        if not isinstance(node, dict) or part not in node:
            return None
        node = node[part]
    return node


def _assign(cfg: CfgNode, key: str, value) -> None:
    *parents, leaf = key.split(".")
    node = cfg
    for part in parents:
        node = node[part]
    node[leaf] = value


def apply_class_counts(
    cfg: CfgNode, keys: Sequence[str], explicit: Set[str], dataset_names: Sequence[str]
) -> None:
    """Set the class-count ``keys`` the run did not set (``explicit``) to the number of
    ``thing_classes`` of ``dataset_names`` (logged); an explicit value that disagrees raises a
    ValueError naming the keys. Data sets whose classes are not known before loading (no
    ``thing_classes`` metadata yet) are left to the trainer's check after loading.
    """
    known = {n: MetadataCatalog.get(n).get("thing_classes", None) for n in dataset_names}
    known = {n: c for n, c in known.items() if c is not None}
    if not known:
        return
    counts = {len(c) for c in known.values()}
    if len(counts) > 1:
        listed = ", ".join(f"{n!r}: {len(c)}" for n, c in known.items())
        raise ValueError(f"The data sets of this run have different class counts ({listed})")
    (count,) = counts
    names = ", ".join(map(repr, known))
    keys = [k for k in keys if _lookup(cfg, k) is not None]
    wrong = [k for k in keys if k in explicit and _lookup(cfg, k) != count]
    if wrong:
        values = ", ".join(f"{k}={_lookup(cfg, k)}" for k in wrong)
        raise ValueError(
            f"Data set {names} has {count} thing classes, but the config sets {values}. "
            f"Set {' and '.join(wrong)} to {count}, or leave them out of the config and the "
            "command line to take the count from the data set."
        )
    inferred = [k for k in keys if k not in explicit]
    for key in inferred:
        _assign(cfg, key, count)
    if inferred:
        logger.info(f"{' and '.join(inferred)} = {count}, the thing classes of {names}")
