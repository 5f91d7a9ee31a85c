"""Checked loading of COCO-format instance annotations.

:func:`load_coco_json_checked` validates a COCO instances json before handing it to detectron2's
``load_coco_json``, so a broken file fails with a message that names the file and the record at
fault, instead of a ``KeyError`` deep inside the data loader or, worse, a silently wrong data set.

Policy:

* **Errors** (``CocoFormatError``): missing, empty or non-JSON file; missing top-level ``images`` /
  ``annotations`` / ``categories``; no categories; an image without ``id``/``file_name`` or with a
  non-positive ``height``/``width``; duplicate image or annotation ids; an annotation that refers
  to an unknown image or category; a ``bbox`` that is not 4 finite numbers; an RLE whose ``size``
  disagrees with its image.
* **Logged skips** (a warning listing the file, the annotation ids and the reason; the instance is
  dropped, the image stays): degenerate boxes (width or height < ``min_box_side`` pixels, or lying
  entirely outside the image) and degenerate segmentations (no polygon with >= 3 points and a
  non-zero area). With ``strict=True`` these are errors too.
* Images without instances are kept. Training drops them through detectron2's
  ``DATALOADER.FILTER_EMPTY_ANNOTATIONS`` (on by default, logged as "Removed N images with no
  usable annotations"); evaluation keeps them, as COCO evaluation requires.
"""

import json
import logging
import math
import os
from typing import Dict, List, Optional, Sequence

from detectron2.data import DatasetCatalog, MetadataCatalog
from detectron2.data.datasets import load_coco_json, register_coco_instances

__all__ = [
    "CocoFormatError",
    "validate_coco_dict",
    "read_coco_json",
    "load_coco_json_checked",
    "register_coco_checked",
]

logger = logging.getLogger(__name__)

_MAX_LISTED = 10  # how many offending records a message names


class CocoFormatError(ValueError):
    """A COCO annotation file that cannot be used; the message names the file and the record."""


def _is_number(v) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)


def _polygon_area(coords: Sequence[float]) -> float:
    xs, ys = coords[0::2], coords[1::2]
    n = len(xs)
    return 0.5 * abs(sum(xs[i] * ys[(i + 1) % n] - xs[(i + 1) % n] * ys[i] for i in range(n)))


def _segmentation_problem(segm, image: dict, where: str) -> Optional[str]:
    """None if ``segm`` is usable, else the reason it is degenerate. Raises on malformed RLE."""
    if isinstance(segm, dict):
        size = segm.get("size")
        if "counts" not in segm or not isinstance(size, (list, tuple)) or len(size) != 2:
            raise CocoFormatError(f"{where}: RLE segmentation needs 'counts' and 'size' [h, w]")
        if list(size) != [image["height"], image["width"]]:
            raise CocoFormatError(
                f"{where}: RLE size {list(size)} disagrees with the image size "
                f"[{image['height']}, {image['width']}] of {image['file_name']!r}"
            )
        return None
    if not isinstance(segm, list):
        raise CocoFormatError(f"{where}: 'segmentation' must be a list of polygons or an RLE dict")
    usable = [
        p
        for p in segm
        if isinstance(p, list)
        and len(p) >= 6
        and len(p) % 2 == 0
        and all(_is_number(v) for v in p)
        and _polygon_area(p) > 0
    ]
    return None if usable else "degenerate polygon (fewer than 3 points or zero area)"


