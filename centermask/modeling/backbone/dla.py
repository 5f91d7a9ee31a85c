"""The DLA body (Deep Layer Aggregation, Yu et al., CVPR 2018) as CenterNet uses it: a stride-1
stem, two plain conv levels and four levels of tree aggregation, strides 1, 2, 4, ..., 32.

Module and key names follow timm's ``dla34`` (``base_layer``, ``level0`` ... ``level5``, with
``tree1``, ``tree2``, ``root``, ``project`` inside the trees), so timm's ImageNet state dict loads
strictly once its classifier ``fc.*`` is dropped (:func:`imagenet_dla_state_dict`). The original
UCB / CenterNet files also hold a ``project`` on the two-level trees (``level3``, ``level4``) that
their forward never reads; timm and this module leave it out, and the same function drops it.
"""

from typing import Dict, List, Mapping, NamedTuple, Optional, Sequence

import torch
from detectron2.layers import FrozenBatchNorm2d
from torch import nn

from centermask.layers.norm import NormSpec, check_norm, make_norm

__all__ = ["DLA_SPECS", "DLASpec", "DLA", "LEVEL_NAMES", "imagenet_dla_state_dict"]

LEVEL_NAMES = ("level0", "level1", "level2", "level3", "level4", "level5")


class DLASpec(NamedTuple):
    """Architecture of one DLA variant: convs (levels 0-1) or tree depth (levels 2-5) per level,
    and output channels per level."""

    levels: Sequence[int]
    channels: Sequence[int]


DLA_SPECS: Dict[str, DLASpec] = {
    "DLA-34": DLASpec(levels=(1, 1, 1, 2, 2, 1), channels=(16, 32, 64, 128, 256, 512)),
}


