"""CenterMask-PR's local shape against its global saliency, on crowded and on sparse scenes.

Five arms, each trained on ``synthetic_crowd_train`` for the same number of iterations and with
every seed of ``--seeds``, one thread per run, ``--jobs`` runs at once:

=================  =========================================================================
``local``          ``MASK_MODE local``: the local shape alone
``global_agn``     ``MASK_MODE global``, one class-agnostic saliency map
``global_cls``     ``MASK_MODE global``, class-specific saliency + its BCE loss
``both_agn``       ``MASK_MODE both``, class-agnostic saliency
``both_cls``       ``MASK_MODE both``, class-specific saliency + BCE (the paper's model)
=================  =========================================================================

Each model is evaluated on ``synthetic_crowd_val`` and ``synthetic_sparse_val``: masks assembled
from the ground-truth boxes and classes (:mod:`.gt_box_masks`: IoU of crowded and of isolated
instances, leakage onto same-class neighbours) and COCO mask AP / AP75 of the full model. Written
under ``--output``: ``ablation.json`` (every run, and per arm the mean and the spread, max - min,
over the seeds), ``ablation.md`` (the table) and ``ablation.png`` (the most crowded val image with
the masks of the five arms from the GT boxes, first seed). A run whose ``record.json`` (in its
folder ``<output>/<arm>/seed<N>``) shows the same overrides is reused, so an interrupted ablation
continues where it stopped.
"""

import argparse
import concurrent.futures
import json
import math
import multiprocessing
import os
import re
import sys
import time
from pathlib import Path
from typing import Dict, List, Optional, Sequence

import cv2
import numpy as np

__all__ = [
    "ARMS",
    "METRICS",
    "arm_opts",
    "build_parser",
    "parse_args",
    "run",
    "summarize",
    "markdown_table",
]


BASE_CONFIG = "configs/quickstart/centermask_pr_lite_V_19_slim_dw_eSE_synthetic.yaml"
PR = "MODEL.CENTERMASK_PR."
ARMS: Dict[str, List[str]] = {
    "local": [PR + "MASK_MODE", "local"],
    "global_agn": [PR + "MASK_MODE", "global", PR + "CLASS_SPECIFIC_SALIENCY", "False"],
    "global_cls": [
        PR + "MASK_MODE", "global", PR + "CLASS_SPECIFIC_SALIENCY", "True",
        PR + "SALIENCY_LOSS_WEIGHT", "1.0",
    ],  # fmt: skip
    "both_agn": [PR + "MASK_MODE", "both", PR + "CLASS_SPECIFIC_SALIENCY", "False"],
    "both_cls": [
        PR + "MASK_MODE", "both", PR + "CLASS_SPECIFIC_SALIENCY", "True",
        PR + "SALIENCY_LOSS_WEIGHT", "1.0",
    ],  # fmt: skip
}
SPLITS = ("crowd", "sparse")
# (split, metric) columns of the table; every value is in [0, 1] (AP as a fraction).
METRICS = [
    ("crowd", "iou_crowded"),
    ("crowd", "iou_isolated"),
    ("crowd", "leakage_crowded"),
    ("crowd", "AP"),
    ("crowd", "AP75"),
    ("sparse", "iou_isolated"),
    ("sparse", "AP"),
    ("sparse", "AP75"),
]
FULL = {"iterations": 2000, "num_train": 600, "num_val": 100, "batch": 8}
# A few iterations on a handful of small images: checks the whole pipeline in CI.
SMOKE = {"iterations": 3, "num_train": 6, "num_val": 3, "batch": 2}
SMOKE_OPTS = [
    "INPUT.MIN_SIZE_TRAIN", "(64,)", "INPUT.MAX_SIZE_TRAIN", "96",
    "INPUT.MIN_SIZE_TEST", "64", "INPUT.MAX_SIZE_TEST", "96",
    "MODEL.FPN.OUT_CHANNELS", "16", PR + "SHAPE_SIZE", "8",
]  # fmt: skip


