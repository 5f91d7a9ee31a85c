"""Inference-only rewrites of CenterMask modules that compute the same outputs with fewer ops.

* :func:`fuse_conv_activations`: conv + ReLU/ReLU6 as one oneDNN primitive on the CPU (VoVNet and
  MobileNetV2 units after BN folding, the SAG-Mask and MaskIoU convs).
* :class:`FusedFCOSHead`: the FCOS classification and box towers run as one tower of twice the
  width with grouped convs, and ``bbox_pred`` + ``ctrness`` as one conv: half the ops per level.
* :class:`ClassSelectedMaskPredictor`: the 1x1 mask predictor evaluated only for each RoI's
  predicted class instead of all K classes.

Each equals the original up to float32 summation order (checked by the tests against the
unfused modules).
"""

from typing import List, Optional, Tuple

import torch
import torch.nn.functional as F
from detectron2.layers import Conv2d as D2Conv2d
from torch import nn

__all__ = [
    "ClassSelectedMaskPredictor",
    "FusedFCOSHead",
    "fuse_conv_activations",
    "fused_conv_available",
]

# activation module type -> (oneDNN post-op name, its scalars)
_POST_OPS = {nn.ReLU: ("relu", []), nn.ReLU6: ("hardtanh", [0.0, 6.0])}


def fused_conv_available() -> bool:
    """Whether this torch build has oneDNN's fused conv + activation op (CPU builds do)."""
    return torch.backends.mkldnn.is_available() and hasattr(
        torch.ops.mkldnn, "_convolution_pointwise"
    )


def _run_fused(conv: nn.Conv2d, x: torch.Tensor, fallback) -> torch.Tensor:
    post_op, scalars = conv.fused_post_op
    if x.device.type != "cpu" or x.dtype != torch.float32 or x.numel() == 0 or x.requires_grad:
        return fallback(x)
    return torch.ops.mkldnn._convolution_pointwise(
        x,
        conv.weight,
        conv.bias,
        list(conv.padding),
        list(conv.stride),
        list(conv.dilation),
        conv.groups,
        post_op,
        scalars,
        "",
    )


class _FusedConv2d(nn.Conv2d):
    """nn.Conv2d whose output goes through ``fused_post_op`` (an activation) in the same op."""

    def _unfused(self, x: torch.Tensor) -> torch.Tensor:
        y = self._conv_forward(x, self.weight, self.bias)
        return F.relu(y) if self.fused_post_op[0] == "relu" else F.relu6(y)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return _run_fused(self, x, self._unfused)


