"""``centermask quickstart`` (and ``tools/quickstart.py``): CPU quickstart, generate the synthetic
data set, train a Lite model from scratch, evaluate.

    centermask quickstart [--output-dir output/quickstart] [--data-dir datasets/synthetic]
                          [--budget-minutes 15] [--threads N] [KEY VALUE ...]

Steps: (1) write the built-in synthetic data set unless the same one is already there, (2) train
the config (default: CenterMask-PR on FCOS with a Lite V-19-slim-dw-eSE,
configs/quickstart/centermask_pr_fcos_lite_V_19_slim_dw_eSE_synthetic.yaml: in 15 CPU minutes
the highest box AP and, with CondInst, mask AP of the three designs; the README compares it with
CenterMask-Lite and CondInst-Lite, which ``--config-file`` selects) for what is left of
``--budget-minutes`` (SOLVER.TIME_BUDGET_MINUTES: the LR schedule follows the fraction of the time
used and training ends on time, however fast this machine is; pass SOLVER.MAX_ITER to train a
fixed number of iterations instead), (3) evaluate on synthetic_val with the COCO API (box AP on the
box score, mask AP on mask_scores), (4) write prediction images (ground truth | prediction) to
<output>/predictions (the trainer has drawn <output>/loss_curve.png), (5) print a summary table
(also saved as <output>/summary.json).

Processes and threads: ``--processes 2`` trains in two processes (gloo data parallelism, half
the batch and one thread each; on an idle 2-core machine of the kind this is sized for, 1.13x
the iterations of one 2-thread process in a whole run, 0.50 against 0.57 s per iteration at the
end, with AP within run-to-run noise). With one process (the default), unless ``--threads``
fixes it, training times its iterations with one intra-op thread per core and with
half as many, interleaved, keeps the faster, and times them again whenever the speed drifts
(centermask.engine.threads.ThreadChoice): on a 2-core machine shared with another busy process
one thread can be faster, on an idle one two are. OpenMP threads sleep instead of spinning when
they wait (OMP_WAIT_POLICY PASSIVE; spinning made the busy case 0.88 s per iteration instead of
0.49). The variable is read when torch is loaded: ``tools/quickstart.py`` sets it before its
imports, and ``centermask quickstart`` restarts its process with it when it is not set. The
time budget counts from the start of the process, imports included.
"""

import argparse
import functools
import json
import logging
import os
import sys
import time
from pathlib import Path
from typing import List, Optional

import cv2
import numpy as np
import torch
from detectron2.data import DatasetCatalog, MetadataCatalog
from detectron2.utils import comm
from detectron2.utils.logger import setup_logger
from detectron2.utils.visualizer import Visualizer

import centermask.modeling  # noqa: F401  (registers the model components)
from centermask.checkpoint import AtomicCheckpointer
from centermask.cli.common import (
    OMP_ENVIRONMENT,
    command_parser,
    parse_and_run,
    process_start_seconds_ago,
)
from centermask.data import ensure_synthetic, register_synthetic
from centermask.data.synthetic import BUILTIN_NUM_TRAIN, BUILTIN_NUM_VAL, BUILTIN_SCENE
from centermask.engine import (
    PREEMPTED_EXIT_CODE,
    Trainer,
    TrainingPreempted,
    choose_backend,
    draw_predictions,
    filter_by_score,
    launch,
)
from centermask.engine.defaults import build_config
from centermask.engine.threads import ThreadChoice
from centermask.model_zoo import resolve_config_file

# A shipped config, found in the installed package or the source checkout.
DEFAULT_CONFIG = "centermask://quickstart/centermask_pr_fcos_lite_V_19_slim_dw_eSE_synthetic"
# The summary's title, by MODEL.META_ARCHITECTURE.
MODEL_NAMES = {
    "GeneralizedRCNN": "CenterMask",
    "CondInst": "CondInst",
    "CenterMaskPR": "CenterMask-PR",
}


