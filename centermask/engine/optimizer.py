"""The optimizer of ``SOLVER.OPTIMIZER``: detectron2's SGD, or Adam (CenterNet's optimizer)."""

import torch
from detectron2.solver import build_optimizer as build_sgd_optimizer
from detectron2.solver.build import get_default_optimizer_params, maybe_add_gradient_clipping

__all__ = ["OPTIMIZERS", "build_optimizer"]

OPTIMIZERS = ("SGD", "ADAM")


def build_optimizer(cfg, model: torch.nn.Module) -> torch.optim.Optimizer:
    """``SOLVER.OPTIMIZER`` "SGD": detectron2's ``build_optimizer`` (momentum, Nesterov);
    "ADAM": ``torch.optim.Adam`` (default betas) with the same parameter groups (per-parameter
    LR and weight decay from ``SOLVER.BIAS_LR_FACTOR``, ``WEIGHT_DECAY_NORM``,
    ``WEIGHT_DECAY_BIAS``), L2 weight decay ``SOLVER.WEIGHT_DECAY`` and gradient clipping as
    configured. Both follow the LR schedule of ``SOLVER.BASE_LR`` / ``STEPS`` / ``WARMUP_*``."""
    name = cfg.SOLVER.OPTIMIZER.upper()
    if name == "SGD":
        return build_sgd_optimizer(cfg, model)
    if name != "ADAM":
        raise ValueError(
            f"SOLVER.OPTIMIZER must be one of {OPTIMIZERS}, got {cfg.SOLVER.OPTIMIZER!r}"
        )
    params = get_default_optimizer_params(
        model,
        base_lr=cfg.SOLVER.BASE_LR,
        weight_decay_norm=cfg.SOLVER.WEIGHT_DECAY_NORM,
        bias_lr_factor=cfg.SOLVER.BIAS_LR_FACTOR,
        weight_decay_bias=cfg.SOLVER.WEIGHT_DECAY_BIAS,
    )
    return maybe_add_gradient_clipping(cfg, torch.optim.Adam)(
        params, lr=cfg.SOLVER.BASE_LR, weight_decay=cfg.SOLVER.WEIGHT_DECAY
    )
