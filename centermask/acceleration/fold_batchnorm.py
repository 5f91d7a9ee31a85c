"""Fold frozen BatchNorms into the convolution in front of them, for inference.

A FrozenBatchNorm2d (or an eval-mode BatchNorm2d) right after a convolution is an affine map per
output channel, ``y = (x - mean) * w / sqrt(var + eps) + b``, so it can be merged into the conv:
``W' = W * s`` and ``b' = (b_conv - mean) * s + b`` with ``s = w / sqrt(var + eps)``. This removes
one full pass over every backbone activation. The folded weights are computed in float64 and
stored in the conv's dtype, so the result equals the unfolded network up to float32 rounding.

Three layouts are recognised, which cover every backbone of this package and detectron2's ResNet:

* detectron2 ``Conv2d`` with a ``norm`` attribute (ResNet, mask/MaskIoU heads with a norm);
* an ``nn.Sequential`` whose children run a conv and then a norm (VoVNet units, whose children are
  named ``"<unit>/conv"``, ``"<unit>/norm"``; MobileNetV2 blocks);
* VoVNet's :class:`DeformableConvUnit` (``"<unit>/conv"`` is a deformable conv).

The norm modules are replaced by ``nn.Identity``, so the model's state_dict keys change: fold only
a model that will not be saved as a checkpoint, e.g. through
:func:`centermask.optimize_for_inference`.
"""

from typing import Optional

import torch
from detectron2.layers import Conv2d as D2Conv2d
from detectron2.layers import FrozenBatchNorm2d
from torch import nn

from centermask.layers.deform_conv import DeformConv
from centermask.modeling.backbone.osa import DeformableConvUnit

__all__ = ["fold_conv_batchnorm", "fold_frozen_batchnorm", "is_foldable_norm"]


def is_foldable_norm(module: nn.Module) -> bool:
    """True for a FrozenBatchNorm2d, or a BatchNorm2d in eval mode with running statistics."""
    if isinstance(module, FrozenBatchNorm2d):
        return True
    return (
        isinstance(module, nn.BatchNorm2d)
        and not module.training
        and module.track_running_stats
        and module.running_mean is not None
    )


def _is_bare_conv(module: nn.Module) -> bool:
    """A (non-transposed) conv whose output is its convolution, with no norm or activation
    applied inside it (detectron2's Conv2d can carry both)."""
    if isinstance(module, D2Conv2d):
        return module.norm is None and module.activation is None
    return isinstance(module, (nn.Conv2d, DeformConv))


@torch.no_grad()
def fold_conv_batchnorm(conv: nn.Module, norm: nn.Module) -> None:
    """Merge ``norm`` (applied to ``conv``'s output) into ``conv``'s weight and bias, in place.

    Args:
        conv: ``nn.Conv2d`` (incl. detectron2's ``Conv2d``) or :class:`DeformConv` with weight
            (C_out, C_in / groups, kh, kw) and an optional bias (C_out,).
        norm: FrozenBatchNorm2d or eval-mode BatchNorm2d over C_out channels.
    """
    if not is_foldable_norm(norm):
        raise TypeError(f"cannot fold {type(norm).__name__} (training-mode or not a BatchNorm)")
    weight = conv.weight
    out_channels = weight.shape[0]
    if norm.running_mean.numel() != out_channels:
        raise ValueError(
            f"{type(conv).__name__} has {out_channels} output channels but the following "
            f"{type(norm).__name__} normalises {norm.running_mean.numel()}"
        )
    scale = norm.weight.double() * torch.rsqrt(norm.running_var.double() + norm.eps)
    conv_bias = conv.bias.double() if conv.bias is not None else torch.zeros_like(scale)
    bias = (conv_bias - norm.running_mean.double()) * scale + norm.bias.double()
    scale_shape = (-1,) + (1,) * (weight.dim() - 1)
    weight.copy_((weight.double() * scale.reshape(scale_shape)).to(weight.dtype))
    if conv.bias is None:
        conv.bias = nn.Parameter(bias.to(weight.dtype), requires_grad=False)
    else:
        conv.bias.copy_(bias.to(conv.bias.dtype))


def _fold_sequential(sequential: nn.Sequential) -> int:
    folded = 0
    names = list(sequential._modules)
    previous: Optional[nn.Module] = None
    for name in names:
        child = sequential._modules[name]
        if previous is not None and is_foldable_norm(child):
            fold_conv_batchnorm(previous, child)
            sequential._modules[name] = nn.Identity()
            folded += 1
            previous = None
            continue
        previous = child if _is_bare_conv(child) else None
    return folded


def _fold_deformable_unit(unit: DeformableConvUnit) -> int:
    _, conv_name, norm_name = unit._unit_names
    norm = unit._modules[norm_name]
    if not is_foldable_norm(norm):
        return 0
    fold_conv_batchnorm(unit._modules[conv_name], norm)
    unit._modules[norm_name] = nn.Identity()
    return 1


def fold_frozen_batchnorm(model: nn.Module) -> int:
    """Fold, in place, every frozen norm that directly follows a convolution (see module doc).

    Norms that are not right after a conv, GroupNorms and training-mode BatchNorms are left alone.

    Returns:
        The number of norms folded.
    """
    folded = 0
    for module in list(model.modules()):
        if isinstance(module, D2Conv2d) and module.norm is not None:
            if is_foldable_norm(module.norm):
                fold_conv_batchnorm(module, module.norm)
                module.norm = None
                folded += 1
        elif isinstance(module, nn.Sequential):
            folded += _fold_sequential(module)
        elif isinstance(module, DeformableConvUnit):
            folded += _fold_deformable_unit(module)
    return folded
