"""VoVNetV2 building blocks: conv units and the One-Shot-Aggregation (OSA) module and stage.

Child names reproduce the keys of the original checkpoints. A unit is a run of children named
``"<unit>/conv"``, ``"<unit>/norm"``, ... ("/" is legal in a module name, "." is not), held in an
``nn.Sequential`` (:class:`ConvUnitSequence`) so that a key reads e.g.
``layers.0.OSA2_1_0/conv.weight``.
"""

from collections import OrderedDict
from typing import List, NamedTuple, Optional, Tuple

import torch
import torch.nn.functional as F
from detectron2.layers import FrozenBatchNorm2d
from torch import nn

from centermask.layers.deform_conv import DeformConv, offset_channels, split_offset_and_mask
from centermask.layers.ese import EffectiveSE
from centermask.layers.norm import NormSpec, make_norm

__all__ = [
    "ConvUnitSequence",
    "DeformableConvUnit",
    "DeformableSetting",
    "OSAModule",
    "conv_unit",
    "depthwise_unit",
    "make_osa_stage",
]

NamedModules = List[Tuple[str, nn.Module]]


class DeformableSetting(NamedTuple):
    """How the 3x3 layers of a stage are made deformable."""

    modulated: bool = False
    deformable_groups: int = 1


def _conv_with_frozen_norm(conv: nn.Conv2d, norm: FrozenBatchNorm2d, x: torch.Tensor):
    """``norm(conv(x))`` with the norm's per-channel affine map applied to the conv's weight and
    bias (C_out values) instead of to the output (N x C_out x H x W values)."""
    scale = norm.weight * torch.rsqrt(norm.running_var + norm.eps)
    shift = norm.bias - norm.running_mean * scale
    bias = shift if conv.bias is None else conv.bias * scale + shift
    return conv._conv_forward(x, conv.weight * scale.reshape(-1, 1, 1, 1), bias)


class ConvUnitSequence(nn.Sequential):
    """Conv units run in order (an ``nn.Sequential`` with the checkpoint's child names).

    In training mode, a FrozenBatchNorm2d right after a plain ``nn.Conv2d`` is applied through the
    conv's weights: the same function and the same gradients, but one pass over the activations
    instead of two in the forward pass and two in the backward pass (the frozen backbones of the
    published configs train about 5% faster). Evaluation runs the children one by one, which
    reproduces the original implementation bit for bit; ``optimize_for_inference`` folds the norms
    for good.
    """

    #: Set to False on an instance to always run the children one by one (benchmark baseline).
    fold_frozen_norms: bool = True

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not (self.training and self.fold_frozen_norms):
            return super().forward(x)
        children = list(self._modules.values())
        i = 0
        while i < len(children):
            child = children[i]
            following = children[i + 1] if i + 1 < len(children) else None
            if type(child) is nn.Conv2d and isinstance(following, FrozenBatchNorm2d):
                x = _conv_with_frozen_norm(child, following, x)
                i += 2
            else:
                x = child(x)
                i += 1
        return x


def conv_unit(
    name: str,
    in_channels: int,
    out_channels: int,
    norm: NormSpec,
    *,
    kernel_size: int = 3,
    stride: int = 1,
) -> NamedModules:
    """``<name>/conv`` (no bias) -> ``<name>/norm`` -> ``<name>/relu``."""
    conv = nn.Conv2d(
        in_channels, out_channels, kernel_size, stride, padding=kernel_size // 2, bias=False
    )
    return [
        (f"{name}/conv", conv),
        (f"{name}/norm", make_norm(norm, out_channels)),
        (f"{name}/relu", nn.ReLU(inplace=True)),
    ]


def depthwise_unit(
    name: str, in_channels: int, out_channels: int, norm: NormSpec, *, stride: int = 1
) -> NamedModules:
    """Depthwise-separable unit: 3x3 depthwise conv -> 1x1 pointwise conv -> norm -> ReLU.

    There is deliberately no norm or activation between the two convs.
    """
    depthwise = nn.Conv2d(
        in_channels, in_channels, 3, stride, padding=1, groups=in_channels, bias=False
    )
    pointwise = nn.Conv2d(in_channels, out_channels, 1, 1, padding=0, bias=False)
    return [
        (f"{name}/dw_conv3x3", depthwise),
        (f"{name}/pw_conv1x1", pointwise),
        (f"{name}/pw_norm", make_norm(norm, out_channels)),
        (f"{name}/pw_relu", nn.ReLU(inplace=True)),
    ]


