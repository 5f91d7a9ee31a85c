"""Map CenterNet's DLA-34 detector checkpoints (``ctdet_coco_dla_1x.pth``,
``ctdet_coco_dla_2x.pth``) onto CenterMask-PR with ``build_dla_backbone`` and the heatmap
detector.

CenterNet's ``DLASeg`` holds ``base`` (DLA-34), ``dla_up``, ``ida_up`` and one head per output:
``hm`` (class heatmap), ``wh`` (box size in stride-4 cells) and ``reg`` (sub-cell centre offset),
each a 3x3 conv (256 channels), ReLU, 1x1 conv. Those are, key for key, ``backbone.base``,
``backbone.dla_up``, ``backbone.ida_up`` and ``detector.heatmap_head`` / ``size_head`` /
``offset_head`` here (same units: sizes as (w, h), offsets as (x, y), in cells). The ``project``
layers of the two-level trees, which CenterNet's forward never reads, are dropped. The local-shape
tower and the saliency head have no counterpart and keep their initialisation.
"""

from collections import OrderedDict
from typing import Dict, List, Mapping

import torch
from torch import nn

from .dla import imagenet_dla_state_dict

__all__ = ["CENTERNET_HEADS", "centernet_state_dict", "convert_centernet_dla", "check_converted"]

# CenterNet head attribute -> CenterHeatmapDetector head, under the model's ``detector``.
CENTERNET_HEADS = {"hm": "heatmap_head", "wh": "size_head", "reg": "offset_head"}
_BACKBONE_PARTS = ("dla_up", "ida_up")


def centernet_state_dict(checkpoint: Mapping) -> Dict[str, torch.Tensor]:
    """The model tensors of a loaded CenterNet file (``{'epoch', 'state_dict'[, 'optimizer']}``
    or a bare state dict), without the ``module.`` prefix of DataParallel saves."""
    state = checkpoint.get("state_dict", checkpoint)
    if not isinstance(state, Mapping):
        raise ValueError("the CenterNet checkpoint's 'state_dict' is not a mapping of tensors")
    return {k[len("module.") :] if k.startswith("module.") else k: v for k, v in state.items()}


def convert_centernet_dla(
    checkpoint: Mapping, backbone_prefix: str = "backbone.", detector_prefix: str = "detector."
) -> Dict[str, torch.Tensor]:
    """Convert a CenterNet DLA ``ctdet`` checkpoint into this package's keys.

    Args:
        checkpoint: what ``torch.load`` returns for the file (or its ``state_dict``).
        backbone_prefix, detector_prefix: where the backbone and the heatmap detector sit in the
            model (the defaults match ``CenterMaskPR``).

    Returns:
        An ordered {key: float32 tensor} (``num_batches_tracked`` kept as it is).

    Raises:
        ValueError: a tensor with no place here (e.g. a pose or 3-D head: not a ``ctdet``
            model) or a missing head or part.
    """
    state = centernet_state_dict(checkpoint)
    out: Dict[str, torch.Tensor] = OrderedDict()
    base = {k[len("base.") :]: v for k, v in state.items() if k.startswith("base.")}
    for key, value in imagenet_dla_state_dict(base).items():
        out[f"{backbone_prefix}base.{key}"] = value
    unknown = []
    for key, value in state.items():
        root = key.split(".", 1)[0]
        if root == "base":
            continue
        if root in _BACKBONE_PARTS:
            out[backbone_prefix + key] = value
        elif root in CENTERNET_HEADS:
            out[detector_prefix + CENTERNET_HEADS[root] + key[len(root) :]] = value
        else:
            unknown.append(key)
    if unknown:
        raise ValueError(
            f"the CenterNet checkpoint has {len(unknown)} tensor(s) with no place in CenterMask-PR "
            f"(e.g. {unknown[:3]}); only ctdet DLA models (heads hm, wh, reg) convert"
        )
    present = {key.split(".", 1)[0] for key in state}
    missing = [p for p in ("base", *_BACKBONE_PARTS, *CENTERNET_HEADS) if p not in present]
    if missing:
        raise ValueError(
            f"the CenterNet checkpoint lacks {missing}: is it a ctdet DLA-34 model "
            "(ctdet_coco_dla_1x.pth / ctdet_coco_dla_2x.pth)?"
        )
    return OrderedDict(
        (k, v.detach().clone().float() if v.is_floating_point() else v.detach().clone())
        for k, v in out.items()
    )


def check_converted(model: nn.Module, converted: Mapping[str, torch.Tensor]) -> List[str]:
    """Check that every converted tensor has its place in ``model`` with the same shape.

    Returns:
        The model's state-dict keys the conversion does not cover (they keep their
        initialisation: the shape tower and the saliency head).

    Raises:
        ValueError: naming the keys with no place or with other shapes (e.g. the config's
            ``MODEL.FCOS.NUM_CLASSES`` differs from the checkpoint's heatmap channels, or
            ``MODEL.DLA.DEFORMABLE_UP`` is off while the checkpoint has deformable convs).
    """
    target = model.state_dict()
    extra = [k for k in converted if k not in target]
    if extra:
        raise ValueError(
            f"{len(extra)} converted tensor(s) have no place in the model, e.g. {extra[:3]} "
            "(CenterNet's up-path is deformable: set MODEL.DLA.DEFORMABLE_UP True)"
        )
    shapes = [
        f"{k}: {tuple(v.shape)} vs the model's {tuple(target[k].shape)}"
        for k, v in converted.items()
        if v.shape != target[k].shape
    ]
    if shapes:
        raise ValueError(
            f"{len(shapes)} converted tensor(s) differ in shape from the model, e.g. {shapes[:2]}"
            " (the heatmap head has one channel per class: MODEL.FCOS.NUM_CLASSES and "
            "MODEL.ROI_HEADS.NUM_CLASSES must be CenterNet's 80 for its COCO detectors)"
        )
    return [k for k in target if k not in converted]
