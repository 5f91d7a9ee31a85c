"""Checkpoint loading for CenterMask models.

``CenterMaskCheckpointer`` is detectron2's ``DetectionCheckpointer`` plus two tolerances:

* the published CenterMask checkpoints may carry top-level ``pixel_mean`` / ``pixel_std``
  buffers (saved by detectron2 versions that made them persistent); they are dropped when the
  model does not store them, because the config provides them;
* a bare backbone state dict (keys such as ``stem.stem_1/conv.weight``, without the
  ``backbone.bottom_up.`` prefix of a detectron2 model) gets that prefix, so ImageNet weights
  load in either layout.
"""

import logging
from typing import Any, Dict, Mapping

from detectron2.checkpoint import DetectionCheckpointer

__all__ = ["CenterMaskCheckpointer", "IGNORED_CHECKPOINT_KEYS", "BACKBONE_PREFIXES"]

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

    def _load_model(self, checkpoint: Dict[str, Any]):
        model_keys = set(self.model.state_dict().keys())
        weights = checkpoint["model"]
        for key in IGNORED_CHECKPOINT_KEYS:
            if key in weights and key not in model_keys:
                weights.pop(key)
        if not checkpoint.get("matching_heuristics", False):
            checkpoint["model"] = _add_missing_prefix(weights, model_keys)
        return super()._load_model(checkpoint)