# Kept free at the end of the budget: prediction pictures and summary (~3 s) plus a margin for
# building the trainer and for an evaluation slower than reserved.
_AFTER_TRAINING_SECONDS = 10.0
_MARGIN_FRACTION = 0.02


EPILOG = """
Examples:

The default run (CenterMask-PR Lite, 15 minutes in all), then the CondInst Lite config in 5:
  centermask quickstart
  centermask quickstart --budget-minutes 5 --output-dir output/quickstart_condinst \\
      --config-file configs/quickstart/condinst_lite_V_19_slim_dw_eSE_synthetic.yaml

Two training processes (gloo data parallel, one thread each):
  centermask quickstart --processes 2
"""


def build_parser(prog: Optional[str] = None) -> argparse.ArgumentParser:
    parser = command_parser(
        prog,
        "CPU quickstart: generate the synthetic data set, train a Lite model from scratch for a "
        "time budget, evaluate, draw predictions.",
        EPILOG,
        config_file=DEFAULT_CONFIG,
    )
    parser.add_argument("--output-dir", default=None, help="default: OUTPUT_DIR of the config")
    parser.add_argument(
        "--data-dir",
        default=os.path.join(os.getenv("DETECTRON2_DATASETS", "datasets"), "synthetic"),
    )
    parser.add_argument("--num-train", type=int, default=BUILTIN_NUM_TRAIN)
    parser.add_argument("--num-val", type=int, default=BUILTIN_NUM_VAL)
    parser.add_argument("--seed", type=int, default=0, help="data set seed")
    parser.add_argument(
        "--threads",
        type=int,
        default=None,
        help="intra-op threads; default: chosen by timing training (again when the speed drifts)",
    )
    parser.add_argument(
        "--processes",
        type=int,
        default=1,
        help="training processes (gloo data parallel, one thread each, the batch split between "
        "them); on an idle 2-core machine 2 train 1.13x the iterations of 1 with 2 threads",
    )
    parser.add_argument("--num-vis", type=int, default=6, help="prediction images to write")
    parser.add_argument("--vis-threshold", type=float, default=0.4, help="on the box score")
    parser.add_argument(
        "--budget-minutes",
        type=float,
        default=15.0,
        help="the whole run (data, training, evaluation, pictures) ends within this many "
        "minutes; 0, or SOLVER.MAX_ITER on the command line, trains the config's iterations",
    )
    parser.add_argument("--resume", action="store_true", help="continue an interrupted run")
    parser.add_argument("--eval-only", action="store_true", help="evaluate model_final.pth")
    parser.add_argument("opts", nargs=argparse.REMAINDER, help="config overrides KEY VALUE ...")
    return parser


def parse_args(argv: Optional[List[str]] = None) -> argparse.Namespace:
    return build_parser().parse_args(argv)


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


def time_budget_opts(budget_minutes: float, spent_seconds: float, opts: List[str]) -> List[str]:
    """The config overrides that give training and its evaluation what is left of the budget
    after ``spent_seconds``, less what comes after training and a margin; none when the budget
    is 0 or ``opts`` fix SOLVER.MAX_ITER."""
    if budget_minutes <= 0 or "SOLVER.MAX_ITER" in opts:
        return []
    budget = 60.0 * budget_minutes
    left = budget * (1 - _MARGIN_FRACTION) - _AFTER_TRAINING_SECONDS - spent_seconds
    if left <= 0:
        raise ValueError(
            f"--budget-minutes {budget_minutes:g} leaves no time for training: "
            f"{spent_seconds:.0f} s were spent before it"
        )
    return ["SOLVER.TIME_BUDGET_MINUTES", str(left / 60.0)]


