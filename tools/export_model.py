#!/usr/bin/env python
"""Export a CenterMask model for deployment: ONNX (onnxruntime) or a TorchScript trace.

    python tools/export_model.py --config-file configs/centermask/centermask_lite_V_19_slim_dw_eSE_FPN_ms_4x.yaml \\
        --weights model_final.pth --format onnx --output export/lite
    python tools/export_model.py --config-file CONFIG --synthetic-weights --format onnx --output out --check

ONNX writes ``dense.onnx`` (backbone + FPN + FCOS head, dynamic batch/height/width),
``mask_heads.onnx`` (SAG-Mask + MaskIoU on pooled RoI features) and ``centermask_export.json``;
run them with ``centermask.export.onnx_predictor.OnnxCenterMaskPredictor``, which returns the
same Instances as the PyTorch model. ``--check`` runs both on a synthetic image and compares.
TorchScript writes ``dense.ts``, the traced dense part (to use with
``centermask.acceleration.CenterMaskInference``).
"""

import argparse
import sys

import torch

from centermask.benchmark.inference import build_benchmark_model, make_inputs, synthetic_image
from centermask.config import get_cfg
from centermask.export.onnx_export import export_onnx, export_torchscript


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__.splitlines()[0], formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--config-file", required=True, help="CenterMask YAML config")
    weights = parser.add_mutually_exclusive_group(required=True)
    weights.add_argument("--weights", help="checkpoint to export")
    weights.add_argument(
        "--synthetic-weights", action="store_true", help="deterministic synthetic weights (tests)"
    )
    parser.add_argument("--format", choices=["onnx", "torchscript"], default="onnx")
    parser.add_argument("--output", required=True, help="output folder")
    parser.add_argument("--height", type=int, default=608, help="tracing sample height (x32)")
    parser.add_argument("--width", type=int, default=800, help="tracing sample width (x32)")
    parser.add_argument("--opset", type=int, default=17)
    parser.add_argument("--no-mask-heads", action="store_true", help="ONNX: dense part only")
    parser.add_argument("--check", action="store_true", help="compare onnxruntime with PyTorch")
    parser.add_argument("opts", nargs=argparse.REMAINDER, help="config overrides KEY VALUE ...")
    return parser.parse_args(argv)


def check_onnx(model, cfg, folder) -> float:
    """Largest score difference between PyTorch and onnxruntime on a synthetic image (raises
    if the detections differ)."""
    from centermask.export.onnx_predictor import OnnxCenterMaskPredictor

    inputs = make_inputs(cfg, [synthetic_image()])
    with torch.no_grad():
        expected = model(inputs)[0]["instances"]
    actual = OnnxCenterMaskPredictor(model, folder)(inputs)[0]["instances"]
    if len(expected) != len(actual) or not torch.equal(expected.pred_classes, actual.pred_classes):
        raise SystemExit(
            f"onnxruntime gives {len(actual)} detections, PyTorch {len(expected)}: check failed"
        )
    return float((expected.scores - actual.scores).abs().max()) if len(expected) else 0.0


def main(argv=None) -> None:
    args = parse_args(argv)
    cfg = get_cfg()
    cfg.merge_from_file(args.config_file)
    cfg.merge_from_list(list(args.opts))
    cfg.MODEL.DEVICE = "cpu"
    cfg.MODEL.WEIGHTS = args.weights or ""
    cfg.freeze()
    model = build_benchmark_model(cfg, args.weights)
    if args.format == "torchscript":
        path = export_torchscript(model, args.output, height=args.height, width=args.width)
        print(f"wrote {path}")
        return
    paths = export_onnx(
        model,
        args.output,
        height=args.height,
        width=args.width,
        opset=args.opset,
        mask_heads=not args.no_mask_heads,
    )
    for kind, path in paths.items():
        print(f"{kind}: {path}")
    if args.check:
        print(f"check passed: max score difference {check_onnx(model, cfg, args.output):.2e}")


if __name__ == "__main__":
    main(sys.argv[1:])
