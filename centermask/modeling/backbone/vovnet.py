"""VoVNetV2 (eSE-VoVNet) backbone, weight-compatible with the original CenterMask checkpoints."""

from collections import OrderedDict
from typing import Dict, NamedTuple, Optional, Sequence, Union

import torch
from detectron2.config import configurable
from detectron2.layers import FrozenBatchNorm2d, ShapeSpec
from detectron2.modeling import BACKBONE_REGISTRY, Backbone
from torch import nn

from centermask.layers.norm import NormSpec, check_norm

from .osa import ConvUnitSequence, DeformableSetting, conv_unit, depthwise_unit, make_osa_stage

__all__ = ["VOVNET_SPECS", "VoVNetSpec", "VoVNet", "build_vovnet_backbone"]

STAGE_NAMES = ("stage2", "stage3", "stage4", "stage5")


class VoVNetSpec(NamedTuple):
    """Architecture of one VoVNet variant (stages 2..5 in the per-stage tuples)."""

    stem_channels: Sequence[int]
    stage_channels: Sequence[int]
    concat_channels: Sequence[int]
    layers_per_block: int
    blocks_per_stage: Sequence[int]
    depthwise: bool


_WIDE_STAGES = dict(stage_channels=(128, 160, 192, 224), concat_channels=(256, 512, 768, 1024))
_SLIM_STAGES = dict(stage_channels=(64, 80, 96, 112), concat_channels=(112, 256, 384, 512))

VOVNET_SPECS: Dict[str, VoVNetSpec] = {
    "V-19-slim-dw-eSE": VoVNetSpec(
        stem_channels=(64, 64, 64),
        layers_per_block=3,
        blocks_per_stage=(1, 1, 1, 1),
        depthwise=True,
        **_SLIM_STAGES,
    ),
    "V-19-dw-eSE": VoVNetSpec(
        stem_channels=(64, 64, 64),
        layers_per_block=3,
        blocks_per_stage=(1, 1, 1, 1),
        depthwise=True,
        **_WIDE_STAGES,
    ),
    "V-19-slim-eSE": VoVNetSpec(
        stem_channels=(64, 64, 128),
        layers_per_block=3,
        blocks_per_stage=(1, 1, 1, 1),
        depthwise=False,
        **_SLIM_STAGES,
    ),
    "V-19-eSE": VoVNetSpec(
        stem_channels=(64, 64, 128),
        layers_per_block=3,
        blocks_per_stage=(1, 1, 1, 1),
        depthwise=False,
        **_WIDE_STAGES,
    ),
    "V-39-eSE": VoVNetSpec(
        stem_channels=(64, 64, 128),
        layers_per_block=5,
        blocks_per_stage=(1, 1, 2, 2),
        depthwise=False,
        **_WIDE_STAGES,
    ),
    "V-57-eSE": VoVNetSpec(
        stem_channels=(64, 64, 128),
        layers_per_block=5,
        blocks_per_stage=(1, 1, 4, 3),
        depthwise=False,
        **_WIDE_STAGES,
    ),
    "V-99-eSE": VoVNetSpec(
        stem_channels=(64, 64, 128),
        layers_per_block=5,
        blocks_per_stage=(1, 3, 9, 3),
        depthwise=False,
        **_WIDE_STAGES,
    ),
}


def get_vovnet_spec(conv_body: Union[str, VoVNetSpec]) -> VoVNetSpec:
    """The spec for a ``MODEL.VOVNET.CONV_BODY`` name (a spec passes through)."""
    if isinstance(conv_body, VoVNetSpec):
        return conv_body
    if conv_body not in VOVNET_SPECS:
        raise ValueError(
            f"MODEL.VOVNET.CONV_BODY={conv_body!r} is unknown; choose one of "
            f"{', '.join(VOVNET_SPECS)}"
        )
    return VOVNET_SPECS[conv_body]


