#!/usr/bin/env python
"""Convert CenterNet's DLA-34 COCO detector into a CenterMask-PR checkpoint (DLA-34 backbone and
heatmap detector; the mask branches keep their initialisation).

    python tools/convert/convert_centernet_dla.py --input ctdet_coco_dla_2x.pth \
        --output output/centernet/ctdet_coco_dla_2x_centermask_pr.pth

CenterNet publishes ``ctdet_coco_dla_2x.pth`` (COCO box AP 37.4 without test-time augmentation)
and ``ctdet_coco_dla_1x.pth`` (36.3) on Google Drive, linked from its ``readme/MODEL_ZOO.md``
(file ids 18Q3fzzAsha_3Qid6mn4jcIFPeOGUaj1d and 1xqFsdA3DANMq1MfnXG8n7nQPe4AfXTHv). The output is
a detectron2 checkpoint ``{"model": ..., "__author__": ..., "matching_heuristics": False}``, checked
against a model built from ``--config-file`` (every converted tensor must fit it): point
``MODEL.WEIGHTS`` of configs/centermask_pr/centermask_pr_DLA_34_512_from_centernet.yaml at it.
"""

import argparse
import sys
from pathlib import Path

from centermask.checkpoint import load_checkpoint, save_converted_checkpoint
from centermask.config import get_cfg
from centermask.modeling.backbone.centernet_convert import check_converted, convert_centernet_dla

ROOT = Path(__file__).resolve().parents[2]
DEFAULT_CONFIG = ROOT / "configs/centermask_pr/centermask_pr_DLA_34_512_from_centernet.yaml"


def build_target_model(config_file: str):
    """The CenterMask-PR model of ``config_file`` on CPU, without weights."""
    from detectron2.modeling import build_model

    cfg = get_cfg()
    cfg.merge_from_file(config_file)
    cfg.merge_from_list(["MODEL.DEVICE", "cpu", "MODEL.WEIGHTS", ""])
    return build_model(cfg)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--input", required=True, help="CenterNet .pth (ctdet DLA-34)")
    parser.add_argument("--output", required=True, help="where to write the detectron2 .pth")
    parser.add_argument(
        "--config-file",
        default=str(DEFAULT_CONFIG),
        help="CenterMask-PR config the converted weights must fit",
    )
    args = parser.parse_args(argv)

    checkpoint = load_checkpoint(args.input)  # the safe loader: tensors only, nothing runs
    converted = convert_centernet_dla(checkpoint)
    left = check_converted(build_target_model(args.config_file), converted)

    output = save_converted_checkpoint(converted, args.output, f"CenterNet {Path(args.input).name}")
    print(
        f"wrote {len(converted)} tensors to {output}; {len(left)} model tensors (mask branches) "
        "keep their initialisation"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
