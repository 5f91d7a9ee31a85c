#!/usr/bin/env python
"""CPU quickstart: generate the synthetic data set, train CenterMask-Lite from scratch, evaluate.

    python tools/quickstart.py [--output-dir output/quickstart] [--data-dir datasets/synthetic]
                               [--budget-minutes 15] [--threads N] [KEY VALUE ...]

Steps: (1) write the built-in synthetic data set unless the same one is already there, (2) time a
few training iterations and set SOLVER.MAX_ITER so that the whole run fits ``--budget-minutes``
(the LR steps follow; pass SOLVER.MAX_ITER to fix it instead), (3) train
configs/quickstart/centermask_lite_V_19_slim_dw_eSE_synthetic.yaml, (4) evaluate on synthetic_val
with the COCO API (box AP on the box score, mask AP on mask_scores), (5) write prediction images
(ground truth | prediction) to <output>/predictions (the trainer has drawn <output>/loss_curve.png),
(6) print a summary table (also saved as <output>/summary.json).

Threads: by default step (2) times the iterations with one intra-op thread per core and with a
single thread, and trains with the faster (on a 2-core machine with one other busy process: 0.65
vs 0.49 s per iteration; idle: 0.41 vs 0.49); OpenMP threads sleep instead of spinning when they
wait (OMP_WAIT_POLICY PASSIVE; spinning made the busy case 0.88 s). Without a time budget it
uses one thread per idle core (cores minus the 1-minute load average).
"""

import os

# Read by the OpenMP runtime when torch loads it, so it must be set before the imports below.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import argparse  # noqa: E402
import json  # noqa: E402
import logging  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402
from typing import Optional, Tuple  # noqa: E402

import cv2  # noqa: E402
import numpy as np  # noqa: E402
import torch  # noqa: E402
from detectron2.data import DatasetCatalog, MetadataCatalog  # noqa: E402
from detectron2.utils.events import EventStorage  # noqa: E402
from detectron2.utils.logger import setup_logger  # noqa: E402
from detectron2.utils.visualizer import Visualizer  # noqa: E402

import centermask  # noqa: F401,E402  (registers the model components)
from centermask.data import ensure_synthetic, register_synthetic  # noqa: E402
from centermask.data.synthetic_scene import SceneConfig  # noqa: E402
from centermask.engine import (  # noqa: E402
    AtomicCheckpointer,
    Trainer,
    draw_predictions,
    filter_by_score,
)
from centermask.engine.defaults import build_config  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
DEFAULT_CONFIG = ROOT / "configs/quickstart/centermask_lite_V_19_slim_dw_eSE_synthetic.yaml"
# The quickstart data set: small non-square images, so that a CPU trains on enough of them.
QUICKSTART_SCENE = SceneConfig(
    min_short_side=96, max_short_side=128, min_object_size=16, min_objects=2, max_objects=8
)


def default_threads() -> int:
    """Cores minus the current 1-minute load average (at least 1)."""
    cores = os.cpu_count() or 1
    try:
        busy = os.getloadavg()[0]
    except (AttributeError, OSError):  # not available on every platform
        busy = 0.0
    return max(1, min(cores, int(cores - busy + 0.5)))


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--config-file", default=str(DEFAULT_CONFIG))
    parser.add_argument("--output-dir", default=None, help="default: OUTPUT_DIR of the config")
    parser.add_argument(
        "--data-dir",
        default=os.path.join(os.getenv("DETECTRON2_DATASETS", "datasets"), "synthetic"),
    )
    parser.add_argument("--num-train", type=int, default=600)
    parser.add_argument("--num-val", type=int, default=100)
    parser.add_argument("--seed", type=int, default=0, help="data set seed")
    parser.add_argument(
        "--threads", type=int, default=None, help="default: the faster of one per core and one"
    )
    parser.add_argument("--num-vis", type=int, default=6, help="prediction images to write")
    parser.add_argument("--vis-threshold", type=float, default=0.4, help="on the box score")
    parser.add_argument(
        "--budget-minutes",
        type=float,
        default=15.0,
        help="set SOLVER.MAX_ITER so that the whole run fits this many minutes on this machine "
        "(measured before training); 0, or SOLVER.MAX_ITER on the command line, keeps the config's",
    )
    parser.add_argument("--resume", action="store_true", help="continue an interrupted run")
    parser.add_argument("--eval-only", action="store_true", help="evaluate model_final.pth")
    parser.add_argument("opts", nargs=argparse.REMAINDER, help="config overrides KEY VALUE ...")
    return parser.parse_args(argv)


