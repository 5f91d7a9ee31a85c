#!/usr/bin/env python
"""int8 on the dense part (backbone + FPN + FCOS head): onnxruntime QDQ vs PyTorch PT2E + Inductor.

    python tools/analysis/benchmark_pt2e_int8.py \\
        --config-file configs/centermask/centermask_lite_V_19_slim_dw_eSE_FPN_ms_4x.yaml \\
        --threads 2 --iterations 10

The comparison behind the choice of onnxruntime for int8 (docs/DEPLOYMENT.md). Both
routes quantize the same BN-folded dense module, calibrated on the same synthetic images; the
timed input is another synthetic image at the config's test size. Rows, timed interleaved:

* ``torch float32``: the dense module in PyTorch (NCHW);
* ``onnxruntime float32`` / ``onnxruntime int8``: the ``dense.onnx`` graph, float32 and
  quantized with :func:`centermask.export.int8.quantize_graph` (min-max);
* ``pt2e int8 + inductor``: ``torch.export`` -> ``prepare_pt2e`` / ``convert_pt2e`` with the
  ``X86InductorQuantizer`` (static, per-channel weights) -> ``torch.compile``. Needs ``torchao``
  (``pip install torchao``), where PyTorch's PT2E quantization lives since 2.10.

``error`` is the mean |output - float32 output| over all dense outputs, relative to the mean
|float32 output|, on the timed image: the two int8 routes are compared at that accuracy.
"""

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from centermask.acceleration import DenseCenterMask, fold_frozen_batchnorm
from centermask.config import get_cfg
from centermask.data.inputs import model_inputs, synthetic_image
from centermask.engine.predictor import build_inference_model
from centermask.export.api import export_onnx
from centermask.export.common import DENSE_ONNX, create_session
from centermask.export.int8 import quantize_graph
from centermask.model_zoo import config_file_weights, resolve_config_file


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--config-file", required=True, help="config file, or a published model's name"
    )
    parser.add_argument(
        "--weights",
        default="",
        help="checkpoint (default: a published model's weights, else synthetic weights)",
    )
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--iterations", type=int, default=10)
    parser.add_argument("--calib-images", type=int, default=4)
    parser.add_argument("opts", nargs=argparse.REMAINDER, help="config overrides KEY VALUE ...")
    return parser.parse_args(argv)


def padded_images(model, cfg, seeds) -> list:
    """Normalised, zero-padded (N=1) image tensors as the dense part receives them."""
    tensors = []
    for seed in seeds:
        inputs = model_inputs(cfg, [synthetic_image(seed=seed)])
        tensors.append(model.preprocess_image(inputs).tensor)
    return tensors


def pt2e_int8(dense: torch.nn.Module, calibration: list, example: torch.Tensor):
    from torchao.quantization.pt2e.quantize_pt2e import convert_pt2e, prepare_pt2e
    from torchao.quantization.pt2e.quantizer import x86_inductor_quantizer as xiq

    quantizer = xiq.X86InductorQuantizer()
    quantizer.set_global(xiq.get_default_x86_inductor_quantization_config())
    exported = torch.export.export(dense, (example,)).module()
    # The quantizer's conv + add fusion pattern asserts on eSE's "conv(x) + 3.0" (a Python
    # float operand, torchao 0.18): hide those adds from its pattern matching.
    # The FCOS head's convs run once per level: one source partition per call, not per module.
    for index, node in enumerate(exported.graph.nodes):
        if node.target == torch.ops.aten.add.Tensor and not isinstance(node.args[1], torch.fx.Node):
            for key in ("source_fn_stack", "torch_fn", "nn_module_stack"):
                node.meta.pop(key, None)
        elif node.op == "call_function" and node.meta.get("nn_module_stack"):
            stack = node.meta["nn_module_stack"]
            key, (path, module_type) = list(stack.items())[-1]
            stack[key] = (f"{path}#{index}", module_type)
    prepared = prepare_pt2e(exported, quantizer)
    for images in calibration:
        prepared(images)
    return torch.compile(convert_pt2e(prepared))


def relative_error(outputs, reference) -> float:
    errors = [float((o - r).abs().mean()) for o, r in zip(outputs, reference)]
    scales = [float(r.abs().mean()) for r in reference]
    return float(np.sum(errors) / np.sum(scales))


def main(argv=None) -> None:
    args = parse_args(argv)
    torch.set_num_threads(args.threads)
    weights = args.weights or config_file_weights(args.config_file)
    config_file, opts = resolve_config_file(args.config_file, args.opts)
    cfg = get_cfg()
    cfg.merge_from_file(config_file)
    cfg.merge_from_list(opts)
    cfg.MODEL.DEVICE = "cpu"
    model = build_inference_model(cfg, weights)
    calibration = padded_images(model, cfg, range(1000, 1000 + args.calib_images))
    (timed,) = padded_images(model, cfg, [0])

    folded = build_inference_model(cfg, args.weights or None)
    fold_frozen_batchnorm(folded)
    dense = DenseCenterMask.from_model(folded).eval()
    work = Path(tempfile.mkdtemp(prefix="pt2e_int8_"))
    export_onnx(model, work, mask_heads=False)
    names = [x.name for x in create_session(work / DENSE_ONNX, threads=1).get_inputs()]
    feeds = [{names[0]: x.numpy()} for x in calibration]
    quantize_graph(work / DENSE_ONNX, work / "dense_int8.onnx", feeds)
    sessions = {
        "onnxruntime float32": create_session(work / DENSE_ONNX, threads=args.threads),
        "onnxruntime int8": create_session(work / "dense_int8.onnx", threads=args.threads),
    }

    with torch.no_grad():
        runners = {"torch float32": lambda x: dense(x)}
        for name, session in sessions.items():
            runners[name] = lambda x, s=session: [
                torch.from_numpy(y) for y in s.run(None, {names[0]: x.numpy()})
            ]
        started = time.perf_counter()
        try:
            compiled = pt2e_int8(dense, calibration, timed)
            compiled(timed)  # compiles
            runners["pt2e int8 + inductor"] = compiled
            print(f"pt2e: quantized and compiled in {time.perf_counter() - started:.0f} s")
        except ImportError as error:
            print(f"pt2e int8 skipped: {error} (pip install torchao)")
        reference = list(dense(timed))
        times = {name: [] for name in runners}
        errors = {
            name: relative_error(list(run(timed)), reference) for name, run in runners.items()
        }
        for rep in range(args.iterations):
            order = list(runners)[rep % len(runners) :] + list(runners)[: rep % len(runners)]
            for name in order:
                start = time.perf_counter()
                runners[name](timed)
                times[name].append(time.perf_counter() - start)
    base = statistics.median(times["onnxruntime float32"])
    print(
        f"{args.config_file}: dense part, input {tuple(timed.shape)}, {args.threads} threads, "
        f"median of {args.iterations} interleaved runs"
    )
    print("| route | ms | vs onnxruntime float32 | error |\n|---|---|---|---|")
    for name, values in times.items():
        median = statistics.median(values)
        print(f"| {name} | {median * 1e3:.1f} | {base / median:.2f}x | {errors[name]:.4f} |")


if __name__ == "__main__":
    main(sys.argv[1:])
