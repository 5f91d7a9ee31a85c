"""Map timm's eSE-VoVNet ImageNet weights onto the CenterMask VoVNet (detectron2 checkpoint).

timm (``ese_vovnet19b_slim_dw`` ... ``ese_vovnet99b``) implements the same network with other
module names, and puts eSE only on the last block of each stage, whereas CenterMask has eSE on
every OSA module. An eSE that timm lacks becomes an exact identity (``fc.weight = 0``,
``fc.bias = 3``: hard_sigmoid(3) = 1), so the converted backbone computes timm's features.
BatchNorms map onto FrozenBN (``num_batches_tracked`` dropped); the classifier is dropped.
"""

from collections import OrderedDict
from typing import Dict, List, Mapping, Tuple

import torch

from .vovnet import STAGE_NAMES, get_vovnet_spec

__all__ = ["TIMM_TO_CONV_BODY", "convert_timm_vovnet", "timm_to_centermask_names"]

TIMM_TO_CONV_BODY = {
    "ese_vovnet19b_slim_dw": "V-19-slim-dw-eSE",
    "ese_vovnet19b_dw": "V-19-dw-eSE",
    "ese_vovnet19b_slim": "V-19-slim-eSE",
    "ese_vovnet19b": "V-19-eSE",
    "ese_vovnet39b": "V-39-eSE",
    "ese_vovnet57b": "V-57-eSE",
    "ese_vovnet99b": "V-99-eSE",
}
_NORM_TENSORS = ("weight", "bias", "running_mean", "running_var")
# Present in timm checkpoints, absent from ours on purpose.
_DROPPED_SUFFIXES = ("num_batches_tracked",)
_DROPPED_PREFIXES = ("head.",)


def _conv_norm(src: str, dst_conv: str, dst_norm: str) -> List[Tuple[str, str]]:
    pairs = [(f"{src}.conv.weight", f"{dst_conv}.weight")]
    pairs += [(f"{src}.bn.{t}", f"{dst_norm}.{t}") for t in _NORM_TENSORS]
    return pairs


def _separable(src: str, dst_unit: str) -> List[Tuple[str, str]]:
    pairs = [
        (f"{src}.conv_dw.weight", f"{dst_unit}/dw_conv3x3.weight"),
        (f"{src}.conv_pw.weight", f"{dst_unit}/pw_conv1x1.weight"),
    ]
    pairs += [(f"{src}.bn.{t}", f"{dst_unit}/pw_norm.{t}") for t in _NORM_TENSORS]
    return pairs


def timm_to_centermask_names(conv_body: str) -> Tuple[List[Tuple[str, str]], Dict[str, int]]:
    """Name mapping for one variant.

    Returns:
        pairs: (timm key, our key without prefix) for every tensor, in our state_dict order;
        ese_channels: {timm eSE key: channels} for the eSE tensors timm may lack.
    """
    spec = get_vovnet_spec(conv_body)
    pairs = _conv_norm("stem.0", "stem.stem_1/conv", "stem.stem_1/norm")
    for j in (1, 2):
        unit = f"stem.stem_{j + 1}"
        if spec.depthwise:
            pairs += _separable(f"stem.{j}", unit)
        else:
            pairs += _conv_norm(f"stem.{j}", f"{unit}/conv", f"{unit}/norm")

    ese_channels = {}
    in_channels = spec.stem_channels[-1]
    for s, stage in enumerate(STAGE_NAMES):
        k = s + 2
        for b in range(spec.blocks_per_stage[s]):
            src = f"stages.{s}.blocks.{b}"
            name = f"OSA{k}_{b + 1}"
            dst = f"{stage}.{name}"
            block_in = in_channels if b == 0 else spec.concat_channels[s]
            if spec.depthwise and block_in != spec.stage_channels[s]:
                red = f"{dst}.conv_reduction.{name}_reduction_0"
                pairs += _conv_norm(f"{src}.conv_reduction", f"{red}/conv", f"{red}/norm")
            for i in range(spec.layers_per_block):
                unit = f"{dst}.layers.{i}.{name}_{i}"
                if spec.depthwise:
                    pairs += _separable(f"{src}.conv_mid.{i}", unit)
                else:
                    pairs += _conv_norm(f"{src}.conv_mid.{i}", f"{unit}/conv", f"{unit}/norm")
            cat = f"{dst}.concat.{name}_concat"
            pairs += _conv_norm(f"{src}.conv_concat", f"{cat}/conv", f"{cat}/norm")
            for t in ("weight", "bias"):
                pairs.append((f"{src}.attn.fc.{t}", f"{dst}.ese.fc.{t}"))
                ese_channels[f"{src}.attn.fc.{t}"] = spec.concat_channels[s]
        in_channels = spec.concat_channels[s]
    return pairs, ese_channels


def convert_timm_vovnet(
    timm_state_dict: Mapping[str, torch.Tensor],
    conv_body: str,
    prefix: str = "backbone.bottom_up.",
) -> Dict[str, torch.Tensor]:
    """Convert a timm eSE-VoVNet state dict into our VoVNet's keys (with ``prefix``).

    Args:
        timm_state_dict: ``timm.create_model(name).state_dict()`` or the loaded weight file.
        conv_body: our ``MODEL.VOVNET.CONV_BODY`` (see ``TIMM_TO_CONV_BODY``).
        prefix: prepended to every key; the default matches a detectron2 FPN model.

    Returns:
        An ordered {key: float32 tensor} with every VoVNet entry; identity eSE where timm has none.

    Raises:
        ValueError: if a tensor the variant needs is missing or the file has unexpected tensors
            (usually a timm model that does not match ``conv_body``).
    """
    pairs, ese_channels = timm_to_centermask_names(conv_body)
    out = OrderedDict()
    missing = []
    for src, dst in pairs:
        if src in timm_state_dict:
            out[prefix + dst] = timm_state_dict[src].detach().clone().float()
        elif src in ese_channels:
            out[prefix + dst] = _identity_ese_tensor(src, ese_channels[src])
        else:
            missing.append(src)
    if missing:
        raise ValueError(
            f"the timm weights lack {len(missing)} tensor(s) needed for {conv_body}, e.g. "
            f"{missing[:3]}; is it the right timm model ({_timm_name(conv_body)})?"
        )
    used = {src for src, _ in pairs}
    unexpected = [
        k
        for k in timm_state_dict
        if k not in used
        and not k.endswith(_DROPPED_SUFFIXES)
        and not k.startswith(_DROPPED_PREFIXES)
    ]
    if unexpected:
        raise ValueError(
            f"the timm weights have {len(unexpected)} tensor(s) with no place in {conv_body}, "
            f"e.g. {unexpected[:3]}; is it the right timm model ({_timm_name(conv_body)})?"
        )
    return out


def _identity_ese_tensor(timm_key: str, channels: int) -> torch.Tensor:
    # hard_sigmoid(0 * x + 3) = 1 exactly: the module multiplies by one.
    if timm_key.endswith(".weight"):
        return torch.zeros(channels, channels, 1, 1)
    return torch.full((channels,), 3.0)


def _timm_name(conv_body: str) -> str:
    names = [t for t, c in TIMM_TO_CONV_BODY.items() if c == conv_body]
    return names[0] if names else "unknown"