def write_prediction_images(cfg, model, dataset: str, out_dir: Path, count: int, threshold: float):
    """Ground truth | prediction side by side for the first ``count`` images of ``dataset``."""
    out_dir.mkdir(parents=True, exist_ok=True)
    metadata = MetadataCatalog.get(dataset)
    loader = Trainer.build_test_loader(cfg, dataset)
    written = []
    model.eval()
    with torch.no_grad():
        for record, inputs in zip(DatasetCatalog.get(dataset)[:count], loader):
            image = cv2.imread(record["file_name"])
            instances = model(inputs)[0]["instances"].to("cpu")
            shown = filter_by_score(instances, threshold, score="box")
            # Small images are drawn enlarged so that the labels stay readable.
            scale = max(1.0, 320 / min(image.shape[:2]))
            pred = draw_predictions(image, shown, metadata, scale=scale)
            gt = Visualizer(image[:, :, ::-1], metadata=metadata, scale=scale)
            gt = gt.draw_dataset_dict(record)
            panel = np.concatenate([gt.get_image()[:, :, ::-1], pred], axis=1)
            path = out_dir / f"{Path(record['file_name']).stem}.png"
            cv2.imwrite(str(path), panel)
            written.append(path)
    return written


def seconds_per_iteration(cfg, iterations: int = 8) -> float:
    """Median wall time of a training iteration of ``cfg`` on this machine, now (a throwaway model;
    the first iterations, slower while memory is allocated, are not counted)."""
    model = Trainer.build_model(cfg)
    optimizer = Trainer.build_optimizer(cfg, model)
    batches = iter(Trainer.build_train_loader(cfg))
    times = []
    with EventStorage(0):
        for _ in range(iterations):
            tic = time.perf_counter()
            losses = sum(model(next(batches)).values())
            optimizer.zero_grad()
            losses.backward()
            optimizer.step()
            times.append(time.perf_counter() - tic)
    return float(np.median(times[2:]))


# Iterations can slow down by up to about this much once the detector proposes boxes (more RoIs for
# the mask and MaskIoU heads) compared with the first ones (measured: 0.97-1.10 on an idle machine
# with 2 threads, 1.13 with 1 thread on a busy one).
_LATER_ITERATION_SLOWDOWN = 1.1


def fastest_thread_count(cfg) -> Tuple[int, float]:
    """Time training iterations with one thread per core and with one thread; set and return the
    faster count, with its seconds per iteration."""
    timings = {}
    for threads in sorted({os.cpu_count() or 1, 1}, reverse=True):
        torch.set_num_threads(threads)
        timings[threads] = seconds_per_iteration(cfg)
    best = min(timings, key=timings.get)
    torch.set_num_threads(best)
    logging.getLogger("detectron2").info(
        "s per iteration by thread count: "
        + ", ".join(f"{n}: {t:.2f}" for n, t in timings.items())
        + f"; training with {best}"
    )
    return best, timings[best]


def iterations_for_budget(
    cfg, budget_s: float, spent_s: float, per_iteration: Optional[float] = None
) -> Tuple[int, float]:
    """SOLVER.MAX_ITER that fits training into what is left of ``budget_s`` (minus a reserve for
    evaluation and pictures), between 200 and 3000, and the seconds per iteration (measured now
    unless given)."""
    if per_iteration is None:
        per_iteration = seconds_per_iteration(cfg)
    reserve = 30.0 + 0.03 * budget_s  # evaluation and pictures (~15 s), with a margin
    available = budget_s - spent_s - reserve
    max_iter = available / (per_iteration * _LATER_ITERATION_SLOWDOWN)
    return int(min(3000, max(200, max_iter))), per_iteration


