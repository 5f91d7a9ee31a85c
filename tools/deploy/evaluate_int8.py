#!/usr/bin/env python
"""COCO box and mask AP of a model in float32 and of its int8 ONNX export, on the same data set.

    python tools/deploy/evaluate_int8.py --config-file configs/quickstart/centermask_lite_V_19_slim_dw_eSE_synthetic.yaml \\
        --weights output/quickstart_centermask/model_final.pth --eval-dataset synthetic_val \\
        --calib-dataset synthetic_train --calib-images 64 --output-dir output/int8_eval

Exports the float32 ONNX graphs (``<output-dir>/float32``), quantizes them to int8 calibrated on
``--calib-images`` images of ``--calib-dataset`` (``<output-dir>/int8``), then evaluates the
PyTorch model, the float32 graphs and the int8 graphs with the data set's evaluator (box AP on
``scores``, mask AP on ``mask_scores``) and prints one table; ``<output-dir>/accuracy.json``
holds every metric. Calibrate on other images than the evaluation set (e.g. the training split).
Data sets other than the built-in ones: ``--dataset NAME=ANNOTATIONS.json:IMAGE_DIR`` (repeatable).
``--config-file`` takes a path or a published model's name (``centermask://NAME``), whose
published weights are evaluated unless ``--weights`` is given.
"""

import argparse
import json
import sys
from pathlib import Path
from typing import Dict, List, Optional

import torch
from detectron2.evaluation import inference_on_dataset

import centermask.data  # noqa: F401  (registers the built-in synthetic data sets)
from centermask.cli.common import UsageError, add_debug_argument, parse_and_run
from centermask.config import get_cfg
from centermask.data.command_line import register_dataset_specs
from centermask.engine import Trainer, add_dataset_argument, build_inference_model
from centermask.export.api import build_onnx_predictor, export_onnx
from centermask.export.int8 import (
    CALIBRATION_METHODS,
    Int8Settings,
    calibration_batches,
    quantize_export,
)
from centermask.model_zoo import config_file_weights, resolve_config_file


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        description=__doc__.splitlines()[0], formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--config-file", required=True, help="config file, or a published model's name"
    )
    parser.add_argument(
        "--weights", help="trained checkpoint (default for a published model: its weights)"
    )
    add_dataset_argument(parser)
    parser.add_argument("--eval-dataset", help="evaluation data set (default: DATASETS.TEST[0])")
    parser.add_argument("--calib-dataset", help="default: DATASETS.TRAIN[0]")
    parser.add_argument("--calib-images", type=int, default=64)
    parser.add_argument("--calib-method", default="minmax", choices=CALIBRATION_METHODS)
    parser.add_argument("--calib-percentile", type=float, default=99.999)
    parser.add_argument("--keep-float", action="append", default=[], metavar="PATTERN")
    parser.add_argument("--full-range-weights", action="store_true", help="VNNI CPUs only")
    parser.add_argument("--threads", type=int, default=0, help="CPU threads (0: torch default)")
    parser.add_argument("--output-dir", required=True)
    add_debug_argument(parser)
    parser.add_argument("opts", nargs=argparse.REMAINDER, help="config overrides KEY VALUE ...")
    return parser


def parse_args(argv: Optional[List[str]] = None) -> argparse.Namespace:
    return build_parser().parse_args(argv)


def coco_ap(results: Dict) -> Dict[str, float]:
    """The headline numbers of detectron2's COCO evaluator results."""
    ap = {}
    for task in ("bbox", "segm"):
        for key in ("AP", "AP50"):
            ap[f"{task}/{key}"] = float(results.get(task, {}).get(key, float("nan")))
    return ap


def format_table(rows: Dict[str, Dict[str, float]], reference: str) -> str:
    header = "| model | box AP | box AP50 | mask AP | mask AP50 | box / mask AP vs float32 |"
    lines = [header, "|---|---|---|---|---|---|"]
    for name, ap in rows.items():
        delta = "" if name == reference else (
            f"{ap['bbox/AP'] - rows[reference]['bbox/AP']:+.2f} / "
            f"{ap['segm/AP'] - rows[reference]['segm/AP']:+.2f}"
        )  # fmt: skip
        values = [ap[k] for k in ("bbox/AP", "bbox/AP50", "segm/AP", "segm/AP50")]
        lines.append(f"| {name} | " + " | ".join(f"{v:.2f}" for v in values) + f" | {delta} |")
    return "\n".join(lines)


def run(args: argparse.Namespace) -> Dict:
    """The comparison of ``args`` (of :func:`build_parser`); returns the report."""
    weights = args.weights or config_file_weights(args.config_file)
    if not weights:
        raise UsageError(
            "--weights CHECKPOINT is needed (unless --config-file names a published model)"
        )
    register_dataset_specs(args.dataset)
    if args.threads:
        torch.set_num_threads(args.threads)
    config_file, opts = resolve_config_file(args.config_file, args.opts)
    cfg = get_cfg()
    cfg.merge_from_file(config_file)
    cfg.merge_from_list(opts)
    cfg.MODEL.DEVICE = "cpu"
    cfg.freeze()
    dataset = args.eval_dataset or cfg.DATASETS.TEST[0]
    calib_dataset = args.calib_dataset or cfg.DATASETS.TRAIN[0]
    output_dir = Path(args.output_dir)
    model = build_inference_model(cfg, weights)

    export_onnx(model, output_dir / "float32")
    float_predictor = build_onnx_predictor(model, output_dir / "float32")
    settings = Int8Settings(
        method=args.calib_method,
        percentile=args.calib_percentile,
        keep_float=tuple(args.keep_float),
        reduce_range=not args.full_range_weights,
    )
    batches = calibration_batches(cfg, calib_dataset, args.calib_images)
    quantize_export(
        output_dir / "float32",
        output_dir / "int8",
        float_predictor,
        batches,
        settings,
        num_batches=args.calib_images,
    )
    int8_predictor = build_onnx_predictor(model, output_dir / "int8")

    loader = Trainer.build_test_loader(cfg, dataset)
    rows, metrics = {}, {}
    for name, predictor in (
        ("PyTorch float32", model),
        ("onnxruntime float32", float_predictor),
        ("onnxruntime int8", int8_predictor),
    ):
        folder = output_dir / "inference" / name.replace(" ", "_")
        evaluator = Trainer.build_evaluator(cfg, dataset, str(folder))
        metrics[name] = inference_on_dataset(predictor, loader, evaluator)
        rows[name] = coco_ap(metrics[name])
    table = format_table(rows, "PyTorch float32")
    report = {
        "command": " ".join(sys.argv),
        "dataset": dataset,
        "calibration": {"dataset": calib_dataset, "images": args.calib_images},
        "settings": {**vars(settings), "keep_float": list(settings.keep_float)},
        "ap": rows,
        "metrics": metrics,
    }
    (output_dir / "accuracy.json").write_text(json.dumps(report, indent=2, default=float))
    print(f"{dataset}, int8 calibrated on {args.calib_images} images of {calib_dataset} "
          f"({settings.method})\n{table}")  # fmt: skip
    return report


def main(argv: Optional[List[str]] = None) -> int:
    def command(args: argparse.Namespace) -> int:
        run(args)
        return 0

    return parse_and_run(build_parser(), command, argv)


if __name__ == "__main__":
    sys.exit(main())