def arm_opts(
    arm: str, seed: int, iterations: int, batch: int, output_dir: str, extra: Sequence[str] = ()
) -> List[str]:
    """Config overrides of one run: the arm's mask keys, the crowd data sets, the schedule (steps
    at 80% and 93% of ``iterations``, as in the base config) and the seed."""
    if arm not in ARMS:
        raise ValueError(f"arm must be one of {sorted(ARMS)}, got {arm!r}")
    # Distinct and below MAX_ITER, which the LR scheduler requires.
    steps = sorted({min(max(1, int(iterations * f)), iterations - 1) for f in (0.8, 0.93)} - {0})
    steps = "(" + "".join(f"{s}," for s in steps) + ")"
    return [
        *ARMS[arm],
        "DATASETS.TRAIN", "('synthetic_crowd_train',)",
        "DATASETS.TEST", "('synthetic_crowd_val', 'synthetic_sparse_val')",
        "SOLVER.MAX_ITER", str(iterations),
        "SOLVER.STEPS", steps,
        "SOLVER.WARMUP_ITERS", str(min(100, iterations // 10)),
        "SOLVER.IMS_PER_BATCH", str(batch),
        "SOLVER.CHECKPOINT_PERIOD", str(iterations + 1),
        "TEST.EVAL_PERIOD", "0",
        "SEED", str(seed),
        "OUTPUT_DIR", output_dir,
        *extra,
    ]  # fmt: skip


def _segm(results: dict, dataset: str) -> Dict[str, float]:
    """Mask AP and AP75 (fractions) of one data set from ``Trainer.test``'s results; 0 when the
    model detected nothing (the evaluator then reports no "segm" entry)."""
    entry = results.get(dataset, results) if isinstance(results, dict) else {}
    segm = entry.get("segm", {}) if isinstance(entry, dict) else {}
    return {key: float(segm.get(key, 0.0)) / 100.0 for key in ("AP", "AP75")}


def _train_and_evaluate(job: dict) -> dict:
    """One run (in its own process): train an arm with a seed, evaluate it on both val splits."""
    import torch

    torch.set_num_threads(1)
    from centermask.data import register_scene_kind
    from centermask.engine import Trainer
    from centermask.engine.defaults import build_config

    from .gt_box_masks import evaluate_gt_box_masks

    for kind in SPLITS:
        register_scene_kind(kind, job["roots"][kind])
    cfg = build_config(argparse.Namespace(config_file=job["config_file"], opts=job["opts"]))
    started = time.perf_counter()
    trainer = Trainer(cfg)
    trainer.resume_or_load(resume=False)
    trainer.train()  # ends with the COCO evaluation of DATASETS.TEST
    train_seconds = time.perf_counter() - started
    results = getattr(trainer, "_last_eval_results", None) or Trainer.test(cfg, trainer.model)
    model = trainer.model
    record = {"arm": job["arm"], "seed": job["seed"], "seconds": round(train_seconds, 1)}
    for kind in SPLITS:
        keep = [job["picture_index"]] if kind == "crowd" else []
        gt_box = evaluate_gt_box_masks(cfg, model, f"synthetic_{kind}_val", keep)
        masks = gt_box.pop("masks")
        if masks:
            np.save(Path(cfg.OUTPUT_DIR) / "picture_masks.npy", masks[job["picture_index"]])
        record[kind] = {**gt_box, **_segm(results, f"synthetic_{kind}_val")}
    record["seconds_total"] = round(time.perf_counter() - started, 1)
    record["opts"], record["picture_index"] = job["opts"], job["picture_index"]
    (Path(cfg.OUTPUT_DIR) / "record.json").write_text(json.dumps(record, indent=2))
    return record


def _finished(job: dict) -> Optional[dict]:
    """The record of an earlier run of exactly this job (same config file and overrides), so that
    an interrupted ablation reruns only what is missing; None when there is none."""
    out = Path(dict(zip(job["opts"][::2], job["opts"][1::2]))["OUTPUT_DIR"])
    try:
        record = json.loads((out / "record.json").read_text())
    except (OSError, ValueError):
        return None
    same = record.get("opts") == job["opts"]
    if (
        not same
        or record.get("picture_index") != job["picture_index"]
        or not (out / "picture_masks.npy").is_file()
    ):
        return None
    return record


def _stat(values: List[Optional[float]]) -> Dict[str, Optional[float]]:
    values = [v for v in values if v is not None and math.isfinite(v)]
    if not values:
        return {"mean": None, "spread": None}
    return {"mean": float(np.mean(values)), "spread": float(max(values) - min(values))}


def summarize(records: List[dict]) -> Dict[str, Dict[str, dict]]:
    """{arm: {"split/metric": {"mean", "spread"}}} over the seeds of each arm."""
    table = {}
    for arm in ARMS:
        runs = [r for r in records if r["arm"] == arm]
        if runs:
            table[arm] = {
                f"{split}/{metric}": _stat([r[split].get(metric) for r in runs])
                for split, metric in METRICS
            }
    return table


def markdown_table(table: Dict[str, Dict[str, dict]], seeds: Sequence[int]) -> str:
    """The table as markdown: mean over the seeds, (spread) when there are several."""
    header = ["arm"] + [f"{split} {metric}" for split, metric in METRICS]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for arm, row in table.items():
        cells = [arm]
        for split, metric in METRICS:
            stat = row[f"{split}/{metric}"]
            if stat["mean"] is None:
                cells.append("-")
            elif len(seeds) > 1:
                cells.append(f"{stat['mean']:.3f} ({stat['spread']:.3f})")
            else:
                cells.append(f"{stat['mean']:.3f}")
        lines.append("| " + " | ".join(cells) + " |")
    note = (
        f"Seeds {list(seeds)}; mean (spread = max - min over the seeds). IoU and leakage: masks "
        "from the ground-truth boxes and classes; AP, AP75: COCO mask AP of the full model."
    )
    return "\n".join(lines + ["", note, ""])


def _overlay(image: np.ndarray, masks: np.ndarray, title: str) -> np.ndarray:
    """``image`` (BGR) with each mask tinted in its own colour and outlined, and a title bar."""
    out = image.astype(np.float32)
    rng = np.random.default_rng(0)
    for mask in masks:
        colour = rng.integers(60, 256, size=3).astype(np.float32)
        out[mask] = 0.45 * out[mask] + 0.55 * colour
    out = out.astype(np.uint8)
    for mask in masks:
        contours, _ = cv2.findContours(mask.astype(np.uint8), cv2.RETR_LIST, cv2.CHAIN_APPROX_NONE)
        cv2.drawContours(out, contours, -1, (255, 255, 255), 1)
    scale = max(1, 256 // max(out.shape[:2]))
    out = cv2.resize(out, None, fx=scale, fy=scale, interpolation=cv2.INTER_NEAREST)
    bar = np.full((22, out.shape[1], 3), 255, dtype=np.uint8)
    cv2.putText(bar, title, (4, 16), cv2.FONT_HERSHEY_SIMPLEX, 0.45, (0, 0, 0), 1, cv2.LINE_AA)
    return np.concatenate([bar, out])


def draw_picture(image: np.ndarray, panels: Dict[str, np.ndarray], path: Path) -> None:
    """The ground truth then each arm's masks (from the GT boxes) side by side, as a PNG."""
    tiles = [_overlay(image, masks, title) for title, masks in panels.items()]
    gap = np.full((tiles[0].shape[0], 6, 3), 255, dtype=np.uint8)
    row = [t for tile in tiles for t in (tile, gap)][:-1]
    cv2.imwrite(str(path), np.concatenate(row, axis=1))


def _picture_index(dataset: str) -> int:
    """The val image with the most crowded instances (the first of those)."""
    from detectron2.data import DatasetCatalog

    from .gt_box_masks import crowded_instances, gt_instances_of

    counts = []
    for record in DatasetCatalog.get(dataset):
        gt = gt_instances_of(record)
        counts.append(int(crowded_instances(gt["boxes"], gt["classes"]).sum()))
    return int(np.argmax(counts))


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        description="Train the five CenterMask-PR mask arms on crowded synthetic scenes and "
        "compare them on crowded and sparse validation scenes."
    )
    parser.add_argument("--output", default="output/centermask_pr_ablation")
    parser.add_argument("--config-file", default=BASE_CONFIG)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1])
    parser.add_argument("--jobs", type=int, default=2, help="runs at once, one thread each")
    parser.add_argument("--iterations", type=int, help=f"default {FULL['iterations']}")
    parser.add_argument("--arms", nargs="+", choices=list(ARMS), default=list(ARMS))
    parser.add_argument(
        "--data-root",
        help="folder of synthetic_crowd/ and synthetic_sparse/ (default: $DETECTRON2_DATASETS, "
        "or <output>/data with --smoke); generated there when missing",
    )
    parser.add_argument(
        "--smoke",
        action="store_true",
        help=f"{SMOKE['iterations']} iterations on {SMOKE['num_train']} small images, first seed "
        "only: checks the pipeline, measures nothing",
    )
    parser.add_argument(
        "opts",
        nargs=argparse.REMAINDER,
        help="config overrides for every run, KEY VALUE pairs after the options (or after --)",
    )
    return parser


