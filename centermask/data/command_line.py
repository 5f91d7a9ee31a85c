"""COCO-format data sets named on the command line, and class counts taken from them.

``tools/train_net.py --dataset NAME=ANNOTATIONS.json:IMAGE_DIR`` (and ``tools/demo.py``) register
``NAME`` through the checked loader (:func:`~centermask.data.register_coco_checked`), so that
``DATASETS.TRAIN`` / ``DATASETS.TEST`` of the same command can use it without a line of Python.
The categories are read at registration, so the data set's ``thing_classes`` are known before
anything else is loaded: :func:`centermask.config.class_counts.apply_class_counts` then sets the
model's class counts from them when the user did not set those keys.

Registration happens in :func:`centermask.engine.build_config`, which every process of a
multi-process launch runs, with or without ``--eval-only``.
"""

import logging
import os
from dataclasses import dataclass
from typing import Any, Dict, Iterable, List, Tuple

from .coco_checks import CocoFormatError, read_coco_json, register_coco_checked

__all__ = [
    "DatasetSpec",
    "parse_dataset_spec",
    "read_category_metadata",
    "register_dataset_specs",
]

logger = logging.getLogger(__name__)

_FORMAT = "NAME=ANNOTATIONS.json:IMAGE_DIR"
# name -> (annotation file, image folder) of the specs this process has registered
_REGISTERED: Dict[str, Tuple[str, str]] = {}


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
    """Register every ``NAME=ANNOTATIONS.json:IMAGE_DIR``; returns the names.

    Missing files or folders fail here, naming them, rather than when the data set is first used.
    A spec this process has registered already is not read again.
    """
    names = []
    for text in specs:
        spec = parse_dataset_spec(text)
        json_file, image_root = os.path.abspath(spec.json_file), os.path.abspath(spec.image_root)
        if _REGISTERED.get(spec.name) == (json_file, image_root):
            names.append(spec.name)
            continue
        if not os.path.isdir(image_root):
            raise FileNotFoundError(f"--dataset {text!r}: image folder not found: {image_root}")
        metadata = read_category_metadata(json_file)
        register_coco_checked(spec.name, metadata, json_file, image_root)
        logger.info(
            f"Registered data set {spec.name!r}: {json_file}, images in {image_root}, "
            f"{len(metadata['thing_classes'])} classes"
        )
        _REGISTERED[spec.name] = (json_file, image_root)
        names.append(spec.name)
    return names