def train_and_evaluate(
    config_file: str,
    opts: List[str],
    data_dir: str,
    deadline: Optional[float],
    resume: bool,
    choose_threads: bool,
    result_path: str,
) -> None:
    """Train and evaluate in this process, one of several with data parallelism; the first writes
    what the summary needs to ``result_path`` (json).

    ``deadline`` (a ``time.time()``, or None for the config's iterations) is when training and
    its evaluation must be over. Every process must train for the same budget, so all take the
    first one's (the time since the launch, spent spawning, is no longer there to train in).
    """
    register_synthetic(data_dir)  # again in a spawned process
    budget = []
    if deadline is not None:
        minutes = comm.all_gather((deadline - time.time()) / 60.0)[0]
        if minutes <= 0:
            raise ValueError("no time is left for training: raise --budget-minutes")
        budget = ["SOLVER.TIME_BUDGET_MINUTES", str(minutes)]
    cfg = build_config(argparse.Namespace(config_file=config_file, opts=opts + budget))
    if comm.get_world_size() > 1:
        for name in ("detectron2", "centermask"):
            setup_logger(cfg.OUTPUT_DIR, distributed_rank=comm.get_rank(), name=name)
    if budget:
        logging.getLogger("detectron2").info(f"{minutes:.2f} minutes for training and evaluation")
    trainer = Trainer(cfg)
    threads = ThreadChoice() if choose_threads else None
    if threads:
        trainer.register_hooks([threads])
    trainer.resume_or_load(resume=resume)
    trainer.train()  # ends with an evaluation on DATASETS.TEST (detectron2's EvalHook)
    results = getattr(trainer, "_last_eval_results", None)
    if results is None:  # every process takes this branch or none: it is a collective call
        results = Trainer.test(cfg, trainer.model)
    if not comm.is_main_process():
        return
    time_budget = trainer.time_budget
    record = {
        "iterations": int(trainer.iter),
        "iterations_this_run": int(trainer.iter - trainer.start_iter),
        "threads": torch.get_num_threads(),
        "thread_choices": [[i, n, t] for i, n, t in threads.choices] if threads else None,
        "seconds_per_iteration": time_budget.seconds_per_iteration if time_budget else None,
        "training_seconds": round(time_budget.seconds_spent, 1) if time_budget else None,
        "results": results,
    }
    with open(result_path, "w") as f:
        json.dump(record, f)


def summary_table(rows, title: str = "CenterMask") -> str:
    width = max(len(k) for k, _ in rows)
    lines = [f"{title} quickstart", "=" * 60]
    lines += [f"{k.ljust(width)}  {v}" for k, v in rows]
    return "\n".join(lines + ["=" * 60])


def _ap(results: dict, task: str, key: str = "AP") -> float:
    return float(results.get(task, {}).get(key, float("nan")))


