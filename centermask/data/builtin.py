"""Registration of the built-in synthetic data set and of its crowded / sparse scene kinds.

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
``synthetic_crowd_train``   crowded scenes (:mod:`.synthetic_crowd`), under
``synthetic_crowd_val``     ``<root>/synthetic_crowd``; also ``..._rle``
``synthetic_sparse_train``  the sparse control, under ``<root>/synthetic_sparse``;
``synthetic_sparse_val``    also ``..._rle``
=========================  ====================================================

``python -m centermask.data.synthetic --kind crowd --out <root>/synthetic_crowd`` (or
:func:`ensure_synthetic` with :data:`CROWD_SCENE`) writes the crowded files, ``--kind sparse``
the sparse ones.
"""

import os
from pathlib import Path
from typing import List

from .coco_checks import register_coco_checked
from .synthetic import SPLITS, annotation_path
from .synthetic_crowd import SCENE_KINDS
from .synthetic_scene import CLASS_NAMES

__all__ = [
    "SYNTHETIC_NAMES",
    "SCENE_KIND_NAMES",
    "default_synthetic_root",
    "register_synthetic",
    "register_scene_kind",
]

SYNTHETIC_NAMES = tuple(f"synthetic_{s}{v}" for s in SPLITS for v in ("", "_rle"))
SCENE_KIND_NAMES = {
    kind: tuple(f"synthetic_{kind}_{s}{v}" for s in SPLITS for v in ("", "_rle"))
    for kind in SCENE_KINDS
}


def default_synthetic_root(kind: str = "default") -> Path:
    """``$DETECTRON2_DATASETS/synthetic`` (``datasets/synthetic`` when the variable is unset), or
    ``.../synthetic_<kind>`` for the ``crowd`` and ``sparse`` scene kinds."""
    folder = "synthetic" if kind == "default" else f"synthetic_{kind}"
    return Path(os.getenv("DETECTRON2_DATASETS", "datasets")) / folder


def register_synthetic(root=None) -> List[str]:
    """Register the four synthetic data sets found (or to be generated) under ``root``.

    The files need not exist yet; using a data set whose files are missing raises an error that
    says how to generate them (``python -m centermask.data.synthetic --out <root>``).
    Returns the registered names.
    """
    return _register("synthetic", root if root is not None else default_synthetic_root(), "")


def register_scene_kind(kind: str, root=None) -> List[str]:
    """Register ``synthetic_<kind>_{train,val}[_rle]`` (``kind``: "crowd" or "sparse") found (or
    to be generated) under ``root`` (default :func:`default_synthetic_root` of the kind)."""
    if kind not in SCENE_KINDS:
        raise ValueError(f"scene kind must be one of {SCENE_KINDS}, got {kind!r}")
    root = root if root is not None else default_synthetic_root(kind)
    return _register(f"synthetic_{kind}", root, f" --kind {kind}")


def _register(prefix: str, root, kind_option: str) -> List[str]:
    root = Path(os.path.abspath(root))
    hint = f"Generate it with: python -m centermask.data.synthetic{kind_option} --out {root}"
    metadata = {"thing_classes": list(CLASS_NAMES), "synthetic_root": str(root)}
    names = []
    for split in SPLITS:
        for rle in (False, True):
            name = f"{prefix}_{split}{'_rle' if rle else ''}"
            names.append(name)
            register_coco_checked(
                name,
                metadata,
                str(annotation_path(root, split, rle)),
                str(root / split),
                missing_hint=hint,
            )
    return names
