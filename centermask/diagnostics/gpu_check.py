"""The GPU acceptance check (``tools/gpu_check.py``): five parts, one table, one JSON.

1. environment: GPU, compute capability, driver / CUDA, versions; a single-process NCCL
   all-reduce; ``deform_conv2d``, ``roi_align`` and ``nms`` on the device against the CPU;
2. parity, float32 without TF32: every design's parity-folder config, a deformable V-57 and both
   CenterMask-PR detectors on the CPU and on the device (detections, backbone features, losses,
   gradients) and the optimised pipeline on the device; fp16 vs fp32 on CUDA;
3. AMP training on the synthetic data set: CenterMask-Lite, CondInst-Lite, CenterMask-PR;
4. DDP without a second GPU: every parameter gets a gradient (normal and empty batch), and two
   gloo processes train on the one device through :func:`centermask.engine.launch`;
5. latency with post-processing: Lite V-39 at 600 px, V-39 at 800 px, CondInst and CenterMask-PR
   at 600 px, eager / optimised x fp32 (+TF32) / fp16.

``--device cpu`` runs the same code in a reduced form (small sizes, few iterations, the Lite and
CenterMask-PR models) and skips what needs CUDA (NCCL, fp16), saying so in the table.
"""

import argparse
import tempfile
import time
from pathlib import Path
from typing import List, Optional

import torch

from .device_checks import (
    check_fp16,
    check_nccl,
    check_ops,
    check_parity,
    environment,
    parity_models,
)
from .latency import LATENCY_MODELS, check_latency
from .results import INFO, Check, CheckList
from .training_checks import (
    TRAINING_CONFIGS,
    check_amp_training,
    check_ddp,
    check_gradients,
    write_synthetic,
)

__all__ = ["main", "parse_args", "run_checks"]

ROOT = Path(__file__).resolve().parents[2]


def parse_args(argv: Optional[List[str]] = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cuda", help="cuda (default), cuda:i or cpu")
    parser.add_argument("--output", default="gpu_check.json", help="the JSON report")
    parser.add_argument("--parts", default="1,2,3,4,5", help="which parts to run, e.g. 1,2")
    parser.add_argument("--train-iterations", type=int, default=None, help="150 (cuda), 6 (cpu)")
    parser.add_argument("--ddp-iterations", type=int, default=None, help="5 (cuda), 2 (cpu)")
    parser.add_argument("--latency-iterations", type=int, default=None, help="30 (cuda), 2 (cpu)")
    parser.add_argument("--latency-warmup", type=int, default=None, help="5 (cuda), 1 (cpu)")
    parser.add_argument(
        "--parity-size", type=int, default=None, help="test image short side: 320 (cuda), 96 (cpu)"
    )
    parser.add_argument(
        "--root", default=str(ROOT), help="the repository (configs/, tests/data/parity/)"
    )
    return parser.parse_args(argv)


def _defaults(args: argparse.Namespace, cuda: bool) -> argparse.Namespace:
    for name, on_cuda, on_cpu in (
        ("train_iterations", 150, 6),
        ("ddp_iterations", 5, 2),
        ("latency_iterations", 30, 2),
        ("latency_warmup", 5, 1),
        ("parity_size", 320, 96),
    ):
        if getattr(args, name) is None:
            setattr(args, name, on_cuda if cuda else on_cpu)
    return args


def run_checks(args: argparse.Namespace, checks: CheckList) -> dict:
    """Run the selected parts into ``checks``; returns the environment."""
    device = torch.device(args.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise SystemExit("--device cuda: torch sees no CUDA device (use --device cpu)")
    cuda = device.type == "cuda"
    args = _defaults(args, cuda)
    root = Path(args.root)
    parts = {int(p) for p in args.parts.split(",") if p.strip()}
    env = environment(device)
    with tempfile.TemporaryDirectory() as folder:
        out = Path(folder)
        if 1 in parts:
            gpu = env.get("gpu") or env.get("cpu")
            detail = f"{gpu}, capability {env.get('capability', '-')}, CUDA {env['cuda_runtime']}"
            detail += f", driver {env.get('driver', '-')}, torch {env['torch']}"
            checks.add(Check(1, "environment", INFO, detail, env))
            checks.run(1, "NCCL all-reduce", lambda: check_nccl(device))
            for check in _safely(1, "torchvision ops", lambda: check_ops(device)):
                checks.add(check)
        if 2 in parts:
            for label, config, overrides in parity_models(root, quick=not cuda):
                checks.run(
                    2,
                    f"parity: {label}",
                    lambda: check_parity(root, device, label, config, overrides, args.parity_size),
                )
                checks.run(
                    2,
                    f"fp16: {label}",
                    lambda: check_fp16(root, device, label, config, overrides, args.parity_size),
                )
        if 3 in parts or 4 in parts:
            dataset = write_synthetic(out / "datasets", 24 if cuda else 6, 4 if cuda else 2)
        if 3 in parts:
            for label in TRAINING_CONFIGS:
                checks.run(
                    3,
                    f"AMP training: {label}",
                    lambda: check_amp_training(root, device, label, args.train_iterations, out),
                )
        if 4 in parts:
            for label in TRAINING_CONFIGS:
                checks.run(4, f"gradients: {label}", lambda: check_gradients(root, device, label))
            checks.run(4, "DDP", lambda: check_ddp(root, device, dataset, args.ddp_iterations, out))
        if 5 in parts:
            models = LATENCY_MODELS if cuda else LATENCY_MODELS[:1]
            for label, config, size, goal in models:
                size = size if cuda else 128
                for check in _safely(
                    5,
                    f"latency {label}",
                    lambda: check_latency(
                        root,
                        device,
                        label,
                        config,
                        size,
                        goal,
                        iterations=args.latency_iterations,
                        warmup=args.latency_warmup,
                    ),
                ):
                    checks.add(check)
    return env


def _safely(part: int, name: str, function) -> List[Check]:
    """``function()``'s checks, or one FAIL naming the exception."""
    from .results import FAIL

    try:
        return function()
    except Exception as error:
        return [Check(part, name, FAIL, f"{type(error).__name__}: {error}"[:300])]


def main(argv: Optional[List[str]] = None) -> int:
    """Run, print the table, write the JSON; 0 when nothing failed, 1 otherwise."""
    args = parse_args(argv)
    start = time.perf_counter()
    checks = CheckList()
    env = run_checks(args, checks)
    elapsed = time.perf_counter() - start
    print()
    print(checks.table())
    options = {k: v for k, v in vars(args).items()}
    options["elapsed_s"] = round(elapsed, 1)
    checks.write_json(Path(args.output), env, options)
    failed = checks.failed
    print(
        f"\n{len(checks.checks)} checks, {len(failed)} failed, {elapsed:.0f} s; wrote {args.output}"
    )
    return 1 if failed else 0
