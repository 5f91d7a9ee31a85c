"""``centermask export`` (and ``tools/deploy/export_model.py``): export a model for deployment,
ONNX (onnxruntime) or a TorchScript trace.

    centermask export \\
        --config-file configs/centermask/centermask_lite_V_19_slim_dw_eSE_FPN_ms_4x.yaml \\
        --weights model_final.pth --format onnx --output export/lite
    centermask export --config-file CONFIG --synthetic-weights --format onnx --output out --check
    centermask export --config-file CONFIG --weights model_final.pth --format onnx --int8 \
        --calib-dataset synthetic_train --calib-images 64 --calib-method percentile \
        --keep-float cls_logits --output export/int8 --check

``--config-file`` takes a path or a published model's name (``centermask://NAME``), whose
published weights are exported unless ``--weights`` or ``--synthetic-weights`` is given.

ONNX writes ``dense.onnx`` (backbone + FPN + FCOS head, dynamic batch/height/width),
``mask_heads.onnx`` (SAG-Mask + MaskIoU on pooled RoI features) and ``centermask_export.json``;
run them with ``centermask.export.onnx_predictor.OnnxCenterMaskPredictor``, which returns the
same Instances as the PyTorch model. CondInst and CenterMask-PR configs export one graph each
(``dense.onnx`` / ``centermask_pr_dense.onnx``); ``build_onnx_predictor`` picks the predictor of
the model's kind. ``--check`` runs both on a synthetic image and compares.
``--int8`` writes the same files with statically quantized int8 graphs (QDQ, per-channel
weights, activations calibrated on ``--calib-images`` images of the registered data set
``--calib-dataset``; see ``centermask.export.int8``), which the same predictor runs, for all
three model kinds; its ``--check`` reports how many detections agree with the float32 model's.
TorchScript writes ``dense.ts``, the traced dense part (to use with
``centermask.acceleration.CenterMaskInference``).
"""

import argparse
from typing import List, Optional

import torch

import centermask.data  # noqa: F401  (registers the built-in synthetic data sets)
from centermask.cli.common import UsageError, command_parser, parse_and_run
from centermask.config import get_cfg
from centermask.data.command_line import register_dataset_specs
from centermask.data.inputs import model_inputs, synthetic_image
from centermask.engine import add_dataset_argument, build_inference_model
from centermask.export.api import build_onnx_predictor, export_onnx
from centermask.export.centermask_onnx import export_torchscript
from centermask.export.int8 import (
    CALIBRATION_METHODS,
    Int8Settings,
    calibration_batches,
    export_int8_onnx,
)
from centermask.model_zoo import config_file_weights, resolve_config_file

EPILOG = """
Examples:

A published model to ONNX, checked against PyTorch on a synthetic image:
  centermask export --config-file centermask://centermask_lite_V_19_slim_dw_eSE_FPN_ms_4x \\
      --output export/lite --check

Your checkpoint, int8 ONNX calibrated on 64 images of a registered data set:
  centermask export \\
      --config-file configs/centermask/centermask_lite_V_19_slim_dw_eSE_FPN_ms_4x.yaml \\
      --weights output/model_final.pth --int8 --calib-dataset synthetic_train --calib-images 64 \\
      --output export/int8 --check
"""


def build_parser(prog: Optional[str] = None) -> argparse.ArgumentParser:
    parser = command_parser(
        prog, "Export a model for deployment: ONNX (onnxruntime) or a TorchScript trace.", EPILOG
    )
    weights = parser.add_mutually_exclusive_group()
    weights.add_argument(
        "--weights", help="checkpoint to export (default for a published model: its weights)"
    )
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
    int8 = parser.add_argument_group("int8 (ONNX only)")
    int8.add_argument("--int8", action="store_true", help="statically quantized int8 graphs")
    int8.add_argument("--calib-dataset", help="registered data set of the calibration images")
    add_dataset_argument(int8)
    int8.add_argument("--calib-images", type=int, default=32, help="calibration images")
    int8.add_argument("--calib-method", default="minmax", choices=CALIBRATION_METHODS)
    int8.add_argument("--calib-percentile", type=float, default=99.999, help="with percentile")
    int8.add_argument(
        "--keep-float",
        action="append",
        default=[],
        metavar="PATTERN",
        help="keep the nodes whose names contain PATTERN (wildcards * ?) in float32 (repeatable)",
    )
    int8.add_argument(
        "--full-range-weights",
        action="store_true",
        help="8-bit weights, for CPUs with VNNI only (7-bit by default: no int16 saturation)",
    )
    parser.add_argument("opts", nargs=argparse.REMAINDER, help="config overrides KEY VALUE ...")
    return parser