def run(args: argparse.Namespace, started: Optional[float] = None) -> dict:
    """Run the quickstart of ``args`` (of :func:`build_parser`); the budget counts from
    ``started`` (a ``time.perf_counter()`` value, default: now). Returns the summary."""
    start = time.perf_counter() if started is None else started
    if args.threads:
        torch.set_num_threads(args.threads)
    # Inherited by spawned training processes (this one's OpenMP runtime has read it already).
    for key, value in OMP_ENVIRONMENT.items():
        os.environ.setdefault(key, value)

    # 1. Config and logs.
    config_file, opts = resolve_config_file(args.config_file, args.opts)
    if args.output_dir:
        opts += ["OUTPUT_DIR", args.output_dir]
    cfg = build_config(argparse.Namespace(config_file=config_file, opts=opts))
    out = Path(cfg.OUTPUT_DIR)
    out.mkdir(parents=True, exist_ok=True)
    logger = setup_logger(str(out), name="detectron2")
    setup_logger(str(out), name="centermask")
    logger.info(f"output: {out}")

    # 2. Data.
    data_dir = Path(args.data_dir)
    t = time.perf_counter()
    ensure_synthetic(data_dir, args.num_train, args.num_val, args.seed, BUILTIN_SCENE)
    data_time = time.perf_counter() - t
    register_synthetic(data_dir)

    # 3. Train for what is left of the budget (or load) and evaluate.
    t = time.perf_counter()
    processes = args.processes
    record = {"iterations": 0, "iterations_this_run": 0, "threads": torch.get_num_threads()}
    if args.eval_only:
        model = Trainer.build_model(cfg)
        AtomicCheckpointer(model).load(str(out / "model_final.pth"))
        record["results"] = Trainer.test(cfg, model)
    else:
        budget = time_budget_opts(args.budget_minutes, time.perf_counter() - start, opts)
        deadline = time.time() + 60.0 * float(budget[1]) if budget else None
        result_path = out / "training_result.json"
        launch(
            train_and_evaluate,
            processes,
            dist_url="auto",
            backend=choose_backend(cfg.MODEL.DEVICE),
            args=(
                config_file,
                opts,
                str(data_dir),
                deadline,
                args.resume,
                processes == 1 and not args.threads,
                str(result_path),
            ),
        )
        with open(result_path) as f:
            record = json.load(f)
        model = Trainer.build_model(cfg)
        AtomicCheckpointer(model).load(str(out / "model_final.pth"))
    results = record["results"]
    train_time = time.perf_counter() - t

    # 4. Pictures.
    images = write_prediction_images(
        cfg, model, cfg.DATASETS.TEST[0], out / "predictions", args.num_vis, args.vis_threshold
    )
    # Drawn by the trainer's LossCurveHook at the end of training.
    curve = out / "loss_curve.png" if (out / "loss_curve.png").is_file() else None

    # 5. Summary.
    total = time.perf_counter() - start
    summary = {
        "config": config_file,
        "iterations": record["iterations"],
        "iterations_this_run": record["iterations_this_run"],
        "images_per_batch": int(cfg.SOLVER.IMS_PER_BATCH),
        "processes": 1 if args.eval_only else processes,
        "threads": record["threads"],
        "thread_choices": record.get("thread_choices"),
        "seconds_per_iteration": record.get("seconds_per_iteration"),
        "training_seconds": record.get("training_seconds"),
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
    per_iteration = summary["seconds_per_iteration"]
    choices = summary["thread_choices"]
    rows = [
        ("config", os.path.relpath(config_file)),
        ("data", f"{data_dir} ({args.num_train} train / {args.num_val} val images)"),
        ("iterations", f"{summary['iterations']} x {summary['images_per_batch']} images"),
        ("s / iteration", f"{per_iteration:.2f} (at the end)" if per_iteration else "-"),
        (
            "threads",
            f"{summary['processes']} process(es) x {summary['threads']}"
            + (f" ({len(choices)} timed choices)" if choices else ""),
        ),
        ("train + eval time", f"{train_time / 60:.1f} min"),
        ("total time", f"{total / 60:.1f} min"),
        ("box AP", f"{summary['box_AP']:.1f} (AP50 {summary['box_AP50']:.1f})"),
        ("mask AP", f"{summary['mask_AP']:.1f} (AP50 {summary['mask_AP50']:.1f})"),
        ("loss curve", summary["loss_curve"] or "-"),
        ("predictions", f"{out / 'predictions'} ({len(images)} images)"),
    ]
    architecture = cfg.MODEL.META_ARCHITECTURE
    print(summary_table(rows, MODEL_NAMES.get(architecture, architecture)), flush=True)
    return summary


def command(args: argparse.Namespace, started: Optional[float] = None) -> int:
    logging.captureWarnings(True)
    try:
        run(args, started)
    except TrainingPreempted as e:  # SIGTERM / SIGINT: a checkpoint was written
        print(e, file=sys.stderr)
        return PREEMPTED_EXIT_CODE
    return 0


def process_start() -> float:
    """The ``time.perf_counter()`` value of the start of this process."""
    return time.perf_counter() - process_start_seconds_ago()


def main(argv: Optional[List[str]] = None) -> int:
    """The command; with ``argv`` None (the process's command line) the budget counts from the
    start of the process, else from this call."""
    started = process_start() if argv is None else None
    return parse_and_run(build_parser(), functools.partial(command, started=started), argv)
