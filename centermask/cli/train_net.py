"""``centermask train`` / ``centermask eval`` (and ``tools/train_net.py``): train or evaluate with
detectron2's DefaultTrainer (see centermask.engine.Trainer).

    centermask train --config-file CONFIG [--num-gpus N] [--resume] [--eval-only]
        [--dataset NAME=ANNOTATIONS.json:IMAGE_DIR ...] [KEY VAL...]
    centermask eval --config-file CONFIG [KEY VAL...]   (train with --eval-only)

Multi-GPU / multi-machine runs use NCCL through detectron2's launch; without CUDA (or with
MODEL.DEVICE cpu) --num-gpus N starts N CPU worker processes with the gloo backend.
The built-in synthetic data sets (synthetic_train, synthetic_val, ...) are registered under
$DETECTRON2_DATASETS/synthetic (default datasets/synthetic) by importing centermask.data; your
own COCO-format data sets by --dataset (see centermask.engine.build_config).

Training takes a lock on OUTPUT_DIR (a second run into it fails at once). SIGTERM or SIGINT
(Ctrl-C) stops training after the current iteration with a checkpoint, and the command exits with
status 75; the same command with --resume continues from it. A second signal exits at once.
"""

import argparse
import sys
from typing import List, Optional

import centermask.data  # noqa: F401  (registers the built-in synthetic data sets)
import centermask.modeling  # noqa: F401  (registers the model components)
from centermask.cli.common import add_debug_argument, parse_and_run
from centermask.engine import (
    PREEMPTED_EXIT_CODE,
    Trainer,
    TrainingPreempted,
    argument_parser,
    build_config,
    choose_backend,
    launch,
    setup,
)

TRAIN_EPILOG = """
Examples:

Train on the built-in synthetic set (CPU, 2 processes; the data set is written by
`centermask quickstart` or centermask.data.ensure_synthetic):
  centermask train \\
      --config-file configs/quickstart/centermask_lite_V_19_slim_dw_eSE_synthetic.yaml \\
      --num-gpus 2 MODEL.DEVICE cpu

Fine-tune a published model (config and weights by name) on your COCO-format data; class counts
are taken from the annotations:
  centermask train --config-file centermask://centermask_lite_V_39_eSE_FPN_ms_4x \\
      --dataset mine_train=train.json:train_images --dataset mine_val=val.json:val_images \\
      DATASETS.TRAIN '("mine_train",)' DATASETS.TEST '("mine_val",)'

--config-file takes a path or a published model's name (centermask://NAME, centermask/NAME,
condinst/NAME: `centermask zoo list`), which also sets MODEL.WEIGHTS unless given.
On CPU, --num-gpus is the number of worker processes per machine (gloo backend).
"""

EVAL_EPILOG = """
Examples:

Evaluate a published model on COCO val2017 (datasets/coco, see detectron2's datasets/README.md):
  centermask eval --config-file centermask://centermask_lite_V_39_eSE_FPN_ms_4x

Evaluate your checkpoint on your COCO-format data:
  centermask eval --config-file configs/centermask/centermask_lite_V_39_eSE_FPN_ms_4x.yaml \\
      --dataset mine_val=val.json:val_images DATASETS.TEST '("mine_val",)' \\
      MODEL.WEIGHTS output/model_final.pth

--config-file takes a path or a published model's name (centermask://NAME, centermask/NAME,
condinst/NAME: `centermask zoo list`), which also sets MODEL.WEIGHTS unless given.
"""


def build_parser(prog: Optional[str] = None, eval_only: bool = False) -> argparse.ArgumentParser:
    """detectron2's training argument parser (centermask.engine.argument_parser) plus --debug;
    with ``eval_only``, the same options with --eval-only already set."""
    parser = argument_parser(epilog=EVAL_EPILOG if eval_only else TRAIN_EPILOG)
    if prog:
        parser.prog = prog
    parser.description = (
        "Evaluate a model (train_net --eval-only)." if eval_only else "Train or evaluate a model."
    )
    add_debug_argument(parser)
    if eval_only:
        parser.set_defaults(eval_only=True)
    return parser


def main_worker(args, cfg=None):
    """One process's run, with the config the launching process built (handed to every worker,
    so that each process reads the config files and the ``--dataset`` annotations once)."""
    cfg = setup(args, cfg)
    if args.eval_only:
        return Trainer.evaluate(cfg, resume=args.resume)
    trainer = Trainer(cfg)
    trainer.resume_or_load(resume=args.resume)
    return trainer.train()


def run(args: argparse.Namespace) -> None:
    """Build the config once and launch :func:`main_worker` in ``--num-gpus`` processes."""
    print("Command Line Args:", args)
    cfg = build_config(args)
    launch(
        main_worker,
        args.num_gpus,
        num_machines=args.num_machines,
        machine_rank=args.machine_rank,
        dist_url=args.dist_url,
        args=(args, cfg),
        backend=choose_backend(cfg.MODEL.DEVICE),
    )


def command(args: argparse.Namespace) -> int:
    try:
        run(args)
    except TrainingPreempted as e:  # SIGTERM / SIGINT: a checkpoint was written
        print(e, file=sys.stderr)
        return PREEMPTED_EXIT_CODE
    return 0


def main(argv: Optional[List[str]] = None, eval_only: bool = False) -> int:
    return parse_and_run(build_parser(eval_only=eval_only), command, argv)
