"""Part 5 of the GPU acceptance check: end-to-end latency with post-processing, synthetic
weights, eager / optimised x fp32 (with TF32 where the GPU has it) / fp16."""

from pathlib import Path
from typing import List, Tuple

import torch

from centermask.benchmark.inference import benchmark_inference, parse_modes
from centermask.benchmark.precision import set_tf32
from centermask.data.inputs import model_inputs, synthetic_image

from .device_checks import build_synthetic
from .results import FAIL, INFO, PASS, Check

__all__ = ["LATENCY_MODELS", "check_latency"]

# (label, config, test size, fp16 goal in ms on a current data-centre GPU or None). The paper's
# CenterMask-Lite V-39 and CenterMask V-39: 28 / 50 ms on Titan Xp / V100.
LATENCY_MODELS: List[Tuple[str, str, int, float]] = [
    (
        "CenterMask-Lite V-39",
        "configs/centermask/centermask_lite_V_39_eSE_FPN_ms_4x.yaml",
        600,
        8.0,
    ),
    ("CenterMask V-39", "configs/centermask/centermask_V_39_eSE_FPN_ms_3x.yaml", 800, 20.0),
    ("CondInst V-39", "configs/condinst/MS_V_39_eSE_3x.yaml", 600, None),
    (
        "CenterMask-PR V-39",
        "configs/centermask_pr/centermask_pr_V_39_eSE_FPN_ms_3x.yaml",
        600,
        None,
    ),
]
POSTPROCESS_SHARE_MAX = 0.3
POSTPROCESS_STAGES = ("postprocess_paste", "assemble_paste")


def check_latency(
    root: Path,
    device: torch.device,
    label: str,
    config: str,
    size: int,
    goal_ms,
    *,
    iterations: int,
    warmup: int,
) -> List[Check]:
    """Median latency of each mode; on CUDA the fp16 optimised mode against ``goal_ms`` and the
    post-processing share against 30%."""
    overrides = ["INPUT.MIN_SIZE_TEST", str(size), "INPUT.MAX_SIZE_TEST", str(size * 5 // 3)]
    # Low thresholds: synthetic weights then give the 50-100 detections per image of a real scene.
    overrides += ["MODEL.FCOS.INFERENCE_TH_TEST", "0.01"]
    model, cfg = build_synthetic(root, config, overrides, str(device))
    image = synthetic_image(size, size * 4 // 3, seed=0)
    with torch.no_grad():
        detections = len(model(model_inputs(cfg, [image]))[0]["instances"])
    dtypes = [("fp32", torch.float32)] + (
        [("fp16", torch.float16)] if device.type == "cuda" else []
    )
    tf32 = set_tf32(device, True)
    checks = []
    try:
        for dtype_name, dtype in dtypes:
            results = benchmark_inference(
                model, cfg, parse_modes("eager,optimized"), iterations=iterations, warmup=warmup,
                dtype=dtype, images=[image], log=lambda _: None,
            )  # fmt: skip
            for mode, entry in results["modes"].items():
                data = entry["batches"]["1"]
                total = data["total"]["median_ms"]
                post = sum(
                    data["stages"].get(s, {}).get("median_ms", 0.0) for s in POSTPROCESS_STAGES
                )
                share = post / total if total else 0.0
                precision = dtype_name + (" +TF32" if tf32 and dtype_name == "fp32" else "")
                name = f"latency {label} {size}px {mode} {precision}"
                values = {"median_ms": total, "postprocess_share": share, "detections": detections}
                status, detail = (
                    INFO,
                    f"{total:.1f} ms, post-processing {share:.0%}, {detections} dets",
                )
                if device.type == "cuda" and mode == "optimized" and dtype_name == "fp16":
                    met = (goal_ms is None or total <= goal_ms) and share <= POSTPROCESS_SHARE_MAX
                    status = PASS if met else FAIL
                    if goal_ms is not None:
                        detail += f" (goal {goal_ms:.0f} ms, post-processing <= 30%)"
                checks.append(Check(5, name, status, detail, values))
    finally:
        set_tf32(device, False)
    return checks
