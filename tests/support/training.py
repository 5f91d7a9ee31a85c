"""What a training run fed its model: recorded by a forward pre-hook, for tests that must prove
the variant they name (AMP, RLE masks) actually ran."""

import math

import torch
from torch import nn


class TrainingInputsRecorder:
    """Per training forward: the GT mask types of the batch and whether CPU autocast was on
    (and to which dtype)."""

    def __init__(self, model: nn.Module):
        self.calls = []
        self.handle = model.register_forward_pre_hook(self._record)

    def _record(self, module, args):
        batch = args[0]
        if not module.training:
            return
        masks = [x["instances"].gt_masks for x in batch if x["instances"].has("gt_masks")]
        self.calls.append(
            {
                "mask_types": {type(m).__name__ for m in masks},
                "mask_pixels": sum(int(m.tensor.sum()) for m in masks if hasattr(m, "tensor")),
                "autocast": torch.is_autocast_enabled("cpu"),
                "autocast_dtype": torch.get_autocast_dtype("cpu"),
            }
        )


def finite_losses(storage, name: str) -> list:
    """The logged values of ``name``; asserts each is a finite float."""
    values = [v for v, _ in storage.history(name).values()]
    assert all(isinstance(v, float) and math.isfinite(v) for v in values), (name, values)
    return values
