"""Config fix-ups for the machine a run starts on: a CPU config on a CUDA machine is reported,
and trainable BatchNorm becomes SyncBN for multi-GPU training (as detectron2's multi-GPU
configs have it), so that every GPU normalises with the statistics of the whole batch."""

import logging
from typing import List

import torch
from detectron2.config import CfgNode

__all__ = ["batchnorm_keys", "fit_config_to_devices"]

logger = logging.getLogger(__name__)


def batchnorm_keys(cfg: CfgNode, prefix: str = "") -> List[str]:
    """Full names of the config keys named ``NORM`` set to "BN" (trainable, per-process
    BatchNorm), e.g. ``MODEL.VOVNET.NORM``."""
    keys = []
    for name, value in cfg.items():
        if isinstance(value, CfgNode):
            keys += batchnorm_keys(value, f"{prefix}{name}.")
        elif name == "NORM" and value == "BN":
            keys.append(f"{prefix}{name}")
    return keys


def fit_config_to_devices(cfg: CfgNode, num_gpus: int, num_machines: int = 1) -> None:
    """Adjust an unfrozen ``cfg`` to the devices, in place, logging what was done.

    * CUDA available and ``MODEL.DEVICE`` "cpu": a warning (``--num-gpus N`` then starts N CPU
      processes, not one per GPU);
    * ``MODEL.DEVICE`` CUDA and more than one process in all: every ``*.NORM`` "BN" becomes
      "SyncBN" (the checkpoints of the two are interchangeable).
    """
    device = str(cfg.MODEL.DEVICE)
    if device == "cpu" and torch.cuda.is_available():
        gpus = torch.cuda.device_count()
        processes = (
            f"; --num-gpus {num_gpus} starts {num_gpus} CPU processes (gloo), none on a GPU"
            if num_gpus > 1
            else ""
        )
        logger.warning(
            f"CUDA is available ({gpus} GPU(s)) but MODEL.DEVICE is 'cpu': the run uses the CPU"
            f"{processes}. Add MODEL.DEVICE cuda to the command line to use the GPUs."
        )
    if device.startswith("cuda") and num_gpus * num_machines > 1:
        keys = batchnorm_keys(cfg)
        for key in keys:
            node = cfg
            *parents, name = key.split(".")
            for parent in parents:
                node = node[parent]
            node[name] = "SyncBN"
        if keys:
            logger.info(
                f"{num_gpus * num_machines} GPU processes: {', '.join(keys)} 'BN' -> 'SyncBN' "
                "(BatchNorm statistics over the whole batch, not each GPU's share)"
            )
