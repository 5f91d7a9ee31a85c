"""Checkpointers of CenterMask models: tolerant loading and atomic saving.

:class:`CenterMaskCheckpointer` is detectron2's ``DetectionCheckpointer`` plus two tolerances:

* the published CenterMask checkpoints may carry top-level ``pixel_mean`` / ``pixel_std``
  buffers (saved by detectron2 versions that made them persistent); they are dropped when the
  model does not store them, because the config provides them;
* a bare backbone state dict (keys such as ``stem.stem_1/conv.weight``, without the
  ``backbone.bottom_up.`` prefix of a detectron2 model) gets that prefix, so ImageNet weights
  load in either layout.

Every file is read by :func:`.loading.load_detectron2_checkpoint` (no pickle global outside
weights is ever resolved: ``.pth`` through torch's weights-only unpickler, ``.pkl`` through a
restricted one, ``.safetensors``), and ``resume_or_load(resume=True)`` skips damaged checkpoints:
it resumes from the newest one of ``save_dir`` that loads.

:class:`AtomicCheckpointer` adds atomic writes: a checkpoint is written to a temporary file in the
same folder, flushed to disk and renamed over its final name (``os.replace``); the
``last_checkpoint`` pointer is replaced the same way, after the checkpoint it names is complete. A
run killed at any moment therefore leaves either the previous or the new checkpoint, never a
truncated one, and ``--resume`` continues from the last good one. A write that fails (a full
disk, a read-only folder) raises an ``OSError`` naming the file and the errno, and leaves the
previous checkpoint and pointer as they were.
"""

import logging
import os
import re
from typing import Any, Dict, List, Mapping, Tuple

import torch
from detectron2.checkpoint import DetectionCheckpointer

from centermask.utils.file_io import atomic_write, named_write_error

from .loading import CheckpointLoadError, load_detectron2_checkpoint

__all__ = [
    "AtomicCheckpointer",
    "BACKBONE_PREFIXES",
    "CenterMaskCheckpointer",
    "IGNORED_CHECKPOINT_KEYS",
    "NoLoadableCheckpointError",
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


class NoLoadableCheckpointError(CheckpointLoadError):
    """``--resume`` found checkpoints in the output folder, but none of them loads."""


_ITERATION = re.compile(r"model_(\d+)\.pth$")


class CenterMaskCheckpointer(DetectionCheckpointer):
    """``DetectionCheckpointer`` that reads every file with the safe loader, resumes from the
    newest checkpoint that loads, and ignores ``pixel_mean``/``pixel_std`` and bare backbones."""

    def _load_file(self, filename: str) -> Dict[str, Any]:
        preloaded = getattr(self, "_preloaded", None)
        if preloaded is not None and preloaded[0] == filename:
            self._preloaded = None
            return preloaded[1]
        data = load_detectron2_checkpoint(filename)
        if "__author__" in data:
            self.logger.info(f"Reading a file from '{data['__author__']}'")
        return data

    def resume_candidates(self) -> List[str]:
        """Checkpoints of ``save_dir`` to resume from, best first: the one ``last_checkpoint``
        names, then ``model_final.pth`` and ``model_<iteration>.pth`` by falling iteration."""
        if not self.save_dir or not self.path_manager.isdir(self.save_dir):
            return []
        names = [n for n in self.path_manager.ls(self.save_dir) if _ITERATION.match(n)]
        names.sort(key=lambda n: int(_ITERATION.match(n).group(1)), reverse=True)
        if "model_final.pth" in self.path_manager.ls(self.save_dir):
            names.insert(0, "model_final.pth")
        pointed = os.path.basename(self.get_checkpoint_file()) if self.has_checkpoint() else ""
        if pointed:
            names = [pointed] + [n for n in names if n != pointed]
        return [os.path.join(self.save_dir, n) for n in names]

    def _first_loadable(self, candidates: List[str]) -> Tuple[str, Dict[str, Any]]:
        skipped: List[str] = []
        for path in candidates:
            try:
                if not os.path.isfile(path):
                    raise CheckpointLoadError(path, "the file does not exist")
                data = self._load_file(path)
                weights = data.get("model")
                if not isinstance(weights, Mapping) or not weights:
                    raise CheckpointLoadError(path, "it holds no model weights")
                if not all(isinstance(v, torch.Tensor) for v in weights.values()):
                    raise CheckpointLoadError(path, "its 'model' entry is not a dict of tensors")
            except CheckpointLoadError as e:
                self.logger.warning(f"Skipping checkpoint {path}: {e.reason}")
                skipped.append(f"{path} ({e.reason})")
                continue
            if skipped:
                self.logger.warning(
                    f"Resuming from {path}, the newest checkpoint that loads; skipped: "
                    + "; ".join(skipped)
                )
            return path, data
        raise NoLoadableCheckpointError(
            self.save_dir,
            "--resume found checkpoints, but none of them loads: "
            + "; ".join(skipped)
            + ". Delete or move them to train from MODEL.WEIGHTS instead.",
        )

    def resume_or_load(self, path: str, *, resume: bool = True) -> Dict[str, Any]:
        """fvcore's ``resume_or_load``, except that a damaged newest checkpoint (truncated,
        empty, not a checkpoint) is skipped, with a warning naming it and why, in favour of the
        newest one that loads; an error names them all when none does."""
        candidates = self.resume_candidates() if resume else []
        if not candidates:
            return super().resume_or_load(path, resume=resume)
        found, data = self._first_loadable(candidates)
        self._preloaded = (found, data)
        return self.load(found)

    def has_resume_candidate(self) -> bool:
        """Whether ``resume_or_load(resume=True)`` resumes from a checkpoint of ``save_dir``."""
        return bool(self.resume_candidates())

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
        try:
            os.makedirs(self.save_dir, exist_ok=True)
        except OSError as e:
            raise named_write_error(e, self.save_dir) from e
        note = "No checkpoint was written; last_checkpoint still names the previous one."
        atomic_write(path, lambda f: torch.save(data, f), failure_note=note)
        self.tag_last_checkpoint(basename)

    def tag_last_checkpoint(self, last_filename_basename: str) -> None:
        if not _is_local(self.save_dir):
            return super().tag_last_checkpoint(last_filename_basename)
        path = os.path.join(self.save_dir, "last_checkpoint")
        atomic_write(path, lambda f: f.write(last_filename_basename), mode="w")
