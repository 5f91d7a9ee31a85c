"""Config and argument handling shared by ``tools/train_net.py`` and ``tools/quickstart.py``."""

import argparse
import logging
from typing import List, Optional

import torch
from detectron2.config import CfgNode
from detectron2.engine import default_argument_parser, default_setup
from detectron2.utils import comm
from detectron2.utils.logger import setup_logger

from centermask.config import THING_CLASS_KEYS, get_cfg
from centermask.config.class_counts import (
    apply_class_counts,
    describe_class_counts,
    explicit_config_keys,
)
from centermask.data.command_line import (
    register_dataset_specs,
)
from centermask.engine.devices import fit_config_to_devices
from centermask.engine.output_lock import lock_output_dir
from centermask.engine.validation import validate_config
from centermask.model_zoo import resolve_config_file

__all__ = ["add_dataset_argument", "argument_parser", "build_config", "setup"]

logger = logging.getLogger(__name__)

_EPILOG = """
Examples:

Train on the built-in synthetic set (CPU, 2 processes):
  python tools/train_net.py \\
      --config-file configs/quickstart/centermask_lite_V_19_slim_dw_eSE_synthetic.yaml \\
      --num-gpus 2 MODEL.DEVICE cpu

Train and evaluate on your COCO-format data (class counts are taken from the annotations):
  python tools/train_net.py --config-file configs/centermask/centermask_lite_V_39_eSE_FPN_ms_4x.yaml \\
      --dataset mine_train=train.json:train_images --dataset mine_val=val.json:val_images \\
      DATASETS.TRAIN '("mine_train",)' DATASETS.TEST '("mine_val",)'

Evaluate a checkpoint:
  python tools/train_net.py --config-file cfg.yaml --eval-only MODEL.WEIGHTS model_final.pth

On CPU, --num-gpus is the number of worker processes per machine (gloo backend).
"""


def argument_parser(epilog: Optional[str] = None) -> argparse.ArgumentParser:
    """detectron2's ``default_argument_parser`` (--config-file, --resume, --eval-only,
    --num-gpus, --num-machines, --machine-rank, --dist-url, trailing KEY VALUE overrides)."""
    parser = default_argument_parser(epilog=epilog or _EPILOG)
    add_dataset_argument(parser)
    return parser


def add_dataset_argument(parser: argparse.ArgumentParser) -> None:
    """``--dataset NAME=ANNOTATIONS.json:IMAGE_DIR`` (repeatable), read by :func:`build_config`."""
    parser.add_argument(
        "--dataset",
        action="append",
        default=[],
        metavar="NAME=ANNOTATIONS.json:IMAGE_DIR",
        help="register a COCO-format data set under NAME, for DATASETS.TRAIN/TEST (repeatable); "
        "class counts the run does not set are taken from the training set's categories",
    )


def build_config(args: argparse.Namespace) -> CfgNode:
    """CenterMask config from ``--config-file`` and the trailing overrides, frozen.

    ``--config-file`` may name a published model (``centermask://<name>``: its config and, unless
    the overrides set ``MODEL.WEIGHTS``, its weights; see
    :func:`centermask.model_zoo.resolve_config_file`).
    The data sets of ``--dataset`` (if any) are registered first, and the class counts the run
    does not set itself come from its data sets: ``DATASETS.TEST`` with ``--eval-only``,
    ``DATASETS.TRAIN`` otherwise (see :func:`centermask.config.class_counts.apply_class_counts`).
    Every process of a multi-process launch calls this, so every worker knows the data sets.
    Values that cannot work are refused first, naming each key and value
    (:func:`centermask.engine.validation.validate_config`).

    A CUDA device requested on a machine without CUDA falls back to CPU, with a warning (every
    shipped YAML inherits detectron2's default ``MODEL.DEVICE: cuda``); then
    :func:`centermask.engine.devices.fit_config_to_devices` (a CPU config on a CUDA machine is
    reported; multi-GPU training turns "BN" into "SyncBN").
    """
    config_file, opts = resolve_config_file(args.config_file, args.opts or [])
    cfg = _merged_config(config_file, opts)
    # Before any data set is read (class counts below) or weights are downloaded (later).
    world_size = getattr(args, "num_gpus", 1) * getattr(args, "num_machines", 1)
    validate_config(
        cfg,
        training=not getattr(args, "eval_only", False),
        world_size=max(world_size, comm.get_world_size()),
    )
    register_dataset_specs(getattr(args, "dataset", None) or [])
    datasets = cfg.DATASETS.TEST if getattr(args, "eval_only", False) else cfg.DATASETS.TRAIN
    explicit = explicit_config_keys(config_file, opts)
    apply_class_counts(cfg, THING_CLASS_KEYS, explicit, datasets)
    if cfg.MODEL.DEVICE.startswith("cuda") and not torch.cuda.is_available():
        logger.warning("CUDA is not available: running on CPU (MODEL.DEVICE cpu)")
        cfg.MODEL.DEVICE = "cpu"
    fit_config_to_devices(
        cfg, getattr(args, "num_gpus", 1) or 1, getattr(args, "num_machines", 1) or 1
    )
    cfg.freeze()
    return cfg


def _merged_config(config_file: Optional[str], opts: List[str]) -> CfgNode:
    cfg = get_cfg()
    if config_file:
        cfg.merge_from_file(config_file)
    cfg.merge_from_list(opts)
    return cfg


def setup(args: argparse.Namespace, cfg: Optional[CfgNode] = None) -> CfgNode:
    """The run's config plus detectron2's ``default_setup`` (output folder, logging, config dump,
    seeding); centermask's own log lines go to the console and ``<OUTPUT_DIR>/log.txt`` too.

    ``cfg``: the config :func:`build_config` already made from ``args`` (e.g. by the launching
    process, to choose the backend), so that it is built once; the ``--dataset`` data sets are
    then registered in this process if they are not yet (a worker process starts without them).

    For training (not ``--eval-only``) the main process first takes the lock of ``OUTPUT_DIR``
    (:mod:`.output_lock`): a second run into the folder of a live one fails here, before it
    writes anything there.
    """
    if cfg is None:
        cfg = build_config(args)
    if not getattr(args, "eval_only", False) and comm.is_main_process() and cfg.OUTPUT_DIR:
        lock_output_dir(cfg.OUTPUT_DIR)
    setup_logger(cfg.OUTPUT_DIR, distributed_rank=comm.get_rank(), name="centermask")
    register_dataset_specs(getattr(args, "dataset", None) or [])
    datasets = cfg.DATASETS.TEST if getattr(args, "eval_only", False) else cfg.DATASETS.TRAIN
    counts = describe_class_counts(cfg, THING_CLASS_KEYS, datasets)
    if counts:
        logger.info(counts)
    # default_setup logs the config file's text: the file, not a model-zoo name.
    config_file = resolve_config_file(args.config_file)[0] if args.config_file else ""
    default_setup(cfg, argparse.Namespace(**{**vars(args), "config_file": config_file}))
    return cfg
