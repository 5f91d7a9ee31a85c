"""DLA-34 with CenterNet's iterative up-path (``DLAUp`` + ``IDAUp``) to one stride-4 map, as a
detectron2 backbone (``build_dla_backbone``).

Module names follow CenterNet's ``DLASeg`` (``base``, ``dla_up.ida_<i>``, ``ida_up``; inside an
IDA step ``proj_<i>``, ``up_<i>``, ``node_<i>``, each conv unit ``conv`` + ``actf``), so the
converter of CenterNet's checkpoints (:mod:`.centernet_convert`) only renames the prefixes.

Each IDA step projects a coarser map to the finer map's channels (3x3 conv unit), upsamples it by
a depthwise transposed conv (initialised to bilinear interpolation, trained), adds the finer map
and merges the sum with another 3x3 conv unit. The conv units are modulated deformable convs
(DCNv2, through ``torchvision.ops.deform_conv2d``) as in CenterNet, or plain 3x3 convs
(``MODEL.DLA.DEFORMABLE_UP: False``), which export to ONNX.
"""

import math
from typing import Dict, List, Optional, Sequence

import torch
from detectron2.layers import ShapeSpec
from detectron2.modeling import BACKBONE_REGISTRY, Backbone
from torch import nn

from centermask.layers.deform_conv import DeformConv, split_offset_and_mask
from centermask.layers.norm import NormSpec, check_norm, make_norm

from .dla import DLA, DLA_SPECS

__all__ = ["ModulatedDeformConv3x3", "IDAUp", "DLAUp", "DLAUpBackbone", "build_dla_backbone"]

# CenterNet's down ratio 4: the up-path starts at level2 (stride 4) and reads levels 2..5.
FIRST_LEVEL = 2


