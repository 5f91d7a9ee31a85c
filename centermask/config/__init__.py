"""The configuration keys this package adds to detectron2's, and helpers that edit a config.

* :mod:`.defaults`: :func:`add_centermask_config` (every key of the original centermask2, with its
  defaults, plus this package's) and :func:`get_cfg`;
* :mod:`.condinst`, :mod:`.centermask_pr`: the keys of the other two designs;
* :mod:`.dla`: the keys of the DLA backbone;
* :mod:`.class_counts`: the class-count keys, their agreement and counts taken from data sets;
* :mod:`.reference`: renders ``docs/CONFIG_REFERENCE.md`` (every added key, its default and
  comment) from this package: ``python -m centermask.config.reference --write``.
"""

from .class_counts import THING_CLASS_KEYS, apply_class_counts, check_class_counts
from .defaults import CenterMaskCfgNode, add_centermask_config, get_cfg

__all__ = [
    "CenterMaskCfgNode",
    "THING_CLASS_KEYS",
    "add_centermask_config",
    "apply_class_counts",
    "check_class_counts",
    "get_cfg",
]