def check_args(args: argparse.Namespace) -> None:
    """Options that do not go together raise a :class:`UsageError`."""
    if args.int8 and args.format != "onnx":
        raise UsageError("--int8 needs --format onnx")
    if args.int8 and not args.calib_dataset:
        raise UsageError("--int8 needs --calib-dataset NAME (a registered data set)")


def parse_args(argv: Optional[List[str]] = None) -> argparse.Namespace:
    return build_parser().parse_args(argv)


def weights_to_export(args: argparse.Namespace) -> Optional[str]:
    """``--weights``; a published model's weights when ``--config-file`` names one; None for
    ``--synthetic-weights``."""
    if args.synthetic_weights:
        return None
    weights = args.weights or config_file_weights(args.config_file)
    if not weights:
        raise UsageError(
            "--weights CHECKPOINT or --synthetic-weights is needed (or a published model's name "
            "as --config-file: centermask://NAME)"
        )
    return weights


def check_onnx(model, cfg, folder) -> float:
    """Largest score difference between PyTorch and onnxruntime on a synthetic image (raises
    if the detections differ)."""
    inputs = model_inputs(cfg, [synthetic_image()])
    with torch.no_grad():
        expected = model(inputs)[0]["instances"]
    actual = build_onnx_predictor(model, folder)(inputs)[0]["instances"]
    if len(expected) != len(actual) or not torch.equal(expected.pred_classes, actual.pred_classes):
        raise SystemExit(
            f"onnxruntime gives {len(actual)} detections, PyTorch {len(expected)}: check failed"
        )
    return float((expected.scores - actual.scores).abs().max()) if len(expected) else 0.0


def check_int8(model, cfg, folder) -> str:
    """How many detections of the int8 graphs on a synthetic image agree with PyTorch's."""
    from centermask.export.agreement import detection_agreement

    inputs = model_inputs(cfg, [synthetic_image()])
    with torch.no_grad():
        expected = model(inputs)[0]["instances"]
    actual = build_onnx_predictor(model, folder)(inputs)[0]["instances"]
    agreement = detection_agreement(expected, actual)
    return (
        f"{agreement.matched} of {agreement.num_reference} float32 / {agreement.num_candidate} "
        f"int8 detections match (same class, box IoU >= 0.5): {agreement.match_rate:.1%}"
    )


def run(args: argparse.Namespace) -> None:
    """The export of ``args`` (of :func:`build_parser`)."""
    check_args(args)
    weights = weights_to_export(args)
    register_dataset_specs(args.dataset)
    config_file, opts = resolve_config_file(args.config_file, args.opts)
    cfg = get_cfg()
    cfg.merge_from_file(config_file)
    cfg.merge_from_list(opts)
    cfg.MODEL.DEVICE = "cpu"
    cfg.MODEL.WEIGHTS = weights or ""
    cfg.freeze()
    model = build_inference_model(cfg, weights)
    if args.format == "torchscript":
        path = export_torchscript(model, args.output, height=args.height, width=args.width)
        print(f"wrote {path}")
        return
    export_options = dict(
        height=args.height, width=args.width, opset=args.opset, mask_heads=not args.no_mask_heads
    )
    if args.int8:
        settings = Int8Settings(
            method=args.calib_method,
            percentile=args.calib_percentile,
            keep_float=tuple(args.keep_float),
            reduce_range=not args.full_range_weights,
        )
        batches = calibration_batches(cfg, args.calib_dataset, args.calib_images)
        paths = export_int8_onnx(
            model, args.output, batches, settings, num_batches=args.calib_images, **export_options
        )
    else:
        paths = export_onnx(model, args.output, **export_options)
    for kind, path in paths.items():
        print(f"{kind}: {path}")
    if args.check and args.int8:
        print(f"check: {check_int8(model, cfg, args.output)}")
    elif args.check:
        print(f"check passed: max score difference {check_onnx(model, cfg, args.output):.2e}")


def command(args: argparse.Namespace) -> int:
    run(args)
    return 0


def main(argv: Optional[List[str]] = None) -> int:
    return parse_and_run(build_parser(), command, argv)
