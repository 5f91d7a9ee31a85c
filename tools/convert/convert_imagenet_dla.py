#!/usr/bin/env python
"""Convert ImageNet DLA-34 weights (timm's ``dla34`` or the original UCB file) into a checkpoint of
the DLA-34 body of ``build_dla_backbone``.

    python tools/convert/convert_imagenet_dla.py --output output/dla34_imagenet.pth
    python tools/convert/convert_imagenet_dla.py --weights dla34-ba72cf86.pth \
        --output output/dla34_imagenet.pth

Without ``--weights`` the weights come from ``timm.create_model("dla34", pretrained=True)`` (a
download through timm). The output is a detectron2 checkpoint ``{"model": ..., "__author__": ...,
"matching_heuristics": False}`` with ``backbone.base.*`` keys, verified by loading it strictly
into a freshly built DLA-34 body; the up-path and the heads keep their initialisation. Point
``MODEL.WEIGHTS`` of a DLA-34 config at it. The paper trains DLA-34 from scratch; ImageNet
weights are this package's option, not the paper's recipe.
"""

import argparse
import sys

from centermask.checkpoint import load_state_dict_file, save_converted_checkpoint
from centermask.modeling.backbone.dla import DLA, DLA_SPECS, imagenet_dla_state_dict

PREFIX = "backbone.base."
CONV_BODY = "DLA-34"


def load_imagenet_weights(weights: str = ""):
    """State dict of DLA-34: from a local file if given, else timm's pretrained ``dla34``."""
    if weights:
        return load_state_dict_file(weights)  # the safe loader: .pth weights only, .safetensors
    import timm

    return timm.create_model("dla34", pretrained=True).state_dict()


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--weights",
        default="",
        help="local DLA-34 weight file, timm or UCB layout (.pth/.safetensors)",
    )
    parser.add_argument("--output", required=True, help="where to write the detectron2 .pth")
    args = parser.parse_args(argv)

    source = args.weights or "timm dla34"
    body_state = imagenet_dla_state_dict(load_imagenet_weights(args.weights))
    try:
        DLA(DLA_SPECS[CONV_BODY]).load_state_dict(body_state, strict=True)
    except RuntimeError as error:
        raise SystemExit(f"{source} is not a {CONV_BODY} state dict: {error}") from None
    converted = {PREFIX + key: value for key, value in body_state.items()}

    output = save_converted_checkpoint(converted, args.output, f"ImageNet {CONV_BODY} ({source})")
    print(f"{CONV_BODY}: wrote {len(converted)} tensors to {output}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