# A config key such as MODEL.CENTERMASK_PR.SHAPE_SIZE: where the trailing overrides begin.
_CONFIG_KEY = re.compile(r"^[A-Z][A-Z0-9_]*(\.[A-Z][A-Z0-9_]*)+$")


def parse_args(argv: Optional[Sequence[str]] = None) -> argparse.Namespace:
    """The options and the trailing ``KEY VALUE`` overrides. The overrides start at ``--`` or at
    the first word shaped like a config key, so that they can follow a list option
    (``--arms local both_agn MODEL.CENTERMASK_PR.SHAPE_SIZE 8``), which argparse alone would read
    as more arms."""
    parser = build_parser()
    argv = list(sys.argv[1:] if argv is None else argv)
    if "--" in argv:
        cut = argv.index("--")
        head, opts = argv[:cut], argv[cut + 1 :]
    else:
        cut = next((i for i, word in enumerate(argv) if _CONFIG_KEY.match(word)), len(argv))
        head, opts = argv[:cut], argv[cut:]
    args = parser.parse_args(head)
    opts = list(args.opts) + opts
    if len(opts) % 2:
        parser.error(f"config overrides come in KEY VALUE pairs, got {opts}")
    misplaced = [word for word in opts[::2] if word.startswith("-")]
    if misplaced:
        parser.error(f"options go before the config overrides: {misplaced} follow {opts[0]}")
    args.opts = opts
    return args


