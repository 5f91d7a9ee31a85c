"""``centermask benchmark`` (and ``tools/analysis/benchmark.py``): benchmark inference (per stage,
several execution modes) or training iterations.

Examples::

    # eager vs optimize_for_inference vs onnxruntime float32 and int8, synthetic weights, 2 threads
    centermask benchmark \\
        --config-file configs/centermask/centermask_lite_V_19_slim_dw_eSE_FPN_ms_4x.yaml \\
        --threads 2 --modes eager,optimized,onnx,onnx-int8 --iterations 10 --output lite.json
    # batch sizes, real weights, GPU in fp16
    centermask benchmark --config-file CONFIG --weights model_final.pth --device cuda \\
        --dtype fp16 --batch-sizes 1,4,8 --modes eager,optimized
    # training iteration split, vs a straightforward implementation of the same losses
    centermask benchmark --config-file CONFIG --train --train-batch 2 --iterations 5

The input is a 480x640 synthetic image (or --image) resized by the config's test resize; the
timings include preprocessing and post-processing (mask pasting). Modes run interleaved, so their
ratios hold on a busy machine; absolute numbers do not. ``--config-file`` takes a path or a
published model's name (``centermask://NAME``), whose published weights are timed unless
``--weights`` or ``--synthetic-weights`` is given (the number of detections, and with it the time
of the mask heads and post-processing, depends on the weights).
"""

import argparse
import json
import logging
import sys
from typing import List, Optional

import cv2
import torch

import centermask.data  # noqa: F401  (registers the synthetic data sets for calib_dataset)
from centermask.acceleration.dtypes import parse_dtype
from centermask.benchmark.inference import (
    benchmark_inference,
    environment_info,
    format_inference_table,
    parse_modes,
)
from centermask.benchmark.training import benchmark_training, format_training_table
from centermask.cli.common import command_parser, parse_and_run
from centermask.config import get_cfg
from centermask.data.inputs import synthetic_image
from centermask.engine.predictor import build_inference_model
from centermask.model_zoo import config_file_weights, resolve_config_file

EPILOG = """
Examples:

Eager vs optimize_for_inference, synthetic weights, 2 threads:
  centermask benchmark \\
      --config-file configs/centermask/centermask_lite_V_19_slim_dw_eSE_FPN_ms_4x.yaml \\
      --threads 2 --modes eager,optimized --iterations 10 --output lite.json

A published model with its weights, on one of your images:
  centermask benchmark --config-file centermask://centermask_lite_V_39_eSE_FPN_ms_4x \\
      --image photo.jpg --modes eager,optimized
"""


