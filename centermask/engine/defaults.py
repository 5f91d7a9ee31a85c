"""Config and argument handling shared by ``tools/train_net.py`` and ``tools/quickstart.py``."""

import argparse
import logging
from typing import Optional

import torch
from detectron2.config import CfgNode
from detectron2.engine import default_argument_parser, default_setup

from centermask.config import get_cfg

__all__ = ["argument_parser", "build_config", "setup"]

logger = logging.getLogger(__name__)

_EPILOG = """
Examples:

Train on the built-in synthetic set (CPU, 2 processes):
  python tools/train_net.py --config-file configs/quickstart/centermask_lite_V_19_slim_dw_BN.yaml \\
      --num-gpus 2 MODEL.DEVICE cpu

Evaluate a checkpoint:
  python tools/train_net.py --config-file cfg.yaml --eval-only MODEL.WEIGHTS model_final.pth

On CPU, --num-gpus is the number of worker processes per machine (gloo backend).
"""


def argument_parser(epilog: Optional[str] = None) -> argparse.ArgumentParser:
    """detectron2's ``default_argument_parser`` (--config-file, --resume, --eval-only,
    --num-gpus, --num-machines, --machine-rank, --dist-url, trailing KEY VALUE overrides)."""
    return default_argument_parser(epilog=epilog or _EPILOG)


def build_config(args: argparse.Namespace) -> CfgNode:
    """CenterMask config from ``--config-file`` and the trailing overrides, frozen.

    A CUDA device requested on a machine without CUDA falls back to CPU, with a warning (every
    shipped YAML inherits detectron2's default ``MODEL.DEVICE: cuda``).
    """
    cfg = get_cfg()
    if args.config_file:
        cfg.merge_from_file(args.config_file)
    cfg.merge_from_list(list(args.opts or []))
    if cfg.MODEL.DEVICE.startswith("cuda") and not torch.cuda.is_available():
        logger.warning("CUDA is not available: running on CPU (MODEL.DEVICE cpu)")
        cfg.MODEL.DEVICE = "cpu"
    cfg.freeze()
    return cfg


def setup(args: argparse.Namespace) -> CfgNode:
    """``build_config`` plus detectron2's ``default_setup`` (output folder, logging, config
    dump, seeding)."""
    cfg = build_config(args)
    default_setup(cfg, args)
    return cfg