def run(args: argparse.Namespace) -> dict:
    """Generate the data if needed, train and evaluate every (arm, seed), write the outputs."""
    from centermask.data import default_synthetic_root, ensure_synthetic, register_scene_kind
    from centermask.data.synthetic import CROWD_SCENE, SPARSE_SCENE

    sizes = dict(SMOKE if args.smoke else FULL)
    if args.iterations:
        sizes["iterations"] = args.iterations
    seeds = args.seeds[:1] if args.smoke else args.seeds
    out = Path(args.output).resolve()
    out.mkdir(parents=True, exist_ok=True)
    roots = {}
    for kind, scene in (("crowd", CROWD_SCENE), ("sparse", SPARSE_SCENE)):
        if args.data_root or args.smoke:
            base = Path(args.data_root) if args.data_root else out / "data"
            root = base / f"synthetic_{kind}"
        else:
            root = default_synthetic_root(kind)
        roots[kind] = str(root.resolve())
        ensure_synthetic(root, sizes["num_train"], sizes["num_val"], 0, scene, progress=False)
        register_scene_kind(kind, root)
    picture_index = _picture_index("synthetic_crowd_val")
    extra = (SMOKE_OPTS if args.smoke else []) + list(args.opts or [])
    jobs = [
        {
            "arm": arm,
            "seed": seed,
            "config_file": args.config_file,
            "opts": arm_opts(
                arm,
                seed,
                sizes["iterations"],
                sizes["batch"],
                str(out / arm / f"seed{seed}"),
                extra,
            ),
            "roots": roots,
            "picture_index": picture_index,
        }
        for seed in seeds
        for arm in args.arms
    ]
    # Read by the OpenMP runtime of each spawned run when it starts.
    os.environ["OMP_NUM_THREADS"] = os.environ["MKL_NUM_THREADS"] = "1"
    records = [r for r in map(_finished, jobs) if r is not None]
    for record in records:
        print(f"{record['arm']} seed {record['seed']}: done earlier, reused", flush=True)
    todo = [j for j in jobs if _finished(j) is None]
    context = multiprocessing.get_context("spawn")
    with concurrent.futures.ProcessPoolExecutor(args.jobs, mp_context=context) as pool:
        for record in pool.map(_train_and_evaluate, todo):
            print(
                f"{record['arm']} seed {record['seed']}: {record['seconds_total']:.0f} s",
                flush=True,
            )
            records.append(record)
    table = summarize(records)
    summary = {"sizes": sizes, "seeds": seeds, "picture_index": picture_index, "runs": records}
    summary["table"] = table
    (out / "ablation.json").write_text(json.dumps(summary, indent=2))
    (out / "ablation.md").write_text(markdown_table(table, seeds))
    _write_picture(out, roots, picture_index, args.arms, seeds[0])
    return summary


def _write_picture(out: Path, roots, index: int, arms: Sequence[str], seed: int) -> None:
    from detectron2.data import DatasetCatalog

    from .gt_box_masks import gt_instances_of

    record = DatasetCatalog.get("synthetic_crowd_val")[index]
    image = cv2.imread(record["file_name"])
    panels = {"ground truth": gt_instances_of(record)["masks"]}
    for arm in arms:
        panels[arm] = np.load(out / arm / f"seed{seed}" / "picture_masks.npy")
    draw_picture(image, panels, out / "ablation.png")


def main(argv: Optional[List[str]] = None) -> int:
    args = parse_args(argv)
    summary = run(args)
    print(markdown_table(summary["table"], summary["seeds"]))
    print(f"written to {Path(args.output).resolve()}")
    return 0
