"""Config values that cannot work, refused before any data loads or weights download.

:func:`validate_config` checks a merged config and raises one :class:`ConfigValueError` that lists
every problem as ``KEY=value: why``. The checks that need the model or the data (channel counts
a norm must divide, the class counts a data set gives, whether the FCOS and ROI-heads class counts
agree once the data sets have filled them in, the strides a backbone really outputs) stay where
those are known; the rules shared with them are the same functions (``check_norm``,
``check_mask_stride``, the registries and name tables of the model code and the optimizer and
augmentation names).

``SOLVER.TIME_BUDGET_MINUTES`` is checked here for its sign only: whether a budget leaves time to
train after the final evaluation depends on the measured training speed and the size of the test
sets, so :class:`~centermask.engine.time_budget.TimeBudget` refuses a budget that is shorter than
one evaluation once the first iterations have been timed.
"""

import re
from typing import Any, Callable, List, Optional

from detectron2.config import CfgNode
from detectron2.modeling import (
    BACKBONE_REGISTRY,
    META_ARCH_REGISTRY,
    PROPOSAL_GENERATOR_REGISTRY,
    ROI_HEADS_REGISTRY,
)

from centermask.config.class_counts import lookup_key
from centermask.data.augmentation import AUGMENTATIONS
from centermask.layers.norm import check_norm
from centermask.modeling.backbone.vovnet import VOVNET_SPECS
from centermask.modeling.centermask_pr.mask_head import check_mask_stride
from centermask.modeling.centermask_pr.meta_arch import DETECTORS
from centermask.modeling.fcos.head import FCOS_NORMS

from .optimizer import OPTIMIZERS

__all__ = ["ConfigValueError", "validate_config"]


class ConfigValueError(ValueError):
    """One or more config values that cannot work; the message names each key and value."""

    def __init__(self, problems: List[str]):
        super().__init__(
            "Invalid config value(s):\n  " + "\n  ".join(problems) + "\n(set them in the YAML "
            "file or on the command line as KEY VALUE)"
        )
        self.problems = problems


class _Problems:
    def __init__(self, cfg: CfgNode):
        self.cfg = cfg
        self.found: List[str] = []

    def require(self, key: str, ok: Callable[[Any], bool], why: str) -> None:
        value = lookup_key(self.cfg, key)
        if value is None:  # a key this config does not have
            return
        try:
            good = ok(value)
        except TypeError:  # e.g. a string where a number belongs
            good = False
        if not good:
            self.found.append(f"{key}={value!r}: {why}")

    def call(self, check: Callable[[], Any]) -> None:
        """Run a check of the model code; its ValueError message names the key."""
        try:
            check()
        except ValueError as e:
            self.found.append(str(e))


def _positive(value: Any) -> bool:
    return value > 0


def _registered(registry) -> Callable[[str], bool]:
    return lambda name: name in registry


# The stride a feature name implies: FPN levels "p<k>" (2**k), the upsampling neck's "up<s>".
_FEATURE_STRIDE = (re.compile(r"p(\d)$"), re.compile(r"up(\d+)$"))


def _feature_stride(name: str) -> Optional[int]:
    level, neck = (pattern.match(name) for pattern in _FEATURE_STRIDE)
    if level:
        return 2 ** int(level.group(1))
    return int(neck.group(1)) if neck else None


def _check_names(problems: _Problems, cfg: CfgNode) -> None:
    known = lambda registry: f"not registered; known: {', '.join(sorted(k for k, _ in registry))}"
    problems.require(
        "MODEL.META_ARCHITECTURE", _registered(META_ARCH_REGISTRY), known(META_ARCH_REGISTRY)
    )
    problems.require(
        "MODEL.BACKBONE.NAME", _registered(BACKBONE_REGISTRY), known(BACKBONE_REGISTRY)
    )
    meta = cfg.MODEL.META_ARCHITECTURE
    if meta in ("GeneralizedRCNN", "ProposalNetwork", "CondInst", "PanopticFPN"):
        problems.require(
            "MODEL.PROPOSAL_GENERATOR.NAME",
            _registered(PROPOSAL_GENERATOR_REGISTRY),
            known(PROPOSAL_GENERATOR_REGISTRY),
        )
    if meta in ("GeneralizedRCNN", "PanopticFPN"):
        problems.require(
            "MODEL.ROI_HEADS.NAME", _registered(ROI_HEADS_REGISTRY), known(ROI_HEADS_REGISTRY)
        )
    if "vovnet" in cfg.MODEL.BACKBONE.NAME or "vovnet" in cfg.MODEL.UPSAMPLING_NECK.BOTTOM_UP:
        problems.require(
            "MODEL.VOVNET.CONV_BODY",
            lambda body: body in VOVNET_SPECS,
            f"unknown; choose one of {', '.join(VOVNET_SPECS)}",
        )
    if meta == "CenterMaskPR":
        problems.require(
            "MODEL.CENTERMASK_PR.DETECTOR",
            lambda name: name in DETECTORS,
            f"unknown; choose one of {', '.join(sorted(DETECTORS))}",
        )
        problems.require(
            "MODEL.UPSAMPLING_NECK.BOTTOM_UP", _registered(BACKBONE_REGISTRY), "not registered"
        )


