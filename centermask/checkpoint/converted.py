"""Writing weights converted from another code base as a checkpoint ``MODEL.WEIGHTS`` can name."""

from pathlib import Path
from typing import Mapping

import torch

from centermask.utils.file_io import atomic_write

from .loading import save_safetensors

__all__ = ["save_converted_checkpoint"]


def save_converted_checkpoint(
    model_state: Mapping[str, torch.Tensor],
    path,
    source: str,
    matching_heuristics: bool = False,
) -> Path:
    """Write ``model_state`` to ``path`` (its folder created), atomically: a ``.safetensors`` file
    (the tensors, with ``__author__`` and ``matching_heuristics`` in its metadata) when ``path``
    ends so, else a ``.pth`` of ``{"model": model_state, "__author__": ...,
    "matching_heuristics": ...}``. Without ``matching_heuristics`` the keys are loaded as they
    are; with it, by detectron2's name matching (e.g. Caffe2 names). ``source`` names where the
    weights came from. Returns the path."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    author = f"{source} (converted by centermask)"
    if path.suffix.lower() == ".safetensors":
        metadata = {"__author__": author, "matching_heuristics": str(matching_heuristics)}
        save_safetensors(model_state, path, metadata=metadata)
        return path
    checkpoint = {
        "model": dict(model_state),
        "__author__": author,
        "matching_heuristics": matching_heuristics,
    }
    atomic_write(str(path), lambda f: torch.save(checkpoint, f))
    return path