def validate_coco_dict(
    data, json_file: str, min_box_side: float = 1.0, strict: bool = False
) -> Dict[int, str]:
    """Check a parsed COCO instances json. Returns {annotation id: reason} of instances to skip."""
    if not isinstance(data, dict):
        raise CocoFormatError(f"{json_file}: top level must be a json object, got {type(data)}")
    for key in ("images", "annotations", "categories"):
        if not isinstance(data.get(key), list):
            raise CocoFormatError(f"{json_file}: missing or non-list top-level key {key!r}")
    if not data["categories"]:
        raise CocoFormatError(f"{json_file}: 'categories' is empty")
    category_ids = set()
    for cat in data["categories"]:
        if not isinstance(cat, dict) or "id" not in cat or "name" not in cat:
            raise CocoFormatError(f"{json_file}: category {cat!r} needs 'id' and 'name'")
        category_ids.add(cat["id"])

    images: Dict[int, dict] = {}
    for index, img in enumerate(data["images"]):
        where = f"{json_file}: images[{index}]"
        if not isinstance(img, dict) or "id" not in img or "file_name" not in img:
            raise CocoFormatError(f"{where} needs 'id' and 'file_name'")
        for side in ("height", "width"):
            if not (isinstance(img.get(side), int) and img[side] > 0):
                raise CocoFormatError(
                    f"{where} (file_name={img['file_name']!r}) has invalid {side} {img.get(side)!r}"
                )
        if img["id"] in images:
            raise CocoFormatError(f"{where}: duplicate image id {img['id']}")
        images[img["id"]] = img

    skipped: Dict[int, str] = {}
    annotation_ids = set()
    for index, ann in enumerate(data["annotations"]):
        where = f"{json_file}: annotations[{index}]"
        if not isinstance(ann, dict):
            raise CocoFormatError(f"{where} must be an object")
        where += f" (id={ann.get('id')!r}, image_id={ann.get('image_id')!r})"
        for key in ("id", "image_id", "category_id", "bbox"):
            if key not in ann:
                raise CocoFormatError(f"{where} has no {key!r}")
        if ann["id"] in annotation_ids:
            raise CocoFormatError(f"{where}: duplicate annotation id")
        annotation_ids.add(ann["id"])
        image = images.get(ann["image_id"])
        if image is None:
            raise CocoFormatError(f"{where} refers to an image id that is not in 'images'")
        if ann["category_id"] not in category_ids:
            raise CocoFormatError(
                f"{where}: category_id {ann['category_id']!r} not in 'categories'"
            )
        bbox = ann["bbox"]
        if not (isinstance(bbox, list) and len(bbox) == 4 and all(_is_number(v) for v in bbox)):
            raise CocoFormatError(f"{where}: 'bbox' must be 4 finite numbers [x, y, w, h]: {bbox}")
        x, y, w, h = bbox
        reason = None
        if w < min_box_side or h < min_box_side:
            reason = f"degenerate box {bbox} (side < {min_box_side} px)"
        elif x >= image["width"] or y >= image["height"] or x + w <= 0 or y + h <= 0:
            reason = f"box {bbox} lies outside the {image['width']}x{image['height']} image"
        elif "segmentation" in ann:
            reason = _segmentation_problem(ann["segmentation"], image, where)
        if reason is not None:
            if strict:
                raise CocoFormatError(f"{where} in {image['file_name']!r}: {reason}")
            skipped[ann["id"]] = f"{reason} in {image['file_name']!r}"
    return skipped


def read_coco_json(json_file: str, missing_hint: str = ""):
    """The parsed json; a missing (error message + ``missing_hint``), empty or non-json file
    raises an error naming it."""
    if not os.path.isfile(json_file):
        raise FileNotFoundError(f"COCO annotation file not found: {json_file}. {missing_hint}")
    if os.path.getsize(json_file) == 0:
        raise CocoFormatError(f"COCO annotation file is empty: {json_file}")
    with open(json_file) as f:
        try:
            return json.load(f)
        except ValueError as e:
            raise CocoFormatError(f"{json_file} is not valid json: {e}") from e


def load_coco_json_checked(
    json_file: str,
    image_root: str,
    dataset_name: Optional[str] = None,
    min_box_side: float = 1.0,
    strict: bool = False,
    missing_hint: str = "",
) -> List[dict]:
    """Validate ``json_file`` (see the module docstring), then load it with detectron2's
    ``load_coco_json``, minus the instances reported as degenerate (logged)."""
    json_file = os.fspath(json_file)
    data = read_coco_json(json_file, missing_hint)
    skipped = validate_coco_dict(data, json_file, min_box_side=min_box_side, strict=strict)
    del data
    if skipped:
        listed = "; ".join(f"id {i}: {r}" for i, r in list(skipped.items())[:_MAX_LISTED])
        more = f" (and {len(skipped) - _MAX_LISTED} more)" if len(skipped) > _MAX_LISTED else ""
        logger.warning(
            f"{json_file}: skipping {len(skipped)} degenerate instance(s): {listed}{more}"
        )

    records = load_coco_json(json_file, image_root, dataset_name, extra_annotation_keys=["id"])
    for record in records:
        record["annotations"] = [a for a in record["annotations"] if a.get("id") not in skipped]
    return records


def register_coco_checked(
    name: str,
    metadata: dict,
    json_file: str,
    image_root: str,
    strict: bool = False,
    missing_hint: str = "",
) -> None:
    """detectron2's ``register_coco_instances`` with :func:`load_coco_json_checked` as the loader.

    Idempotent: registering the same name with the same files again does nothing; registering it
    with different files replaces the earlier registration.
    """
    json_file, image_root = os.fspath(json_file), os.fspath(image_root)
    if name in DatasetCatalog.list():
        meta = MetadataCatalog.get(name)
        if meta.get("json_file") == json_file and meta.get("image_root") == image_root:
            return
        DatasetCatalog.remove(name)
        MetadataCatalog.remove(name)
    register_coco_instances(name, metadata, json_file, image_root)
    # Same metadata as register_coco_instances, but the records come through the checked loader.
    DatasetCatalog.remove(name)
    DatasetCatalog.register(
        name,
        lambda: load_coco_json_checked(
            json_file, image_root, name, strict=strict, missing_hint=missing_hint
        ),
    )