class DeformableConvUnit(nn.Module):
    """3x3 deformable conv unit: offsets from ``<name>/conv_offset`` -> ``<name>/conv`` -> norm -> ReLU.

    ``<name>/conv_offset`` is a plain 3x3 conv with bias, zero-initialised, so a fresh unit
    samples the regular grid (with mask sigmoid(0) = 0.5 when modulated). ``<name>/conv`` and
    ``<name>/norm`` carry the same names and shapes as in a plain conv unit, so non-deformable
    weights load into it with only the ``conv_offset`` keys missing.
    """

    def __init__(
        self,
        name: str,
        in_channels: int,
        out_channels: int,
        norm: NormSpec,
        *,
        setting: DeformableSetting,
    ):
        super().__init__()
        self.modulated = setting.modulated
        self.deformable_groups = setting.deformable_groups
        conv_offset = nn.Conv2d(
            in_channels,
            offset_channels(3, self.deformable_groups, self.modulated),
            kernel_size=3,
            stride=1,
            padding=1,
            bias=True,
        )
        nn.init.zeros_(conv_offset.weight)
        nn.init.zeros_(conv_offset.bias)
        conv = DeformConv(
            in_channels,
            out_channels,
            3,
            stride=1,
            padding=1,
            deformable_groups=self.deformable_groups,
            bias=False,
        )
        # Registered under "/"-names only (no attribute aliases, which would duplicate the keys).
        self._unit_names = (f"{name}/conv_offset", f"{name}/conv", f"{name}/norm")
        for child_name, child in zip(
            self._unit_names, (conv_offset, conv, make_norm(norm, out_channels))
        ):
            self.add_module(child_name, child)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(N, C_in, H, W) -> (N, C_out, H, W)."""
        conv_offset, conv, norm = (self._modules[n] for n in self._unit_names)
        offset, mask = split_offset_and_mask(
            conv_offset(x), 3, self.deformable_groups, self.modulated
        )
        return F.relu_(norm(conv(x, offset, mask)))


class OSAModule(nn.Module):
    """One-Shot Aggregation module with eSE and an optional identity shortcut.

    ``x0`` -> [``conv_reduction``] -> L chained 3x3 units ``y1..yL`` -> ``concat`` 1x1 unit on
    cat(x0, y1, ..., yL) -> ``ese`` -> (+ x0 if ``identity``). The concatenation uses the
    un-reduced input x0.
    """

    def __init__(
        self,
        name: str,
        in_channels: int,
        stage_channels: int,
        concat_channels: int,
        num_layers: int,
        norm: NormSpec,
        *,
        identity: bool = False,
        depthwise: bool = False,
        deformable: Optional[DeformableSetting] = None,
    ):
        super().__init__()
        if identity and in_channels != concat_channels:
            raise ValueError(
                f"{name}: an identity shortcut needs in_channels == concat_channels, got "
                f"{in_channels} and {concat_channels}"
            )
        self.identity = identity
        self.conv_reduction = None
        layer_in = in_channels
        if depthwise and in_channels != stage_channels:
            reduction = conv_unit(
                f"{name}_reduction_0", in_channels, stage_channels, norm, kernel_size=1
            )
            self.conv_reduction = ConvUnitSequence(OrderedDict(reduction))
            layer_in = stage_channels

        layers = []
        for i in range(num_layers):
            layer_name = f"{name}_{i}"
            if deformable is not None:
                layer = DeformableConvUnit(
                    layer_name, layer_in, stage_channels, norm, setting=deformable
                )
            elif depthwise:
                layer = ConvUnitSequence(
                    OrderedDict(depthwise_unit(layer_name, layer_in, stage_channels, norm))
                )
            else:
                layer = ConvUnitSequence(
                    OrderedDict(conv_unit(layer_name, layer_in, stage_channels, norm))
                )
            layers.append(layer)
            layer_in = stage_channels
        self.layers = nn.ModuleList(layers)

        aggregated = in_channels + num_layers * stage_channels
        self.concat = ConvUnitSequence(
            OrderedDict(
                conv_unit(f"{name}_concat", aggregated, concat_channels, norm, kernel_size=1)
            )
        )
        self.ese = EffectiveSE(concat_channels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(N, in_channels, H, W) -> (N, concat_channels, H, W)."""
        outputs = [x]
        y = x if self.conv_reduction is None else self.conv_reduction(x)
        for layer in self.layers:
            y = layer(y)
            outputs.append(y)
        y = self.ese(self.concat(torch.cat(outputs, dim=1)))
        return y + x if self.identity else y


def make_osa_stage(
    stage_index: int,
    in_channels: int,
    stage_channels: int,
    concat_channels: int,
    num_blocks: int,
    num_layers: int,
    norm: NormSpec,
    *,
    depthwise: bool = False,
    deformable: Optional[DeformableSetting] = None,
) -> nn.Sequential:
    """Stage ``stage<k>``: [``Pooling`` max-pool 3x3 s2 ceil_mode for k > 2], ``OSA<k>_1``, ...

    Every module after the first takes ``concat_channels`` in and adds an identity shortcut.
    """
    children = []
    if stage_index > 2:
        children.append(("Pooling", nn.MaxPool2d(kernel_size=3, stride=2, ceil_mode=True)))
    for block in range(1, num_blocks + 1):
        name = f"OSA{stage_index}_{block}"
        module = OSAModule(
            name,
            in_channels if block == 1 else concat_channels,
            stage_channels,
            concat_channels,
            num_layers,
            norm,
            identity=block > 1,
            depthwise=depthwise,
            deformable=deformable,
        )
        children.append((name, module))
    return nn.Sequential(OrderedDict(children))
