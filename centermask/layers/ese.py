"""Effective Squeeze-Excitation (eSE), the channel attention of VoVNetV2 / CenterMask."""

import torch
import torch.nn.functional as F
from torch import nn

__all__ = ["EffectiveSE", "hard_sigmoid"]


def hard_sigmoid(x: torch.Tensor) -> torch.Tensor:
    """relu6(x + 3) / 6: exactly 0 below -3, exactly 1 above 3."""
    return F.relu6(x + 3.0) / 6.0


class EffectiveSE(nn.Module):
    """x * hard_sigmoid(fc(mean_hw(x))) with a full (non-reduced) 1x1 conv ``fc`` with bias.

    Setting ``fc.weight = 0`` and ``fc.bias = 3`` makes the module an exact identity.
    """

    def __init__(self, channels: int):
        super().__init__()
        self.fc = nn.Conv2d(channels, channels, kernel_size=1, padding=0, bias=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(N, C, H, W) -> (N, C, H, W)."""
        gate = hard_sigmoid(self.fc(x.mean(dim=(2, 3), keepdim=True)))
        return x * gate
