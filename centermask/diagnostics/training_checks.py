"""Parts 3 and 4 of the GPU acceptance check: AMP training on the synthetic data set, and what
DistributedDataParallel needs without a second GPU (every parameter gets a gradient; two gloo
processes sharing the one device through :func:`centermask.engine.launch`)."""

import json
import math
import statistics
from pathlib import Path
from typing import Dict, List

import torch
from detectron2.engine import HookBase
from detectron2.modeling import build_model
from detectron2.structures import BitMasks, PolygonMasks
from detectron2.utils.env import seed_all_rng
from detectron2.utils.events import EventStorage

from centermask.config import get_cfg
from centermask.data import register_synthetic
from centermask.data.synthetic import generate_synthetic
from centermask.data.synthetic_scene import SceneConfig
from centermask.engine import Trainer, launch

from .results import FAIL, PASS, Check

__all__ = [
    "TRAINING_CONFIGS",
    "write_synthetic",
    "check_amp_training",
    "check_gradients",
    "check_ddp",
]

# The three designs' tiny synthetic-data configs.
TRAINING_CONFIGS = {
    "CenterMask-Lite": "configs/quick_schedules/centermask_lite_V_19_slim_dw_synthetic_instant_test.yaml",
    "CondInst-Lite": "configs/quick_schedules/condinst_lite_V_19_slim_dw_synthetic_instant_test.yaml",
    "CenterMask-PR": "configs/quick_schedules/centermask_pr_lite_V_19_slim_dw_synthetic_instant_test.yaml",
}
WINDOW = 20  # iterations averaged at the start and at the end
DECREASE = 0.7  # the last window's mean loss must be below this fraction of the first's
MAX_SKIPPED = 0.1  # GradScaler may skip at most this fraction of the steps


def write_synthetic(folder: Path, num_train: int, num_val: int) -> Path:
    """Generate and register the synthetic data set (small scenes) under ``folder``."""
    scene = SceneConfig(min_short_side=96, max_short_side=128, min_object_size=12)
    generate_synthetic(
        folder / "synthetic", num_train, num_val, seed=0, scene=scene, progress=False
    )
    register_synthetic(folder / "synthetic")
    return folder / "synthetic"


def training_cfg(root: Path, config: str, device: torch.device, output_dir: Path, *overrides):
    cfg = get_cfg()
    cfg.merge_from_file(str(root / config))
    cfg.merge_from_list(["MODEL.DEVICE", str(device), "OUTPUT_DIR", str(output_dir), *overrides])
    return cfg


class _ScaleRecorder(HookBase):
    """Counts the steps GradScaler skipped (its scale drops after a step with inf/NaN grads)."""

    def __init__(self):
        self.skipped = 0
        self.steps = 0

    def after_step(self):
        scaler = getattr(self.trainer._trainer, "grad_scaler", None)
        self.steps += 1
        if scaler is None:
            return
        scale = scaler.get_scale()
        if self.steps > 1 and scale < self._previous:
            self.skipped += 1
        self._previous = scale


