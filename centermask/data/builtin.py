"""Registration of the built-in synthetic data set.

``import centermask.data`` calls :func:`register_synthetic` with ``<root>/synthetic``, where
``<root>`` is ``$DETECTRON2_DATASETS`` (default ``datasets``, relative to the working directory),
the same convention as detectron2's builtin COCO/LVIS/Cityscapes registrations. Registration is
lazy (nothing is read until a data set is used) and idempotent; call ``register_synthetic(path)``
to point the names at another folder (it replaces the earlier registration).

Registered names (``thing_classes`` = :data:`CLASS_NAMES`, evaluator_type "coco"):

=========================  ====================================================
``synthetic_train``        train split, polygon annotations
``synthetic_val``          val split, polygon annotations
``synthetic_train_rle``    train split, the same instances as compressed RLE
``synthetic_val_rle``      val split, compressed RLE
=========================  ====================================================
"""

import os
from pathlib import Path
from typing import List

from .coco_checks import register_coco_checked
from .synthetic import SPLITS, annotation_path
from .synthetic_scene import CLASS_NAMES

__all__ = ["SYNTHETIC_NAMES", "default_synthetic_root", "register_synthetic"]

SYNTHETIC_NAMES = tuple(f"synthetic_{s}{v}" for s in SPLITS for v in ("", "_rle"))


def default_synthetic_root() -> Path:
    """``$DETECTRON2_DATASETS/synthetic`` (``datasets/synthetic`` when the variable is unset)."""
    return Path(os.getenv("DETECTRON2_DATASETS", "datasets")) / "synthetic"


def register_synthetic(root=None) -> List[str]:
    """Register the four synthetic data sets found (or to be generated) under ``root``.

    The files need not exist yet; using a data set whose files are missing raises an error that
    says how to generate them (``python -m centermask.data.synthetic --out <root>``).
    Returns the registered names.
    """
    root = Path(os.path.abspath(root if root is not None else default_synthetic_root()))
    hint = f"Generate it with: python -m centermask.data.synthetic --out {root}"
    metadata = {"thing_classes": list(CLASS_NAMES), "synthetic_root": str(root)}
    for split in SPLITS:
        for rle in (False, True):
            name = f"synthetic_{split}{'_rle' if rle else ''}"
            register_coco_checked(
                name,
                metadata,
                str(annotation_path(root, split, rle)),
                str(root / split),
                missing_hint=hint,
            )
    return list(SYNTHETIC_NAMES)
