#!/usr/bin/env python
"""Train or evaluate CenterMask with detectron2's DefaultTrainer (see centermask.engine.Trainer).

    python tools/train_net.py --config-file CONFIG [--num-gpus N] [--resume] [--eval-only]
        [--dataset NAME=ANNOTATIONS.json:IMAGE_DIR ...] [KEY VAL...]

Multi-GPU / multi-machine runs use NCCL through detectron2's launch; without CUDA (or with
MODEL.DEVICE cpu) --num-gpus N starts N CPU worker processes with the gloo backend.
The built-in synthetic data sets (synthetic_train, synthetic_val, ...) are registered under
$DETECTRON2_DATASETS/synthetic (default datasets/synthetic) by importing centermask.data; your
own COCO-format data sets by --dataset (see centermask.engine.build_config).
"""

import centermask  # noqa: F401  (registers the model components)
import centermask.data  # noqa: F401  (registers the built-in synthetic data sets)
from centermask.engine import Trainer, argument_parser, build_config, choose_backend, launch, setup


def main(args, cfg=None):
    """One process's run, with the config the launching process built (handed to every worker,
    so that each process reads the config files and the ``--dataset`` annotations once)."""
    cfg = setup(args, cfg)
    if args.eval_only:
        return Trainer.evaluate(cfg, resume=args.resume)
    trainer = Trainer(cfg)
    trainer.resume_or_load(resume=args.resume)
    return trainer.train()


if __name__ == "__main__":
    args = argument_parser().parse_args()
    print("Command Line Args:", args)
    cfg = build_config(args)
    launch(
        main,
        args.num_gpus,
        num_machines=args.num_machines,
        machine_rank=args.machine_rank,
        dist_url=args.dist_url,
        args=(args, cfg),
        backend=choose_backend(cfg.MODEL.DEVICE),
    )