def _check_norms(problems: _Problems, cfg: CfgNode) -> None:
    # Names only: whether GroupNorm's 32 groups divide the channels is checked when the model
    # is built, where the channel counts are known.
    for key in (
        "MODEL.VOVNET.NORM",
        "MODEL.RESNETS.NORM",
        "MODEL.FPN.NORM",
        "MODEL.ROI_MASK_HEAD.NORM",
        "MODEL.ROI_BOX_HEAD.NORM",
        "MODEL.UPSAMPLING_NECK.NORM",
        "MODEL.CONDINST.MASK_BRANCH.NORM",
    ):
        norm = lookup_key(cfg, key)
        if norm is not None:
            problems.call(lambda key=key, norm=norm: check_norm(norm, (), setting=key))
    problems.require("MODEL.FCOS.NORM", lambda norm: norm in FCOS_NORMS, "must be 'GN' or 'none'")


def _check_mask_stride(problems: _Problems, cfg: CfgNode) -> None:
    if cfg.MODEL.META_ARCHITECTURE != "CenterMaskPR":
        return
    stride = _feature_stride(cfg.MODEL.CENTERMASK_PR.SALIENCY_IN_FEATURE)
    if stride is not None:  # other feature names: checked when the model is built
        problems.call(lambda: check_mask_stride(cfg.MODEL.CENTERMASK_PR.MASK_STRIDE, stride))


def _check_training(problems: _Problems, cfg: CfgNode, world_size: int) -> None:
    problems.require("SOLVER.BASE_LR", _positive, "the learning rate must be > 0")
    problems.require("SOLVER.IMS_PER_BATCH", _positive, "the batch size must be > 0")
    problems.require(
        "SOLVER.IMS_PER_BATCH",
        lambda batch: batch <= 0 or batch % world_size == 0,
        f"must be divisible by the number of processes ({world_size}): each takes an equal share",
    )
    problems.require("SOLVER.MAX_ITER", _positive, "must be > 0")
    problems.require("SOLVER.TIME_BUDGET_MINUTES", lambda m: m >= 0, "must be >= 0 (0: off)")
    problems.require("SOLVER.TIME_BUDGET_EVAL_COST", _positive, "must be > 0")
    problems.require(
        "INPUT.MIN_SIZE_TRAIN",
        lambda sizes: len(sizes) > 0 and all(s > 0 for s in sizes),
        "needs at least one positive size",
    )
    problems.require("INPUT.MAX_SIZE_TRAIN", _positive, "must be > 0")
    problems.require(
        "SOLVER.OPTIMIZER",
        lambda name: name.upper() in OPTIMIZERS,
        f"unknown; choose one of {', '.join(OPTIMIZERS)}",
    )
    problems.require(
        "INPUT.AUGMENTATION",
        lambda name: name in AUGMENTATIONS,
        f"unknown; choose one of {', '.join(AUGMENTATIONS)}",
    )


def validate_config(cfg: CfgNode, *, training: bool = True, world_size: int = 1) -> None:
    """Raise :class:`ConfigValueError` naming every key whose value cannot work.

    Args:
        cfg: a merged CenterMask config.
        training: also check the solver and training-input keys (not needed for inference).
        world_size: the number of processes, which ``SOLVER.IMS_PER_BATCH`` must be divisible by.
    """
    problems = _Problems(cfg)
    for key in ("MODEL.FCOS.NUM_CLASSES", "MODEL.ROI_HEADS.NUM_CLASSES"):
        problems.require(key, _positive, "the number of thing classes must be > 0")
    problems.require("INPUT.MIN_SIZE_TEST", lambda s: s >= 0, "must be >= 0 (0: no resizing)")
    problems.require("INPUT.MAX_SIZE_TEST", _positive, "must be > 0")
    problems.require("INPUT.MAX_IMAGE_PIXELS", lambda p: p >= 0, "must be >= 0 (0: no limit)")
    if cfg.TEST.AUG.ENABLED:
        problems.require(
            "TEST.AUG.MIN_SIZES", lambda sizes: len(sizes) > 0, "needs at least one size"
        )
    _check_names(problems, cfg)
    _check_norms(problems, cfg)
    _check_mask_stride(problems, cfg)
    if training:
        _check_training(problems, cfg, world_size)
    if problems.found:
        raise ConfigValueError(problems.found)