def _int_list(text: str):
    try:
        values = [int(x) for x in text.split(",") if x.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated integers, got {text!r}")
    if not values or min(values) < 1:
        raise argparse.ArgumentTypeError(f"expected positive integers, got {text!r}")
    return values


def build_parser(prog: Optional[str] = None) -> argparse.ArgumentParser:
    parser = command_parser(
        prog, "Benchmark inference (per stage, several execution modes) or training.", EPILOG
    )
    weights = parser.add_mutually_exclusive_group()
    weights.add_argument(
        "--weights",
        default="",
        help="checkpoint; default: a published model's weights, else synthetic weights",
    )
    weights.add_argument(
        "--synthetic-weights", action="store_true", help="synthetic weights, for any config"
    )
    parser.add_argument("--device", default="cpu", help="cpu or cuda[:i]")
    parser.add_argument("--threads", type=int, default=0, help="torch CPU threads (0: default)")
    parser.add_argument("--dtype", default="fp32", choices=["fp32", "fp16", "bf16"])
    parser.add_argument(
        "--modes", default="eager,optimized", help="see centermask.benchmark.inference"
    )
    parser.add_argument("--batch-sizes", type=_int_list, default=[1], help="e.g. 1,4,8")
    parser.add_argument("--iterations", type=int, default=10, help="timed runs per mode")
    parser.add_argument("--warmup", type=int, default=2, help="untimed runs per mode first")
    parser.add_argument("--image", default="", help="image file (BGR via OpenCV) to use")
    parser.add_argument("--height", type=int, default=480, help="synthetic image height")
    parser.add_argument("--width", type=int, default=640, help="synthetic image width")
    parser.add_argument("--work-dir", default=None, help="keep exported models here")
    parser.add_argument(
        "--tf32",
        choices=["auto", "on", "off"],
        default="auto",
        help="TF32 matmuls and convolutions on CUDA; auto: on where the GPU has them (compute "
        "capability 8.0+, e.g. A100, H100); the report says which was used",
    )
    parser.add_argument("--allow-tf32", action="store_true", help="the same as --tf32 on")
    parser.add_argument("--train", action="store_true", help="benchmark training iterations")
    parser.add_argument("--train-batch", type=int, default=2, help="images per training batch")
    parser.add_argument("--train-objects", type=int, default=8, help="instances per image")
    parser.add_argument("--output", default="", help="write the results as JSON here")
    parser.add_argument("opts", nargs=argparse.REMAINDER, help="config overrides KEY VALUE ...")
    return parser


def use_tf32(device: torch.device, choice: str = "auto") -> bool:
    """Whether to run float32 matmuls and convolutions in TF32: never off CUDA; for "auto",
    where the GPU has TF32 units (compute capability 8.0 or higher)."""
    if device.type != "cuda":
        return False
    if choice != "auto":
        return choice == "on"
    return torch.cuda.get_device_capability(device)[0] >= 8


def parse_args(argv: Optional[List[str]] = None) -> argparse.Namespace:
    return build_parser().parse_args(argv)


def run(args: argparse.Namespace) -> dict:
    """The benchmark of ``args`` (of :func:`build_parser`); returns the report."""
    logging.basicConfig(level=logging.WARNING)
    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    tf32 = use_tf32(device, "on" if args.allow_tf32 else args.tf32)
    torch.backends.cuda.matmul.allow_tf32 = tf32
    torch.backends.cudnn.allow_tf32 = tf32
    dtype = parse_dtype(args.dtype)

    weights = (
        None if args.synthetic_weights else args.weights or config_file_weights(args.config_file)
    )
    config_file, opts = resolve_config_file(args.config_file, args.opts)
    cfg = get_cfg()
    cfg.merge_from_file(config_file)
    cfg.merge_from_list(opts)
    cfg.MODEL.DEVICE = str(device)
    cfg.MODEL.WEIGHTS = weights or ""
    cfg.freeze()
    model = build_inference_model(cfg, weights or None)

    report = {
        "command": " ".join(sys.argv),
        "config_file": args.config_file,
        "weights": weights or "synthetic",
        "environment": environment_info(device, dtype),
        "tf32": tf32,
    }
    env = report["environment"]
    print(
        f"{args.config_file} | weights: {report['weights']} | device: {env['device']} "
        f"({env.get('cpu') or env.get('gpu')}) | dtype: {env['dtype']} | threads: "
        f"{env['torch_threads']}\ntorch {env['torch']}, torchvision {env['torchvision']}, "
        f"detectron2 {env['detectron2']}, onnxruntime {env['onnxruntime']}"
        f"{' | TF32 on' if tf32 else ''}"
    )
    if args.train:
        results = benchmark_training(
            model,
            cfg,
            batch_size=args.train_batch,
            iterations=args.iterations,
            warmup=args.warmup,
            num_objects=args.train_objects,
        )
        report["training"] = results
        print(f"training, batch {args.train_batch}, {args.train_objects} objects per image")
        print(format_training_table(results))
    else:
        if args.image:
            image = cv2.imread(args.image, cv2.IMREAD_COLOR)
            if image is None:
                raise ValueError(f"--image {args.image!r} could not be read as an image")
            images = [image]
        else:
            images = [
                synthetic_image(args.height, args.width, seed=i)
                for i in range(max(args.batch_sizes))
            ]
        report["image_hw"] = list(images[0].shape[:2])
        results = benchmark_inference(
            model,
            cfg,
            parse_modes(args.modes),
            batch_sizes=args.batch_sizes,
            iterations=args.iterations,
            warmup=args.warmup,
            dtype=dtype,
            images=images,
            work_dir=args.work_dir,
        )
        report["inference"] = results
        print(f"image {report['image_hw'][0]}x{report['image_hw'][1]}; stage times in ms (median)")
        print(format_inference_table(results))
    if args.output:
        with open(args.output, "w") as f:
            json.dump(report, f, indent=2)
        print(f"wrote {args.output}")
    return report


def command(args: argparse.Namespace) -> int:
    run(args)
    return 0


def main(argv: Optional[List[str]] = None) -> int:
    return parse_and_run(build_parser(), command, argv)
