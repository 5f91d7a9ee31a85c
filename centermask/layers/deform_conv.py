"""Deformable convolution (DCNv1 / modulated DCNv2) on top of ``torchvision.ops.deform_conv2d``.

torchvision's kernel runs on CPU and GPU, so deformable models need no compiled detectron2 ops.
Offsets follow the detectron2 / torchvision layout: for each deformable group, one (dy, dx) pair
per kernel tap, i.e. ``2 * kh * kw * deformable_groups`` channels.
"""

import math
from typing import Optional, Tuple, Union

import torch
from torch import nn
from torch.nn.modules.utils import _pair
from torchvision.ops import deform_conv2d

__all__ = ["DeformConv", "offset_channels", "split_offset_and_mask"]

_IntOrPair = Union[int, Tuple[int, int]]


def offset_channels(kernel_size: _IntOrPair, deformable_groups: int, modulated: bool) -> int:
    """Channels an offset-predicting conv must output: 2 (dy, dx) [+ 1 mask] per tap and group."""
    kh, kw = _pair(kernel_size)
    per_tap = 3 if modulated else 2
    return per_tap * kh * kw * deformable_groups


def split_offset_and_mask(
    raw: torch.Tensor, kernel_size: _IntOrPair, deformable_groups: int, modulated: bool
) -> Tuple[torch.Tensor, Optional[torch.Tensor]]:
    """Split the output of an offset conv into offsets and (for DCNv2) a sigmoid mask.

    Args:
        raw: (N, offset_channels(...), H, W).

    Returns:
        offset (N, 2*kh*kw*dg, H, W): the leading channels of ``raw``;
        mask (N, kh*kw*dg, H, W) = sigmoid of the trailing channels, or None when not modulated.
    """
    kh, kw = _pair(kernel_size)
    num_offset = 2 * kh * kw * deformable_groups
    expected = offset_channels(kernel_size, deformable_groups, modulated)
    if raw.shape[1] != expected:
        raise ValueError(
            f"offset tensor has {raw.shape[1]} channels; expected {expected} for a "
            f"{kh}x{kw} kernel, {deformable_groups} deformable group(s), modulated={modulated}"
        )
    if not modulated:
        return raw, None
    return raw[:, :num_offset], raw[:, num_offset:].sigmoid()


class DeformConv(nn.Module):
    """A deformable convolution whose offsets (and optional mask) are given to ``forward``.

    Holds only ``weight`` [out, in/groups, kh, kw] (and ``bias`` if requested), so a module that
    predicts the offsets can sit next to it under its own name, as in the VoVNet DCN unit.
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel_size: _IntOrPair,
        *,
        stride: _IntOrPair = 1,
        padding: _IntOrPair = 0,
        dilation: _IntOrPair = 1,
        groups: int = 1,
        deformable_groups: int = 1,
        bias: bool = False,
    ):
        super().__init__()
        if in_channels % groups or out_channels % groups:
            raise ValueError(
                f"in_channels ({in_channels}) and out_channels ({out_channels}) must be divisible "
                f"by groups ({groups})"
            )
        if in_channels % deformable_groups:
            raise ValueError(
                f"in_channels ({in_channels}) must be divisible by deformable_groups "
                f"({deformable_groups})"
            )
        self.in_channels = in_channels
        self.out_channels = out_channels
        self.kernel_size = _pair(kernel_size)
        self.stride = _pair(stride)
        self.padding = _pair(padding)
        self.dilation = _pair(dilation)
        self.groups = groups
        self.deformable_groups = deformable_groups
        self.weight = nn.Parameter(
            torch.empty(out_channels, in_channels // groups, *self.kernel_size)
        )
        self.bias = nn.Parameter(torch.empty(out_channels)) if bias else None
        self.reset_parameters()

    def reset_parameters(self) -> None:
        # Same default as nn.Conv2d, so a deformable layer starts like its plain counterpart.
        nn.init.kaiming_uniform_(self.weight, a=math.sqrt(5))
        if self.bias is not None:
            fan_in = self.weight[0].numel()
            bound = 1 / math.sqrt(fan_in) if fan_in > 0 else 0
            nn.init.uniform_(self.bias, -bound, bound)

    def forward(
        self, x: torch.Tensor, offset: torch.Tensor, mask: Optional[torch.Tensor] = None
    ) -> torch.Tensor:
        """
        Args:
            x: (N, in_channels, H, W).
            offset: (N, 2*kh*kw*deformable_groups, H_out, W_out).
            mask: (N, kh*kw*deformable_groups, H_out, W_out) modulation in [0, 1], or None.

        Returns:
            (N, out_channels, H_out, W_out).
        """
        taps = self.kernel_size[0] * self.kernel_size[1]
        if offset.shape[1] != 2 * taps * self.deformable_groups:
            raise ValueError(
                f"offset has {offset.shape[1]} channels; expected "
                f"{2 * taps * self.deformable_groups} (2 x {taps} taps x "
                f"{self.deformable_groups} deformable group(s))"
            )
        if mask is not None and mask.shape[1] != taps * self.deformable_groups:
            raise ValueError(
                f"mask has {mask.shape[1]} channels; expected {taps * self.deformable_groups}"
            )
        if x.numel() == 0:
            return self._empty_output(x)
        # torchvision infers the conv groups from the weight shape and the deformable groups
        # from the offset shape.
        return deform_conv2d(
            x,
            offset,
            self.weight,
            self.bias,
            stride=self.stride,
            padding=self.padding,
            dilation=self.dilation,
            mask=mask,
        )

    def _empty_output(self, x: torch.Tensor) -> torch.Tensor:
        size = [x.shape[0], self.out_channels]
        for i in range(2):
            extent = self.dilation[i] * (self.kernel_size[i] - 1) + 1
            size.append((x.shape[2 + i] + 2 * self.padding[i] - extent) // self.stride[i] + 1)
        # Keep the graph connected to the weight so empty batches still work under DDP.
        return x.new_zeros(size) + 0.0 * self.weight.sum()

    def extra_repr(self) -> str:
        return (
            f"{self.in_channels}, {self.out_channels}, kernel_size={self.kernel_size}, "
            f"stride={self.stride}, padding={self.padding}, dilation={self.dilation}, "
            f"groups={self.groups}, deformable_groups={self.deformable_groups}, "
            f"bias={self.bias is not None}"
        )