def check_amp_training(root: Path, device: torch.device, label: str, iterations: int, out: Path):
    """``iterations`` AMP iterations (fp16 + GradScaler on CUDA, bf16 on the CPU): losses finite,
    decreasing (with at least 3 windows of iterations), few skipped steps, peak memory."""
    cfg = training_cfg(
        root, TRAINING_CONFIGS[label], device, out / label,
        "SOLVER.AMP.ENABLED", "True", "SOLVER.MAX_ITER", str(iterations),
        "SOLVER.CHECKPOINT_PERIOD", str(10 * iterations), "SOLVER.WARMUP_ITERS", str(max(1, iterations // 10)),
    )  # fmt: skip
    seed_all_rng(cfg.SEED)
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    trainer = Trainer(cfg)
    trainer.resume_or_load(resume=False)
    recorder = _ScaleRecorder()
    trainer.register_hooks([recorder])
    trainer.train()
    losses = [v for v, _ in trainer.storage.history("total_loss").values()]
    window = min(WINDOW, max(1, len(losses) // 3))
    first, last = statistics.mean(losses[:window]), statistics.mean(losses[-window:])
    finite = all(math.isfinite(v) for v in losses) and len(losses) == iterations
    skipped = recorder.skipped / max(recorder.steps, 1)
    peak = torch.cuda.max_memory_allocated(device) / 2**20 if device.type == "cuda" else None
    # The decrease is judged on full windows only (a few iterations of the reduced form are
    # still in the warm-up).
    judged = len(losses) >= 3 * WINDOW
    ok = finite and skipped < MAX_SKIPPED and (not judged or last < DECREASE * first)
    data = {
        "iterations": len(losses), "first_mean": first, "last_mean": last, "window": window,
        "skipped_fraction": skipped, "peak_memory_mb": peak,
    }  # fmt: skip
    detail = (
        f"{len(losses)} it, loss {first:.3f} -> {last:.3f} (means of {window}), "
        f"skipped {skipped:.0%}" + (f", peak {peak:.0f} MB" if peak else "")
    )
    if not judged:
        detail += f"; decrease not judged (< {3 * WINDOW} it)"
    return Check(3, f"AMP training: {label}", PASS if ok else FAIL, detail, data)


def _batch(cfg, empty: bool) -> List[Dict]:
    from centermask.benchmark.training import synthetic_training_record, training_mapper

    mapper = training_mapper(cfg)
    records = [
        synthetic_training_record(i, 128, 160, num_objects=0 if empty else 4, num_classes=2)
        for i in range(2)
    ]
    batch = [mapper(r) for r in records]
    for x in batch:
        instances = x["instances"]
        if not instances.has("gt_masks"):  # no annotation: detectron2 adds no mask field
            h, w = instances.image_size
            instances.gt_masks = (
                BitMasks(torch.zeros((0, h, w), dtype=torch.bool))
                if cfg.INPUT.MASK_FORMAT == "bitmask"
                else PolygonMasks([])
            )
    return batch


def check_gradients(root: Path, device: torch.device, label: str) -> Check:
    """Every trainable parameter receives a gradient, on a normal batch and on a batch without
    annotations (DistributedDataParallel's failure condition with find_unused_parameters=False)."""
    cfg = training_cfg(root, TRAINING_CONFIGS[label], device, root / "output")
    torch.manual_seed(0)
    model = build_model(cfg).train()
    missing = {}
    for kind in ("annotated", "empty"):
        with EventStorage(0):
            losses = model(_batch(cfg, empty=kind == "empty"))
        sum(losses.values()).backward()
        missing[kind] = [
            n for n, p in model.named_parameters() if p.requires_grad and p.grad is None
        ]
        model.zero_grad(set_to_none=True)
    ok = not any(missing.values())
    detail = ", ".join(f"{k}: {len(v)} without gradient" for k, v in missing.items())
    if not ok:
        detail += f" (e.g. {(missing['annotated'] or missing['empty'])[0]})"
    return Check(4, f"all parameters get gradients: {label}", PASS if ok else FAIL, detail)


def _ddp_worker(config_yaml: str, dataset_root: str) -> None:
    """One of the two launched processes: train, then record what this rank saw."""
    import torch.distributed as dist
    from detectron2.config import CfgNode
    from detectron2.utils import comm

    register_synthetic(dataset_root)
    cfg = CfgNode.load_cfg(config_yaml)
    seed_all_rng(cfg.SEED + comm.get_rank())
    trainer = Trainer(cfg)
    trainer.resume_or_load(resume=False)
    trainer.train()
    device = torch.device(cfg.MODEL.DEVICE)
    value = torch.tensor([comm.get_rank() + 1.0], device=device)
    dist.all_reduce(value)
    # After DDP's gradient all-reduce the replicas hold the same weights.
    digest = sum(float(p.detach().double().sum()) for p in trainer.model.parameters())
    record = {
        "rank": comm.get_rank(),
        "world": comm.get_world_size(),
        "all_reduce": value.item(),
        "iterations": trainer.iter,  # the loop leaves it at MAX_ITER
        "weights_digest": digest,
    }
    Path(cfg.OUTPUT_DIR, f"rank{comm.get_rank()}.json").write_text(json.dumps(record))


def check_ddp(root: Path, device: torch.device, dataset_root: Path, iterations: int, out: Path):
    """Two gloo processes on the one device for ``iterations`` iterations: all-reduce, equal
    replicas, a checkpoint written."""
    output_dir = out / "ddp"
    cfg = training_cfg(
        root, TRAINING_CONFIGS["CenterMask-Lite"], device, output_dir,
        "SOLVER.MAX_ITER", str(iterations), "SOLVER.CHECKPOINT_PERIOD", str(iterations),
        "SOLVER.WARMUP_ITERS", "1",
    )  # fmt: skip
    launch(_ddp_worker, 2, dist_url="auto", args=(cfg.dump(), str(dataset_root)), backend="gloo")
    records = [json.loads((output_dir / f"rank{r}.json").read_text()) for r in (0, 1)]
    checkpoint = (output_dir / "model_final.pth").is_file()
    same = abs(records[0]["weights_digest"] - records[1]["weights_digest"]) <= 1e-6 * max(
        1.0, abs(records[0]["weights_digest"])
    )
    ok = (
        all(r["world"] == 2 and r["all_reduce"] == 3.0 for r in records)
        and all(r["iterations"] == iterations for r in records)
        and same
        and checkpoint
    )
    detail = (
        f"2 gloo ranks x {records[0]['iterations']} it, all-reduce {records[0]['all_reduce']}, "
        f"replicas {'equal' if same else 'DIFFER'}, checkpoint {'written' if checkpoint else 'MISSING'}"
    )
    return Check(
        4,
        f"DDP: 2 gloo processes on one {device.type}",
        PASS if ok else FAIL,
        detail,
        {"ranks": records},
    )
