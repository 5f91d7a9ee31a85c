"""A checkpointer whose writes are atomic.

A checkpoint is written to a temporary file in the same folder, flushed to disk and renamed over
its final name (``os.replace``); the ``last_checkpoint`` pointer is replaced the same way, after the
checkpoint it names is complete. A run killed at any moment therefore leaves either the previous or
the new checkpoint, never a truncated one, and ``--resume`` continues from the last good one.
"""

import os
from typing import Any

import torch

from centermask.checkpoint import CenterMaskCheckpointer
from centermask.utils.file_io import atomic_write

__all__ = ["AtomicCheckpointer", "atomic_write"]


def _is_local(path: str) -> bool:
    return "://" not in path


class AtomicCheckpointer(CenterMaskCheckpointer):
    """:class:`~centermask.checkpoint.CenterMaskCheckpointer` (same constructor, loading and file
    names as detectron2's ``DetectionCheckpointer``) with atomic saves.

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