def _conv_norm_relu(in_channels: int, out_channels: int, kernel: int, stride: int, norm: NormSpec):
    # Indices 0 / 1 / 2 are part of the key layout (base_layer.0.weight, base_layer.1.weight, ...).
    return [
        nn.Conv2d(in_channels, out_channels, kernel, stride, kernel // 2, bias=False),
        make_norm(norm, out_channels),
        nn.ReLU(inplace=True),
    ]


class BasicBlock(nn.Module):
    """Two 3x3 conv + norm, a residual (given by the tree, or the input), ReLU."""

    def __init__(self, in_channels: int, out_channels: int, stride: int, norm: NormSpec):
        super().__init__()
        self.conv1 = nn.Conv2d(in_channels, out_channels, 3, stride, 1, bias=False)
        self.bn1 = make_norm(norm, out_channels)
        self.conv2 = nn.Conv2d(out_channels, out_channels, 3, 1, 1, bias=False)
        self.bn2 = make_norm(norm, out_channels)
        self.relu = nn.ReLU(inplace=True)

    def forward(self, x: torch.Tensor, residual: Optional[torch.Tensor] = None) -> torch.Tensor:
        residual = x if residual is None else residual
        out = self.relu(self.bn1(self.conv1(x)))
        return self.relu(self.bn2(self.conv2(out)) + residual)


class Root(nn.Module):
    """Aggregation node: 1x1 conv + norm over the concatenated children, ReLU (no residual: DLA-34
    has ``residual_root`` off)."""

    def __init__(self, in_channels: int, out_channels: int, norm: NormSpec):
        super().__init__()
        self.conv = nn.Conv2d(in_channels, out_channels, 1, bias=False)
        self.bn = make_norm(norm, out_channels)
        self.relu = nn.ReLU(inplace=True)

    def forward(self, children: List[torch.Tensor]) -> torch.Tensor:
        return self.relu(self.bn(self.conv(torch.cat(children, dim=1))))


class Tree(nn.Module):
    """A tree of depth ``depth`` over ``2 ** depth`` basic blocks (hierarchical aggregation).

    Depth 1: two blocks and a root over (block2, block1, *carried); the first block takes the
    (downsampled, projected) input as its residual. Depth d > 1: a depth-(d-1) tree, whose output
    is carried down to the root of a second depth-(d-1) tree. ``level_root`` carries the
    downsampled input itself to the root as well (levels 3-5).
    """

    def __init__(
        self,
        depth: int,
        in_channels: int,
        out_channels: int,
        stride: int,
        norm: NormSpec,
        level_root: bool = False,
        root_channels: int = 0,
    ):
        super().__init__()
        root_channels = root_channels or 2 * out_channels
        if level_root:
            root_channels += in_channels
        self.depth = depth
        self.level_root = level_root
        self.downsample = nn.MaxPool2d(stride, stride) if stride > 1 else nn.Identity()
        self.project: nn.Module = nn.Identity()
        self.root: Optional[Root] = None
        if depth == 1:
            self.tree1 = BasicBlock(in_channels, out_channels, stride, norm)
            self.tree2 = BasicBlock(out_channels, out_channels, 1, norm)
            if in_channels != out_channels:
                # Only a leaf's first block reads the projected residual, so only leaves have one.
                self.project = nn.Sequential(
                    nn.Conv2d(in_channels, out_channels, 1, bias=False),
                    make_norm(norm, out_channels),
                )
            self.root = Root(root_channels, out_channels, norm)
        else:
            self.tree1 = Tree(depth - 1, in_channels, out_channels, stride, norm)
            self.tree2 = Tree(
                depth - 1,
                out_channels,
                out_channels,
                1,
                norm,
                root_channels=root_channels + out_channels,
            )

    def forward(
        self,
        x: torch.Tensor,
        residual: Optional[torch.Tensor] = None,
        carried: Optional[List[torch.Tensor]] = None,
    ) -> torch.Tensor:
        """(N, C_in, H, W) -> (N, C_out, H / stride, W / stride). ``residual`` is unused (a
        sub-tree computes its own); ``carried``: earlier outputs that the last root also joins."""
        carried = [] if carried is None else carried
        bottom = self.downsample(x)
        if self.level_root:
            carried.append(bottom)
        if self.root is not None:
            x1 = self.tree1(x, self.project(bottom))
            x2 = self.tree2(x1)
            return self.root([x2, x1, *carried])
        x1 = self.tree1(x)
        carried.append(x1)
        return self.tree2(x1, carried=carried)


class DLA(nn.Module):
    """DLA body: (N, 3, H, W) -> the outputs of ``level0`` ... ``level5`` (strides 1 ... 32)."""

    def __init__(self, spec: DLASpec, norm: NormSpec = "BN", in_channels: int = 3):
        super().__init__()
        levels, channels = spec.levels, spec.channels
        check_norm(norm, channels, "MODEL.DLA.NORM")
        if norm == "":
            raise ValueError("MODEL.DLA.NORM must name a norm ('BN', 'FrozenBN', 'SyncBN', ...)")
        self.channels = tuple(channels)
        self.base_layer = nn.Sequential(*_conv_norm_relu(in_channels, channels[0], 7, 1, norm))
        self.level0 = self._conv_level(channels[0], channels[0], levels[0], 1, norm)
        self.level1 = self._conv_level(channels[0], channels[1], levels[1], 2, norm)
        for i in range(2, 6):
            tree = Tree(levels[i], channels[i - 1], channels[i], 2, norm, level_root=i > 2)
            self.add_module(LEVEL_NAMES[i], tree)
        self._init_weights()

    @staticmethod
    def _conv_level(in_channels, out_channels, convs, stride, norm) -> nn.Sequential:
        layers = []
        for i in range(convs):
            layers += _conv_norm_relu(in_channels, out_channels, 3, stride if i == 0 else 1, norm)
            in_channels = out_channels
        return nn.Sequential(*layers)

    def _init_weights(self) -> None:
        # He-normal over fan-out, as the ImageNet DLA models were initialised (training from
        # scratch starts here).
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")

    @property
    def strides(self) -> List[int]:
        return [2**i for i in range(len(LEVEL_NAMES))]

    def freeze(self, freeze_at: int = 0) -> "DLA":
        """``freeze_at`` 0 trains everything; n >= 1 freezes ``base_layer`` and ``level0`` ...
        ``level{max(n, 1)}`` (1: up to stride 2, like ResNet's stem; 2: + the stride-4 level)
        and turns their BatchNorms into FrozenBatchNorm2d."""
        if not 0 <= freeze_at <= 5:
            raise ValueError(
                f"MODEL.BACKBONE.FREEZE_AT={freeze_at} must be in 0..5 for DLA (0: nothing, "
                "1: base_layer + level0-1, n >= 2: base_layer + level0-n)"
            )
        if freeze_at == 0:
            return self
        for name in ("base_layer", *LEVEL_NAMES[: freeze_at + 1]):
            module = FrozenBatchNorm2d.convert_frozen_batchnorm(getattr(self, name))
            for p in module.parameters():
                p.requires_grad_(False)
            setattr(self, name, module)
        return self

    def forward(self, x: torch.Tensor) -> List[torch.Tensor]:
        """(N, 3, H, W) -> [(N, channels[i], H / 2**i, W / 2**i) for levels 0..5]."""
        x = self.base_layer(x)
        outputs = []
        for name in LEVEL_NAMES:
            x = getattr(self, name)(x)
            outputs.append(x)
        return outputs


def imagenet_dla_state_dict(state_dict: Mapping[str, torch.Tensor]) -> Dict[str, torch.Tensor]:
    """An ImageNet DLA state dict (timm's ``dla34`` or the original UCB file) in :class:`DLA`'s
    keys: the classifier ``fc.*`` (the detector has none) and the never-read ``project`` of the
    two-level trees (``level3.project.*``, ``level4.project.*``, only in the UCB layout) are
    dropped; a ``module.`` prefix is stripped. Everything else is kept as it is."""
    out = {}
    for key, value in state_dict.items():
        key = key[len("module.") :] if key.startswith("module.") else key
        if key.startswith("fc.") or _is_unused_project(key):
            continue
        out[key] = value
    return out


def _is_unused_project(key: str) -> bool:
    parts = key.split(".")
    # level3.project.* / level4.project.*: directly under a two-level tree (DLA-34's level3/4).
    return len(parts) >= 3 and parts[0] in ("level3", "level4") and parts[1] == "project"
