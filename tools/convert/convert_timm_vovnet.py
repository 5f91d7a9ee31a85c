#!/usr/bin/env python
"""Convert timm's eSE-VoVNet ImageNet weights into a CenterMask VoVNet backbone checkpoint.

    python tools/convert/convert_timm_vovnet.py --timm-model ese_vovnet39b --output vovnet39_ese_timm.pth
    python tools/convert/convert_timm_vovnet.py --timm-model ese_vovnet39b --weights model.safetensors \
        --output vovnet39_ese_timm.pth

Without ``--weights`` the ImageNet weights come from ``timm.create_model(name, pretrained=True)``
(a download through timm). The output is a detectron2 checkpoint ``{"model": ..., "__author__":
..., "matching_heuristics": False}`` with ``backbone.bottom_up.*`` keys: point ``MODEL.WEIGHTS``
at it. It is verified by loading it strictly into a freshly built VoVNet of the same variant.
"""

import argparse
import sys

from centermask.checkpoint import load_state_dict_file, save_converted_checkpoint
from centermask.modeling.backbone.timm_convert import TIMM_TO_CONV_BODY, convert_timm_vovnet
from centermask.modeling.backbone.vovnet import STAGE_NAMES, VoVNet

PREFIX = "backbone.bottom_up."


def load_timm_weights(timm_model: str, weights: str = ""):
    """State dict of ``timm_model``: from a local file if given, else timm's pretrained weights."""
    if weights:
        return load_state_dict_file(weights)  # the safe loader: .pth weights only, .safetensors
    import timm

    return timm.create_model(timm_model, pretrained=True).state_dict()


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--timm-model", required=True, choices=sorted(TIMM_TO_CONV_BODY))
    parser.add_argument("--weights", default="", help="local timm weight file (.pth/.safetensors)")
    parser.add_argument("--output", required=True, help="where to write the detectron2 .pth")
    args = parser.parse_args(argv)

    conv_body = TIMM_TO_CONV_BODY[args.timm_model]
    converted = convert_timm_vovnet(load_timm_weights(args.timm_model, args.weights), conv_body)

    backbone = VoVNet(conv_body=conv_body, out_features=list(STAGE_NAMES))
    backbone.load_state_dict({k[len(PREFIX) :]: v for k, v in converted.items()}, strict=True)

    output = save_converted_checkpoint(converted, args.output, f"timm {args.timm_model}")
    print(f"{conv_body}: wrote {len(converted)} tensors to {output}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