class _FusedD2Conv2d(D2Conv2d):
    """detectron2 Conv2d (no norm, ReLU activation) computed as one fused op."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return _run_fused(self, x, super().forward)


def _is_relu(activation) -> bool:
    return isinstance(activation, nn.ReLU) or activation is F.relu or activation is F.relu_


def _plain_conv(module: nn.Module) -> bool:
    return (
        type(module) is nn.Conv2d
        and module.padding_mode == "zeros"
        and not isinstance(module.padding, str)
    )


def fuse_conv_activations(model: nn.Module) -> int:
    """Fuse, in place, convs with the ReLU/ReLU6 that follows them; returns how many.

    Recognised: in an ``nn.Sequential``, a ``nn.Conv2d`` followed (possibly after ``nn.Identity``
    left by BN folding) by ``nn.ReLU``/``nn.ReLU6``, which becomes an Identity; and detectron2
    ``Conv2d`` modules with a ReLU activation and no norm. The convs keep their identity (their
    class is switched to a fused subclass), so lists that reference them stay valid. Does nothing
    when :func:`fused_conv_available` is False.
    """
    if not fused_conv_available():
        return 0
    fused = 0
    for module in list(model.modules()):
        if isinstance(module, nn.Sequential):
            names = list(module._modules)
            for i, name in enumerate(names):
                conv = module._modules[name]
                if not _plain_conv(conv):
                    continue
                j = i + 1
                while j < len(names) and isinstance(module._modules[names[j]], nn.Identity):
                    j += 1
                if j == len(names) or type(module._modules[names[j]]) not in _POST_OPS:
                    continue
                conv.fused_post_op = _POST_OPS[type(module._modules[names[j]])]
                conv.__class__ = _FusedConv2d
                module._modules[names[j]] = nn.Identity()
                fused += 1
        elif (
            type(module) is D2Conv2d
            and module.norm is None
            and _is_relu(module.activation)
            and module.padding_mode == "zeros"
        ):
            module.fused_post_op = _POST_OPS[nn.ReLU]
            module.__class__ = _FusedD2Conv2d
            fused += 1
    return fused


def _tower_units(tower: nn.Sequential) -> Optional[List[Tuple[nn.Conv2d, Optional[nn.GroupNorm]]]]:
    """[(conv, norm or None)] of a tower laid out as [conv, (GroupNorm), ReLU] x n, else None."""
    units, layers, i = [], list(tower), 0
    while i < len(layers):
        conv = layers[i]
        if type(conv) is not nn.Conv2d or conv.groups != 1:
            return None
        norm = layers[i + 1] if i + 1 < len(layers) else None
        if isinstance(norm, nn.GroupNorm):
            i += 1
        else:
            norm = None
        if i + 1 >= len(layers) or not isinstance(layers[i + 1], nn.ReLU):
            return None
        units.append((conv, norm))
        i += 2
    return units


def _stack_conv(first: nn.Conv2d, second: nn.Conv2d, grouped: bool) -> nn.Conv2d:
    """One conv computing ``first`` and ``second`` side by side along the output channels; with
    ``grouped`` each reads its own half of the input channels."""
    conv = nn.Conv2d(
        first.in_channels * (2 if grouped else 1),
        first.out_channels + second.out_channels,
        first.kernel_size,
        first.stride,
        first.padding,
        first.dilation,
        groups=2 if grouped else 1,
        bias=first.bias is not None,
    )
    with torch.no_grad():
        conv.weight.copy_(torch.cat([first.weight, second.weight]))
        if first.bias is not None:
            conv.bias.copy_(torch.cat([first.bias, second.bias]))
    return conv.to(first.weight.device)


def _stack_norm(first: nn.GroupNorm, second: nn.GroupNorm) -> nn.GroupNorm:
    # Groups are contiguous channel blocks, so 2G groups over [a; b] are a's G and b's G groups.
    norm = nn.GroupNorm(first.num_groups * 2, first.num_channels * 2, eps=first.eps)
    with torch.no_grad():
        norm.weight.copy_(torch.cat([first.weight, second.weight]))
        norm.bias.copy_(torch.cat([first.bias, second.bias]))
    return norm.to(first.weight.device)


class FusedFCOSHead(nn.Module):
    """:class:`~centermask.modeling.fcos.FCOSHead` with its two towers run as one.

    Tower layer i is a conv from C (i = 0, shared input) or 2C (grouped, 2 groups) channels to 2C
    channels, then GroupNorm with twice the groups, then ReLU: channels [0, C) are the class tower
    and [C, 2C) the box tower, exactly as the two separate towers. Build it with
    :meth:`from_head`, which returns None for heads it cannot merge.
    """

    def __init__(self, head: nn.Module, units, cls_logits, box_outputs: nn.Conv2d):
        super().__init__()
        self.share_tower = head.share_tower
        self.tower_convs = nn.ModuleList([conv for conv, _ in units])
        self.tower_norms = nn.ModuleList([norm or nn.Identity() for _, norm in units])
        self.cls_logits = cls_logits
        self.box_outputs = box_outputs
        self.scales = head.scales
        self.channels = head.cls_logits.in_channels

    @classmethod
    def from_head(cls, head: nn.Module) -> Optional["FusedFCOSHead"]:
        cls_units, box_units = _tower_units(head.cls_tower), _tower_units(head.bbox_tower)
        if not cls_units or not box_units or len(cls_units) != len(box_units):
            return None
        units = []
        for index, ((conv_a, norm_a), (conv_b, norm_b)) in enumerate(zip(cls_units, box_units)):
            if (norm_a is None) != (norm_b is None) or conv_a.weight.shape != conv_b.weight.shape:
                return None
            if norm_a is not None and (norm_a.num_groups, norm_a.eps, norm_a.affine) != (
                norm_b.num_groups,
                norm_b.eps,
                norm_b.affine,
            ):
                return None
            if norm_a is not None and not norm_a.affine:
                return None
            norm = _stack_norm(norm_a, norm_b) if norm_a is not None else None
            units.append((_stack_conv(conv_a, conv_b, grouped=index > 0), norm))
        box_outputs = _stack_conv(head.bbox_pred, head.ctrness, grouped=False)
        return cls(head, units, head.cls_logits, box_outputs)

    def forward(self, features: List[torch.Tensor]):
        """Same outputs as FCOSHead: per level logits, bbox_reg, ctrness and box-tower features."""
        logits, bbox_reg, ctrness, bbox_towers = [], [], [], []
        c = self.channels
        for level, x in enumerate(features):
            x = self.share_tower(x)
            for conv, norm in zip(self.tower_convs, self.tower_norms):
                x = F.relu(norm(conv(x)))
            box_feature = x[:, c:]
            logits.append(self.cls_logits(x[:, :c]))
            box = self.box_outputs(box_feature)
            reg = box[:, :4]
            if self.scales is not None:
                reg = self.scales[level](reg)
            bbox_reg.append(F.relu(reg))
            ctrness.append(box[:, 4:])
            bbox_towers.append(box_feature)
        return logits, bbox_reg, ctrness, bbox_towers


class ClassSelectedMaskPredictor(nn.Module):
    """The 1x1 mask predictor for one class per RoI: (M, C, S, S), (M,) -> (M, 1, S, S) logits.

    ``predictor(x)[m, classes[m]]`` without computing the other K - 1 class maps.
    """

    def __init__(self, predictor: nn.Conv2d):
        super().__init__()
        if predictor.kernel_size != (1, 1) or predictor.groups != 1:
            raise ValueError(f"expected a 1x1 conv mask predictor, got {predictor}")
        self.weight = predictor.weight  # (K, C, 1, 1), shared
        self.bias = predictor.bias

    def forward(self, x: torch.Tensor, classes: torch.Tensor) -> torch.Tensor:
        num_classes = self.weight.shape[0]
        classes = classes.to(torch.int64) if num_classes > 1 else torch.zeros_like(classes)
        weight = self.weight[classes, :, 0, 0].to(x.dtype)  # (M, C)
        m, c, h, w = x.shape
        logits = torch.bmm(weight[:, None, :], x.reshape(m, c, h * w)).reshape(m, 1, h, w)
        if self.bias is not None:
            logits = logits + self.bias[classes].to(x.dtype)[:, None, None, None]
        return logits
