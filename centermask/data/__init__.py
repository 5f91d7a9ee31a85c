"""Data: the built-in synthetic data set, checked COCO loading and a checked DatasetMapper.

Importing this package registers ``synthetic_{train,val}[_rle]`` and the crowded / sparse scene
kinds ``synthetic_{crowd,sparse}_{train,val}[_rle]`` (see :mod:`.builtin`).
"""

from .builtin import (
    SCENE_KIND_NAMES,
    SYNTHETIC_NAMES,
    default_synthetic_root,
    register_scene_kind,
    register_synthetic,
)
from .coco_checks import (
    CocoFormatError,
    load_coco_json_checked,
    register_coco_checked,
    validate_coco_dict,
)
from .command_line import parse_dataset_spec, register_dataset_specs
from .dataset_mapper import CheckedDatasetMapper, DatasetRecordError
from .image_guard import ImageTooLargeError
from .synthetic import ensure_synthetic, generate_synthetic
from .synthetic_scene import CLASS_NAMES

register_synthetic()
for _kind in SCENE_KIND_NAMES:
    register_scene_kind(_kind)

__all__ = [
    "CLASS_NAMES",
    "SCENE_KIND_NAMES",
    "SYNTHETIC_NAMES",
    "CheckedDatasetMapper",
    "CocoFormatError",
    "DatasetRecordError",
    "ImageTooLargeError",
    "default_synthetic_root",
    "ensure_synthetic",
    "generate_synthetic",
    "load_coco_json_checked",
    "parse_dataset_spec",
    "register_coco_checked",
    "register_dataset_specs",
    "register_scene_kind",
    "register_synthetic",
    "validate_coco_dict",
]
