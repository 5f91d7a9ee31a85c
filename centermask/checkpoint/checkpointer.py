"""Checkpointers of CenterMask models: tolerant loading and atomic saving.

:class:`CenterMaskCheckpointer` is detectron2's ``DetectionCheckpointer`` plus two tolerances:

* the published CenterMask checkpoints may carry top-level ``pixel_mean`` / ``pixel_std``
  buffers (saved by detectron2 versions that made them persistent); they are dropped when the
  model does not store them, because the config provides them;
* a bare backbone state dict (keys such as ``stem.stem_1/conv.weight``, without the
  ``backbone.bottom_up.`` prefix of a detectron2 model) gets that prefix, so ImageNet weights
  load in either layout.

:class:`AtomicCheckpointer` adds atomic writes: a checkpoint is written to a temporary file in the
same folder, flushed to disk and renamed over its final name (``os.replace``); the
``last_checkpoint`` pointer is replaced the same way, after the checkpoint it names is complete. A
run killed at any moment therefore leaves either the previous or the new checkpoint, never a
truncated one, and ``--resume`` continues from the last good one.
"""

import logging
import os
from typing import Any, Dict, Mapping

import torch
from detectron2.checkpoint import DetectionCheckpointer

from centermask.utils.file_io import atomic_write

__all__ = [
    "AtomicCheckpointer",
    "BACKBONE_PREFIXES",
    "CenterMaskCheckpointer",
    "IGNORED_CHECKPOINT_KEYS",
]

logger = logging.getLogger(__name__)

IGNORED_CHECKPOINT_KEYS = ("pixel_mean", "pixel_std")
# Tried, in order, on checkpoints none of whose keys the model knows.
BACKBONE_PREFIXES = ("backbone.bottom_up.", "backbone.")


def _add_missing_prefix(weights: Mapping[str, Any], model_keys: set) -> Dict[str, Any]:
    """Prefix the keys of a bare backbone state dict; anything else is returned unchanged."""
    if not weights or any(k in model_keys for k in weights):
        return dict(weights)
    for prefix in BACKBONE_PREFIXES:
        matched = sum(prefix + k in model_keys for k in weights)
        if matched == len(weights):
            logger.info(f"Checkpoint keys lack the '{prefix}' prefix of the model; adding it.")
            return {prefix + k: v for k, v in weights.items()}
    return dict(weights)


class CenterMaskCheckpointer(DetectionCheckpointer):
    """``DetectionCheckpointer`` that ignores ``pixel_mean``/``pixel_std`` and bare backbones."""

    def load(self, path: str, *args: Any, **kwargs: Any) -> Dict[str, Any]:
        # detectron2 asserts that the file exists; a user's missing file is not a failed assertion
        if path and _is_local(path) and not os.path.isfile(path):
            raise FileNotFoundError(f"Checkpoint file {path!r} does not exist")
        return super().load(path, *args, **kwargs)

    def _load_model(self, checkpoint: Dict[str, Any]):
        model_keys = set(self.model.state_dict().keys())
        weights = checkpoint["model"]
        for key in IGNORED_CHECKPOINT_KEYS:
            if key in weights and key not in model_keys:
                weights.pop(key)
        if not checkpoint.get("matching_heuristics", False):
            checkpoint["model"] = _add_missing_prefix(weights, model_keys)
        return super()._load_model(checkpoint)


def _is_local(path: str) -> bool:
    return "://" not in path


class AtomicCheckpointer(CenterMaskCheckpointer):
    """:class:`CenterMaskCheckpointer` (same constructor, loading and file names as detectron2's
    ``DetectionCheckpointer``) with atomic saves.

    Remote ``save_dir`` (``manifold://`` etc.) falls back to the parent's non-atomic writes.
    """

    def save(self, name: str, **kwargs: Any) -> None:
        if not self.save_dir or not self.save_to_disk or not _is_local(self.save_dir):
            return super().save(name, **kwargs)
        data = {"model": self.model.state_dict()}
        for key, checkpointable in self.checkpointables.items():
            data[key] = checkpointable.state_dict()
        data.update(kwargs)
        basename = f"{name}.pth"
        path = os.path.join(self.save_dir, basename)
        self.logger.info(f"Saving checkpoint to {path}")
        os.makedirs(self.save_dir, exist_ok=True)
        atomic_write(path, lambda f: torch.save(data, f))
        self.tag_last_checkpoint(basename)

    def tag_last_checkpoint(self, last_filename_basename: str) -> None:
        if not _is_local(self.save_dir):
            return super().tag_last_checkpoint(last_filename_basename)
        path = os.path.join(self.save_dir, "last_checkpoint")
        atomic_write(path, lambda f: f.write(last_filename_basename), mode="w")
