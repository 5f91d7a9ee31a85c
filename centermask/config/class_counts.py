"""Class counts: the config keys that hold them, their agreement, and counts taken from data sets.

``--dataset NAME=ANNOTATIONS.json:IMAGE_DIR`` data sets know their classes once registered
(:mod:`centermask.data.command_line`); :func:`apply_class_counts` then sets the model's class counts
from them where the run did not set those keys itself (:func:`explicit_config_keys`).
"""

from typing import Optional, Sequence, Set

from detectron2.config import CfgNode
from detectron2.data import MetadataCatalog

__all__ = [
    "THING_CLASS_KEYS",
    "apply_class_counts",
    "check_class_counts",
    "describe_class_counts",
    "explicit_config_keys",
    "lookup_key",
]

# Every config key that holds the number of thing classes (no background class).
THING_CLASS_KEYS = ("MODEL.FCOS.NUM_CLASSES", "MODEL.ROI_HEADS.NUM_CLASSES")


def check_class_counts(cfg: CfgNode) -> None:
    """Raise a ValueError naming both keys when the FCOS and ROI-heads class counts disagree.

    The mask and MaskIoU heads index their outputs with FCOS's predicted class, so a mismatch would
    otherwise surface much later as an index error.
    """
    fcos_classes = cfg.MODEL.FCOS.NUM_CLASSES
    roi_classes = cfg.MODEL.ROI_HEADS.NUM_CLASSES
    if fcos_classes != roi_classes:
        raise ValueError(
            f"MODEL.FCOS.NUM_CLASSES ({fcos_classes}) and MODEL.ROI_HEADS.NUM_CLASSES "
            f"({roi_classes}) must be equal: set both to the number of thing classes of your "
            "data set (there is no background class)."
        )


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


def lookup_key(cfg: CfgNode, key: str):
    """The value of the dotted ``key`` in ``cfg``, None when the config has no such key."""
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
    ``thing_classes`` of ``dataset_names`` (see :func:`describe_class_counts`); an explicit value that disagrees raises a
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
    keys = [k for k in keys if lookup_key(cfg, k) is not None]
    wrong = [k for k in keys if k in explicit and lookup_key(cfg, k) != count]
    if wrong:
        values = ", ".join(f"{k}={lookup_key(cfg, k)}" for k in wrong)
        raise ValueError(
            f"Data set {names} has {count} thing classes, but the config sets {values}. "
            f"Set {' and '.join(wrong)} to {count}, or leave them out of the config and the "
            "command line to take the count from the data set."
        )
    for key in keys:
        if key not in explicit:
            _assign(cfg, key, count)


def describe_class_counts(cfg: CfgNode, keys: Sequence[str], dataset_names: Sequence[str]) -> str:
    """One line saying which class-count ``keys`` equal the thing classes of ``dataset_names``
    (those whose classes are known), e.g. "MODEL.FCOS.NUM_CLASSES and MODEL.ROI_HEADS.NUM_CLASSES
    = 3, the thing classes of 'mine_train'"; "" when no class count is known."""
    known = {n: MetadataCatalog.get(n).get("thing_classes", None) for n in dataset_names}
    known = {n: c for n, c in known.items() if c is not None}
    counts = {len(c) for c in known.values()}
    if len(counts) != 1:
        return ""
    (count,) = counts
    matching = [k for k in keys if lookup_key(cfg, k) == count]
    if not matching:
        return ""
    names = ", ".join(map(repr, known))
    return f"{' and '.join(matching)} = {count}, the thing classes of {names}"