def rescale_schedule(cfg, max_iter: int) -> None:
    """Set SOLVER.MAX_ITER, keeping the LR steps and checkpoints at the same fractions of it."""
    ratio = max_iter / cfg.SOLVER.MAX_ITER
    cfg.defrost()
    cfg.SOLVER.STEPS = tuple(int(round(step * ratio)) for step in cfg.SOLVER.STEPS)
    cfg.SOLVER.WARMUP_ITERS = min(cfg.SOLVER.WARMUP_ITERS, max_iter // 10)
    cfg.SOLVER.CHECKPOINT_PERIOD = max(1, int(round(cfg.SOLVER.CHECKPOINT_PERIOD * ratio)))
    cfg.SOLVER.MAX_ITER = max_iter
    cfg.freeze()


def summary_table(rows) -> str:
    width = max(len(k) for k, _ in rows)
    lines = ["CenterMask quickstart", "=" * 60]
    lines += [f"{k.ljust(width)}  {v}" for k, v in rows]
    return "\n".join(lines + ["=" * 60])


def _ap(results: dict, task: str, key: str = "AP") -> float:
    return float(results.get(task, {}).get(key, float("nan")))


def main(argv=None) -> dict:
    args = parse_args(argv)
    start = time.perf_counter()
    torch.set_num_threads(max(1, args.threads or default_threads()))

    # 1. Config and logs.
    opts = list(args.opts)
    if args.output_dir:
        opts += ["OUTPUT_DIR", args.output_dir]
    cfg = build_config(argparse.Namespace(config_file=args.config_file, opts=opts))
    out = Path(cfg.OUTPUT_DIR)
    out.mkdir(parents=True, exist_ok=True)
    logger = setup_logger(str(out), name="detectron2")
    setup_logger(str(out), name="centermask")
    logger.info(f"torch threads: {torch.get_num_threads()}; output: {out}")

    # 2. Data.
    data_dir = Path(args.data_dir)
    t = time.perf_counter()
    ensure_synthetic(data_dir, args.num_train, args.num_val, args.seed, QUICKSTART_SCENE)
    data_time = time.perf_counter() - t
    register_synthetic(data_dir)

    # 3. Schedule: as many iterations as fit the time budget (the LR steps follow).
    per_iteration = None
    if args.budget_minutes > 0 and "SOLVER.MAX_ITER" not in opts and not args.eval_only:
        if args.threads is None:
            _, per_iteration = fastest_thread_count(cfg)
        spent = time.perf_counter() - start
        max_iter, per_iteration = iterations_for_budget(
            cfg, 60 * args.budget_minutes, spent, per_iteration
        )
        rescale_schedule(cfg, max_iter)
        logger.info(
            f"{per_iteration:.2f} s per (early) iteration: {max_iter} iterations (LR steps at "
            f"{list(cfg.SOLVER.STEPS)}) to finish within {args.budget_minutes:g} minutes"
        )

    # 4. Train (or load) and evaluate.
    t = time.perf_counter()
    if args.eval_only:
        trainer_iters = 0
        model = Trainer.build_model(cfg)
        AtomicCheckpointer(model).load(str(out / "model_final.pth"))
        results = Trainer.test(cfg, model)
    else:
        trainer = Trainer(cfg)
        trainer.resume_or_load(resume=args.resume)
        trainer_iters = cfg.SOLVER.MAX_ITER - trainer.start_iter
        trainer.train()  # ends with an evaluation on DATASETS.TEST (detectron2's EvalHook)
        model = trainer.model
        results = getattr(trainer, "_last_eval_results", None) or Trainer.test(cfg, model)
    train_time = time.perf_counter() - t

    # 5. Pictures.
    images = write_prediction_images(
        cfg, model, cfg.DATASETS.TEST[0], out / "predictions", args.num_vis, args.vis_threshold
    )
    # Drawn by the trainer's LossCurveHook at the end of training.
    curve = out / "loss_curve.png" if (out / "loss_curve.png").is_file() else None

    # 6. Summary.
    total = time.perf_counter() - start
    summary = {
        "config": args.config_file,
        "iterations": int(cfg.SOLVER.MAX_ITER),
        "iterations_this_run": int(trainer_iters),
        "images_per_batch": int(cfg.SOLVER.IMS_PER_BATCH),
        "threads": torch.get_num_threads(),
        "seconds_per_iteration_measured": per_iteration,
        "data_seconds": round(data_time, 1),
        "train_and_eval_seconds": round(train_time, 1),
        "total_seconds": round(total, 1),
        "box_AP": _ap(results, "bbox"),
        "box_AP50": _ap(results, "bbox", "AP50"),
        "mask_AP": _ap(results, "segm"),
        "mask_AP50": _ap(results, "segm", "AP50"),
        "loss_curve": str(curve) if curve else None,
        "predictions": [str(p) for p in images],
    }
    with open(out / "summary.json", "w") as f:
        json.dump(summary, f, indent=2)
    rows = [
        ("config", os.path.relpath(args.config_file)),
        ("data", f"{data_dir} ({args.num_train} train / {args.num_val} val images)"),
        ("iterations", f"{summary['iterations']} x {summary['images_per_batch']} images"),
        (
            "s / iteration",
            f"{per_iteration:.2f} (measured before training)" if per_iteration else "-",
        ),
        ("threads", str(summary["threads"])),
        ("train + eval time", f"{train_time / 60:.1f} min"),
        ("total time", f"{total / 60:.1f} min"),
        ("box AP", f"{summary['box_AP']:.1f} (AP50 {summary['box_AP50']:.1f})"),
        ("mask AP", f"{summary['mask_AP']:.1f} (AP50 {summary['mask_AP50']:.1f})"),
        ("loss curve", summary["loss_curve"] or "-"),
        ("predictions", f"{out / 'predictions'} ({len(images)} images)"),
    ]
    print(summary_table(rows), flush=True)
    return summary


if __name__ == "__main__":
    logging.captureWarnings(True)
    main(sys.argv[1:])
