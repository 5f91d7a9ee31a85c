"""Writing weights converted from another code base as a checkpoint ``MODEL.WEIGHTS`` can name."""

from pathlib import Path
from typing import Mapping

import torch

__all__ = ["save_converted_checkpoint"]


def save_converted_checkpoint(model_state: Mapping[str, torch.Tensor], path, source: str) -> Path:
    """Write ``{"model": model_state, "__author__": ..., "matching_heuristics": False}`` to
    ``path`` (its folder created); the keys are loaded as they are, without detectron2's
    name-matching heuristics. ``source`` names where the weights came from. Returns the path."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    checkpoint = {
        "model": dict(model_state),
        "__author__": f"{source} (converted by centermask)",
        "matching_heuristics": False,
    }
    torch.save(checkpoint, path)
    return path