class ModulatedDeformConv3x3(DeformConv):
    """A 3x3 modulated deformable conv (DCNv2) predicting its own offsets and mask.

    ``conv_offset_mask`` (3x3, 27 channels: 18 offsets as (dy, dx) per tap, then 9 mask logits)
    starts at zero, so the layer starts as a plain 3x3 conv with its mask at 0.5.
    """

    def __init__(self, in_channels: int, out_channels: int):
        super().__init__(in_channels, out_channels, 3, padding=1, bias=True)
        nn.init.zeros_(self.bias)
        self.conv_offset_mask = nn.Conv2d(in_channels, 27, 3, padding=1)
        nn.init.zeros_(self.conv_offset_mask.weight)
        nn.init.zeros_(self.conv_offset_mask.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # type: ignore[override]
        """(N, C_in, H, W) -> (N, C_out, H, W)."""
        offset, mask = split_offset_and_mask(self.conv_offset_mask(x), 3, 1, modulated=True)
        return super().forward(x, offset, mask)


class UpConv(nn.Module):
    """3x3 conv (deformable or plain, with bias) -> norm -> ReLU, keeping the size."""

    def __init__(self, in_channels: int, out_channels: int, norm: NormSpec, deformable: bool):
        super().__init__()
        if deformable:
            self.conv: nn.Module = ModulatedDeformConv3x3(in_channels, out_channels)
        else:
            self.conv = nn.Conv2d(in_channels, out_channels, 3, padding=1)
        self.actf = nn.Sequential(make_norm(norm, out_channels), nn.ReLU(inplace=True))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.actf(self.conv(x))


def bilinear_upsampling_(weight: torch.Tensor) -> torch.Tensor:
    """Fill a depthwise transposed-conv weight (C, 1, 2f, 2f) (stride f, padding f // 2) in place
    with the bilinear interpolation kernel, so the layer starts as x f bilinear upsampling."""
    size = weight.shape[-1]
    factor = math.ceil(size / 2)
    center = (2 * factor - 1 - factor % 2) / (2.0 * factor)
    taps = 1 - (torch.arange(size, dtype=torch.float64) / factor - center).abs()
    with torch.no_grad():
        weight.copy_((taps[:, None] * taps[None, :]).to(weight.dtype).expand_as(weight))
    return weight


class IDAUp(nn.Module):
    """Iterative deep aggregation up to the first (finest) of a list of maps.

    Map i >= 1 (``in_channels[i]`` channels, ``up_factors[i]`` times coarser than map 0) becomes
    ``node_i(up_i(proj_i(map_i)) + result_{i-1})``, result_0 being map 0 (which must already have
    ``out_channels``).
    """

    def __init__(
        self,
        out_channels: int,
        in_channels: Sequence[int],
        up_factors: Sequence[int],
        norm: NormSpec,
        deformable: bool,
    ):
        super().__init__()
        self.num_inputs = len(in_channels)
        for i in range(1, self.num_inputs):
            factor = int(up_factors[i])
            up = nn.ConvTranspose2d(
                out_channels,
                out_channels,
                2 * factor,
                stride=factor,
                padding=factor // 2,
                groups=out_channels,
                bias=False,
            )
            bilinear_upsampling_(up.weight)
            self.add_module(f"proj_{i}", UpConv(in_channels[i], out_channels, norm, deformable))
            self.add_module(f"up_{i}", up)
            self.add_module(f"node_{i}", UpConv(out_channels, out_channels, norm, deformable))

    def forward(self, maps: List[torch.Tensor]) -> List[torch.Tensor]:
        """maps (N, C_i, H / s_i, W / s_i), finest first -> the running results, each (N,
        out_channels, H / s_0, W / s_0); the last one aggregates every map."""
        results = [maps[0]]
        for i in range(1, self.num_inputs):
            up = getattr(self, f"up_{i}")(getattr(self, f"proj_{i}")(maps[i]))
            results.append(getattr(self, f"node_{i}")(up + results[-1]))
        return results


class DLAUp(nn.Module):
    """CenterNet's ``DLAUp``: IDA steps from the coarsest pair of levels to the finest.

    Step k aggregates levels (L-2-k) .. L-1 of its input (the coarser ones already replaced by
    the outputs of step k-1) up to level L-2-k. Returns one map per level, finest first: level
    i's aggregate (channels[i], stride of level i), and the coarsest level as it came in.
    """

    def __init__(self, channels: Sequence[int], norm: NormSpec, deformable: bool):
        super().__init__()
        channels = list(channels)
        scales = [2**i for i in range(len(channels))]
        in_channels = list(channels)
        for k in range(len(channels) - 1):
            j = len(channels) - 2 - k
            factors = [s // scales[j] for s in scales[j:]]
            self.add_module(
                f"ida_{k}", IDAUp(channels[j], in_channels[j:], factors, norm, deformable)
            )
            # After this step the coarser maps have level j's stride and channels.
            scales[j + 1 :] = [scales[j]] * (len(channels) - j - 1)
            in_channels[j + 1 :] = [channels[j]] * (len(channels) - j - 1)
        self.num_levels = len(channels)

    def forward(self, levels: List[torch.Tensor]) -> List[torch.Tensor]:
        """levels (N, channels[i], H / 2**i, W / 2**i), finest first -> same shapes."""
        levels = list(levels)
        outputs = [levels[-1]]
        for k in range(self.num_levels - 1):
            j = self.num_levels - 2 - k
            levels[j:] = getattr(self, f"ida_{k}")(levels[j:])
            outputs.insert(0, levels[-1])
        return outputs


class DLAUpBackbone(Backbone):
    """DLA body + DLAUp over levels 2-5 + IDAUp over the stride-4, -8, -16 results ->
    ``{out_feature: (N, channels[2], H / 4, W / 4)}`` (64 channels for DLA-34)."""

    def __init__(
        self,
        *,
        conv_body: str = "DLA-34",
        norm: NormSpec = "BN",
        up_norm: NormSpec = "BN",
        deformable_up: bool = True,
        out_feature: str = "up4",
        freeze_at: int = 0,
        in_channels: int = 3,
    ):
        """
        Args:
            conv_body: a key of ``DLA_SPECS``.
            norm: norm of the body ("BN", "FrozenBN", "SyncBN", ...).
            up_norm: norm of the up-path's conv units.
            deformable_up: DCNv2 3x3 convs in the up-path (CenterNet) or plain 3x3 convs.
            out_feature: name of the output map.
            freeze_at: see :meth:`DLA.freeze`.
        """
        super().__init__()
        if conv_body not in DLA_SPECS:
            raise ValueError(
                f"MODEL.DLA.CONV_BODY={conv_body!r} is not a known DLA; choose one of "
                f"{sorted(DLA_SPECS)}"
            )
        channels = DLA_SPECS[conv_body].channels
        check_norm(up_norm, channels[FIRST_LEVEL:], "MODEL.DLA.UP_NORM")
        if up_norm == "":
            raise ValueError("MODEL.DLA.UP_NORM must name a norm ('BN', 'SyncBN', ...)")
        self.base = DLA(DLA_SPECS[conv_body], norm, in_channels).freeze(freeze_at)
        up_channels = channels[FIRST_LEVEL:]
        self.dla_up = DLAUp(up_channels, up_norm, deformable_up)
        # The final IDA reads the up-path's results at strides 4, 8 and 16 (CenterNet's
        # last_level 5), bringing them to stride 4 with the stride-4 channels.
        last = len(up_channels) - 1
        self.ida_up = IDAUp(
            up_channels[0], up_channels[:last], [2**i for i in range(last)], up_norm, deformable_up
        )
        self.deformable_up = deformable_up
        self.out_feature = out_feature
        self._out_features = [out_feature]
        self._out_feature_channels = {out_feature: up_channels[0]}
        self._out_feature_strides = {out_feature: 2**FIRST_LEVEL}

    @property
    def size_divisibility(self) -> int:
        # Each upsampled map must meet its finer neighbour exactly: H, W multiples of 32.
        return 2 ** (len(self.base.channels) - 1)

    def forward(self, x: torch.Tensor) -> Dict[str, torch.Tensor]:
        """(N, 3, H, W), H and W multiples of 32 -> {out_feature: (N, 64, H / 4, W / 4)}."""
        divisor = self.size_divisibility
        # Not while tracing (ONNX export): traced sizes would freeze this check into the graph.
        if not torch.jit.is_tracing() and (
            x.dim() != 4 or x.shape[-2] % divisor or x.shape[-1] % divisor
        ):
            raise ValueError(
                f"DLA with its up-path takes (N, C, H, W) inputs with H and W multiples of "
                f"{divisor}, got shape {tuple(x.shape)}"
            )
        levels = self.base(x)[FIRST_LEVEL:]
        ups = self.dla_up(levels)
        return {self.out_feature: self.ida_up(ups[: len(ups) - 1])[-1]}


@BACKBONE_REGISTRY.register()
def build_dla_backbone(cfg, input_shape: Optional[ShapeSpec] = None) -> DLAUpBackbone:
    """DLA + CenterNet's up-path from ``MODEL.DLA.*`` and ``MODEL.BACKBONE.FREEZE_AT``."""
    dla = cfg.MODEL.DLA
    return DLAUpBackbone(
        conv_body=dla.CONV_BODY,
        norm=dla.NORM,
        up_norm=dla.UP_NORM,
        deformable_up=dla.DEFORMABLE_UP,
        out_feature=dla.OUT_FEATURE,
        freeze_at=cfg.MODEL.BACKBONE.FREEZE_AT,
        in_channels=input_shape.channels if input_shape is not None else 3,
    )