def _make_stem(spec: VoVNetSpec, in_channels: int, norm: NormSpec) -> nn.Sequential:
    """stem_1 (3x3 s2) -> stem_2 (3x3 s1) -> stem_3 (3x3 s2): output stride 4."""
    s1, s2, s3 = spec.stem_channels
    second_and_third = depthwise_unit if spec.depthwise else conv_unit
    children = conv_unit("stem_1", in_channels, s1, norm, stride=2)
    children += second_and_third("stem_2", s1, s2, norm, stride=1)
    children += second_and_third("stem_3", s2, s3, norm, stride=2)
    return ConvUnitSequence(OrderedDict(children))


class VoVNet(Backbone):
    """VoVNetV2 with eSE on every OSA module and identity shortcuts, as in CenterMask.

    Outputs a dict of the requested features among ``stem`` (stride 4), ``stage2`` (4),
    ``stage3`` (8), ``stage4`` (16) and ``stage5`` (32), each (N, C, ceil(H/s), ceil(W/s)).
    """

    @configurable
    def __init__(
        self,
        *,
        conv_body: Union[str, VoVNetSpec],
        out_features: Sequence[str],
        norm: NormSpec = "FrozenBN",
        freeze_at: int = 0,
        stage_with_dcn: Sequence[bool] = (False, False, False, False),
        with_modulated_dcn: bool = False,
        deformable_groups: int = 1,
        in_channels: int = 3,
    ):
        """
        Args:
            conv_body: a ``VOVNET_SPECS`` name such as "V-39-eSE", or a ``VoVNetSpec``.
            out_features: names of the returned features (see the class docstring).
            norm: any norm accepted by detectron2's ``get_norm``.
            freeze_at: 0 trains everything; n > 0 freezes the stem (1) and stages 2..n, and turns
                the BatchNorms of exactly those parts into FrozenBatchNorm2d.
            stage_with_dcn: per stage 2..5, whether its 3x3 layers are deformable.
            with_modulated_dcn: DCNv2 (offsets and a mask) instead of DCNv1 (offsets only).
            deformable_groups: offset groups of the deformable convs.
            in_channels: channels of the input image.
        """
        super().__init__()
        spec = get_vovnet_spec(conv_body)
        self._check_arguments(spec, out_features, freeze_at, stage_with_dcn, deformable_groups)
        norm_channels = list(spec.stem_channels) + list(spec.stage_channels)
        norm_channels += list(spec.concat_channels)
        check_norm(norm, norm_channels, setting="MODEL.VOVNET.NORM")

        self.stem = _make_stem(spec, in_channels, norm)
        channels = {"stem": spec.stem_channels[-1]}
        strides = {"stem": 4}
        previous = spec.stem_channels[-1]
        # Only the stages up to the last requested feature: a stage past it would get no
        # gradient, which DistributedDataParallel (find_unused_parameters=False) rejects. Its
        # weights in a checkpoint are reported as unused keys when loading.
        last = max(([-1] + [STAGE_NAMES.index(f) for f in out_features if f in STAGE_NAMES]))
        self._stage_names = STAGE_NAMES[: last + 1]
        for i, name in enumerate(self._stage_names):
            deformable = None
            if stage_with_dcn[i]:
                deformable = DeformableSetting(bool(with_modulated_dcn), int(deformable_groups))
            stage = make_osa_stage(
                i + 2,
                previous,
                spec.stage_channels[i],
                spec.concat_channels[i],
                spec.blocks_per_stage[i],
                spec.layers_per_block,
                norm,
                depthwise=spec.depthwise,
                deformable=deformable,
            )
            self.add_module(name, stage)
            previous = spec.concat_channels[i]
            channels[name] = previous
            strides[name] = 4 if i == 0 else strides[STAGE_NAMES[i - 1]] * 2

        self._out_features = list(out_features)
        self._out_feature_channels = {f: channels[f] for f in self._out_features}
        self._out_feature_strides = {f: strides[f] for f in self._out_features}
        self._in_channels = in_channels
        self.freeze(freeze_at)

    @staticmethod
    def _check_arguments(spec, out_features, freeze_at, stage_with_dcn, deformable_groups):
        known = ("stem",) + STAGE_NAMES
        unknown = [f for f in out_features if f not in known]
        if unknown or not out_features:
            raise ValueError(
                f"MODEL.VOVNET.OUT_FEATURES={list(out_features)} must be a non-empty subset of "
                f"{list(known)}"
            )
        if not 0 <= freeze_at <= 1 + len(STAGE_NAMES):
            raise ValueError(
                f"MODEL.BACKBONE.FREEZE_AT={freeze_at} must be in 0..5 for VoVNet "
                "(0: nothing, 1: stem, 2: stem + stage2, ..., 5: everything)"
            )
        if len(stage_with_dcn) != len(STAGE_NAMES):
            raise ValueError(
                f"MODEL.VOVNET.STAGE_WITH_DCN={tuple(stage_with_dcn)} needs one flag per stage "
                "2..5 (4 values)"
            )
        if any(stage_with_dcn) and spec.depthwise:
            raise ValueError(
                f"MODEL.VOVNET.STAGE_WITH_DCN={tuple(stage_with_dcn)} is not supported for the "
                "depthwise VoVNets (CONV_BODY '*-dw-*'): their 3x3 layers are depthwise convs"
            )
        if any(stage_with_dcn) and deformable_groups < 1:
            raise ValueError(f"MODEL.VOVNET.DEFORMABLE_GROUPS={deformable_groups} must be >= 1")

    @classmethod
    def from_config(cls, cfg, input_shape: Optional[ShapeSpec] = None):
        return {
            "conv_body": cfg.MODEL.VOVNET.CONV_BODY,
            "out_features": cfg.MODEL.VOVNET.OUT_FEATURES,
            "norm": cfg.MODEL.VOVNET.NORM,
            "freeze_at": cfg.MODEL.BACKBONE.FREEZE_AT,
            "stage_with_dcn": cfg.MODEL.VOVNET.STAGE_WITH_DCN,
            "with_modulated_dcn": cfg.MODEL.VOVNET.WITH_MODULATED_DCN,
            "deformable_groups": cfg.MODEL.VOVNET.DEFORMABLE_GROUPS,
            "in_channels": input_shape.channels if input_shape is not None else 3,
        }

    def freeze(self, freeze_at: int = 0) -> "VoVNet":
        """Freeze the stem (``freeze_at >= 1``) and stages 2..``freeze_at``; nothing else.

        Frozen parts get ``requires_grad = False`` and their BatchNorm/SyncBatchNorm layers become
        FrozenBatchNorm2d (FrozenBN and GN stay what they are).
        """
        parts = ["stem", *self._stage_names][:freeze_at]
        for name in parts:
            module = FrozenBatchNorm2d.convert_frozen_batchnorm(getattr(self, name))
            for p in module.parameters():
                p.requires_grad_(False)
            setattr(self, name, module)
        return self

    def forward(self, x: torch.Tensor) -> Dict[str, torch.Tensor]:
        """
        Args:
            x: (N, in_channels, H, W) normalised images.

        Returns:
            {name: (N, C_name, H / stride, W / stride) rounded up} for each of ``out_features``.
        """
        if x.dim() != 4 or x.shape[1] != self._in_channels:
            raise ValueError(
                f"VoVNet takes (N, {self._in_channels}, H, W) inputs, got shape {tuple(x.shape)}"
            )
        wanted = set(self._out_features)
        outputs = {}
        x = self.stem(x)
        if "stem" in wanted:
            outputs["stem"] = x
        for name in self._stage_names:
            x = getattr(self, name)(x)
            if name in wanted:
                outputs[name] = x
        return outputs

    def output_shape(self) -> Dict[str, ShapeSpec]:
        return {
            name: ShapeSpec(
                channels=self._out_feature_channels[name], stride=self._out_feature_strides[name]
            )
            for name in self._out_features
        }


@BACKBONE_REGISTRY.register()
def build_vovnet_backbone(cfg, input_shape: ShapeSpec) -> VoVNet:
    """VoVNet from ``MODEL.VOVNET.*`` and ``MODEL.BACKBONE.FREEZE_AT``."""
    return VoVNet(cfg, input_shape)
