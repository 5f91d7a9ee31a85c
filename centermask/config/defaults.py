"""CenterMask configuration keys.

``add_centermask_config(cfg)`` adds every key of the original implementation (centermask2) with the
same defaults to the config it is given. Unlike the original, it never touches detectron2's global
defaults, so ``detectron2.config.get_cfg()`` stays untouched after ``import centermask``.
"""

import contextlib
import logging
import os
from typing import Iterator

from detectron2.config import CfgNode as CN
from detectron2.config import get_cfg as _d2_get_cfg

from .centermask_pr import add_centermask_pr_config
from .condinst import add_condinst_config
from .dla import add_dla_config

__all__ = [
    "CenterMaskCfgNode",
    "add_centermask_config",
    "get_cfg",
]


class _MissingVersionFilter(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        return "has no VERSION" not in record.getMessage()


@contextlib.contextmanager
def _missing_version_silenced() -> Iterator[None]:
    """Drop detectron2's "Config '...' has no VERSION. Assuming it to be v2." while a file is
    merged. The original centermask2 YAMLs (kept value for value) have no VERSION key, and the
    assumption detectron2 then makes, the latest version, is the right one for them."""
    compat_logger = logging.getLogger("detectron2.config.compat")
    quiet = _MissingVersionFilter()
    compat_logger.addFilter(quiet)
    try:
        yield
    finally:
        compat_logger.removeFilter(quiet)


class CenterMaskCfgNode(CN):
    """detectron2's ``CfgNode``, without the "has no VERSION" warning when merging a YAML file.

    Only the root has this type: its sub-nodes stay detectron2 ``CfgNode`` objects, because yacs
    refuses to merge nodes of different types (e.g. a sub-node a user adds with ``CfgNode()``).
    """

    @classmethod
    def _create_config_tree_from_dict(cls, dic: dict, key_list: list) -> dict:
        return CN._create_config_tree_from_dict(dic, key_list)

    @classmethod
    def _decode_cfg_value(cls, value):
        return CN._decode_cfg_value(value)

    def merge_from_file(self, cfg_filename: str, allow_unsafe: bool = True) -> None:
        if "://" not in cfg_filename and not os.path.isfile(cfg_filename):
            # detectron2 asserts this; a user's missing file is not a failed assertion
            raise FileNotFoundError(f"Config file {cfg_filename!r} does not exist")
        with _missing_version_silenced():
            super().merge_from_file(cfg_filename, allow_unsafe=allow_unsafe)

    def merge_from_list(self, cfg_list: list) -> None:
        """yacs' ``merge_from_list``; an unknown key raises a KeyError and a list of odd length a
        ValueError (yacs asserts both: they are a user's mistakes, not failed assertions)."""
        if len(cfg_list) % 2:
            raise ValueError(
                f"Config overrides must be KEY VALUE pairs; got an odd number: {list(cfg_list)}"
            )
        try:
            super().merge_from_list(cfg_list)
        except AssertionError as e:
            raise KeyError(str(e)) from e


def add_centermask_config(cfg: CN) -> CN:
    """Add the CenterMask keys (VoVNet, MobileNet, FCOS, MaskIoU, ...) to ``cfg`` in place.

    Calling it twice is harmless: keys that already exist keep their current values.
    Returns ``cfg`` for convenience.
    """
    _C = cfg
    if "FCOS" in _C.MODEL and "VOVNET" in _C.MODEL:
        return cfg  # already added

    # True when the backbone is MobileNetV2 (the original's flag; the FPN builder decides).
    _C.MODEL.MOBILENET = False
    # Not in the original: keep the model's 4-D weights (and so its activations) in NHWC memory
    # order. On CPU, oneDNN's convolutions, batch norm and pooling are faster in it (measured in
    # docs/BENCHMARKS.md); outputs are the same up to float rounding.
    _C.MODEL.CHANNELS_LAST = False
    # Not in the original: train for a wall-clock budget (minutes, training plus the final
    # evaluation; 0 = off). WARMUP_ITERS, STEPS and MAX_ITER then only give the shape of the LR
    # schedule (fractions of the training time) and training ends when the time is used
    # (centermask.engine.time_budget).
    _C.SOLVER.TIME_BUDGET_MINUTES = 0.0
    # Time reserved for the final evaluation: seconds per test image, as a multiple of the
    # measured training seconds per training image.
    _C.SOLVER.TIME_BUDGET_EVAL_COST = 2.0
    # Not in the original: "SGD" (detectron2's, with MOMENTUM and NESTEROV) or "ADAM" (CenterNet's
    # optimizer; default betas), both with BASE_LR's schedule and WEIGHT_DECAY as L2.
    _C.SOLVER.OPTIMIZER = "SGD"
    # Not in the original: training augmentation. "resize_shortest_edge": detectron2's
    # (MIN_SIZE_TRAIN, MAX_SIZE_TRAIN, RANDOM_FLIP, CROP); "scale_crop_color": CenterNet's
    # fixed-size input (random scale in SCALE_RANGE, FIXED_SIZE square crop, flip, colour).
    _C.INPUT.AUGMENTATION = "resize_shortest_edge"
    # Side of the square training input of "scale_crop_color" (pixels).
    _C.INPUT.FIXED_SIZE = 512
    # "scale_crop_color": the image fits FIXED_SIZE x a random factor from this range.
    _C.INPUT.SCALE_RANGE = (0.6, 1.4)
    # "scale_crop_color": brightness and contrast scaled by random factors in 1 -/+ this.
    _C.INPUT.COLOR_JITTER = 0.4
    # Not in the original: images with more pixels than this (by their header) are refused, file
    # named (0 = no limit); 8192 x 8192 is far above any training image, far below a bomb.
    _C.INPUT.MAX_IMAGE_PIXELS = 8192 * 8192

    # ---------------------------------------------------------------------------------------- #
    # FCOS proposal generator
    # ---------------------------------------------------------------------------------------- #
    _C.MODEL.FCOS = CN()
    # Foreground classes only (no background slot). Must equal MODEL.ROI_HEADS.NUM_CLASSES.
    _C.MODEL.FCOS.NUM_CLASSES = 80
    # FPN levels the FCOS head runs on, finest first.
    _C.MODEL.FCOS.IN_FEATURES = ["p3", "p4", "p5", "p6", "p7"]
    # Stride of each level of IN_FEATURES.
    _C.MODEL.FCOS.FPN_STRIDES = [8, 16, 32, 64, 128]
    # Initial foreground probability of the classification logits (focal-loss prior).
    _C.MODEL.FCOS.PRIOR_PROB = 0.01
    # Candidate score threshold when proposals are made in training.
    _C.MODEL.FCOS.INFERENCE_TH_TRAIN = 0.05
    # Candidate score threshold at inference.
    _C.MODEL.FCOS.INFERENCE_TH_TEST = 0.05
    # IoU threshold of the class-aware NMS.
    _C.MODEL.FCOS.NMS_TH = 0.6
    # Candidates kept per level before NMS, in training.
    _C.MODEL.FCOS.PRE_NMS_TOPK_TRAIN = 1000
    # Candidates kept per level before NMS, at inference.
    _C.MODEL.FCOS.PRE_NMS_TOPK_TEST = 1000
    # Detections kept per image after NMS, in training.
    _C.MODEL.FCOS.POST_NMS_TOPK_TRAIN = 100
    # Detections kept per image after NMS, at inference.
    _C.MODEL.FCOS.POST_NMS_TOPK_TEST = 100
    # 2: P6 and P7 on top of the FPN, 1: P6 only, 0: none.
    _C.MODEL.FCOS.TOP_LEVELS = 2
    _C.MODEL.FCOS.NORM = "GN"  # "GN" or "none"
    # A learnable scalar per level multiplies the box regression.
    _C.MODEL.FCOS.USE_SCALE = True
    # Threshold candidates on cls * ctrness instead of cls alone.
    _C.MODEL.FCOS.THRESH_WITH_CTR = False
    # Focal loss alpha of the classification loss.
    _C.MODEL.FCOS.LOSS_ALPHA = 0.25
    # Focal loss gamma of the classification loss.
    _C.MODEL.FCOS.LOSS_GAMMA = 2.0
    # Boundaries of the box sizes each level is responsible for (one fewer than levels).
    _C.MODEL.FCOS.SIZES_OF_INTEREST = [64, 128, 256, 512]
    _C.MODEL.FCOS.USE_RELU = True  # kept for YAML compatibility; ReLU is always applied
    # Deformable convs in the last conv of each tower.
    _C.MODEL.FCOS.USE_DEFORMABLE = False
    # Convs of the classification tower.
    _C.MODEL.FCOS.NUM_CLS_CONVS = 4
    # Convs of the box tower (which also predicts centerness).
    _C.MODEL.FCOS.NUM_BOX_CONVS = 4
    # Convs shared by both towers, before them.
    _C.MODEL.FCOS.NUM_SHARE_CONVS = 0
    # Positives only near the box centre (radius POS_RADIUS strides), not the whole box.
    _C.MODEL.FCOS.CENTER_SAMPLE = True
    # Centre-sampling radius, in strides of the level.
    _C.MODEL.FCOS.POS_RADIUS = 1.5
    _C.MODEL.FCOS.LOC_LOSS_TYPE = "giou"  # "iou", "linear_iou" or "giou"

    # ---------------------------------------------------------------------------------------- #
    # VoVNet backbone
    # ---------------------------------------------------------------------------------------- #
    _C.MODEL.VOVNET = CN()
    # Architecture: V-19/39/57/99 with eSE, the Lite V-19-slim(-dw) variants (see vovnet.py).
    _C.MODEL.VOVNET.CONV_BODY = "V-39-eSE"
    # VoVNet stages the backbone returns (to the FPN).
    _C.MODEL.VOVNET.OUT_FEATURES = ["stage2", "stage3", "stage4", "stage5"]
    _C.MODEL.VOVNET.NORM = "FrozenBN"  # "FrozenBN", "BN", "SyncBN" or "GN"
    _C.MODEL.VOVNET.OUT_CHANNELS = 256  # kept for YAML compatibility; unused
    _C.MODEL.VOVNET.BACKBONE_OUT_CHANNELS = 256  # kept for YAML compatibility; unused
    # Deformable convs on stages 2..5.
    _C.MODEL.VOVNET.STAGE_WITH_DCN = (False, False, False, False)
    # Modulated (v2) deformable convs where STAGE_WITH_DCN is on.
    _C.MODEL.VOVNET.WITH_MODULATED_DCN = False
    # Offset groups of the deformable convs.
    _C.MODEL.VOVNET.DEFORMABLE_GROUPS = 1

    # ---------------------------------------------------------------------------------------- #
    # ROI heads: level assignment, MaskIoU, keypoints
    # ---------------------------------------------------------------------------------------- #
    # "ratio": CenterMask's adaptive RoI assignment (Eq. 2), "area": the FPN paper's rule.
    _C.MODEL.ROI_MASK_HEAD.ASSIGN_CRITERION = "area"

    # MaskIoU head: predicts each mask's IoU; mask_scores = score x predicted IoU.
    _C.MODEL.MASKIOU_ON = False
    # Weight of the MaskIoU regression loss.
    _C.MODEL.MASKIOU_LOSS_WEIGHT = 1.0

    _C.MODEL.ROI_MASKIOU_HEAD = CN()
    # Registered name of the MaskIoU head.
    _C.MODEL.ROI_MASKIOU_HEAD.NAME = "MaskIoUHead"
    # Channels of the MaskIoU head's convs.
    _C.MODEL.ROI_MASKIOU_HEAD.CONV_DIM = 256
    # Convs of the MaskIoU head before its fully connected layers.
    _C.MODEL.ROI_MASKIOU_HEAD.NUM_CONV = 4

    # FPN levels the keypoint head pools from.
    _C.MODEL.ROI_KEYPOINT_HEAD.IN_FEATURES = ["p2", "p3", "p4", "p5"]
    # RoI level assignment of the keypoint head ("ratio" or "area", as for masks).
    _C.MODEL.ROI_KEYPOINT_HEAD.ASSIGN_CRITERION = "ratio"
    add_condinst_config(_C)
    add_centermask_pr_config(_C)
    add_dla_config(_C)
    return cfg


def get_cfg() -> CN:
    """detectron2's default config plus the CenterMask keys (same name and module as the original),
    as a :class:`CenterMaskCfgNode` (detectron2's ``CfgNode`` with a quiet ``merge_from_file``)."""
    return add_centermask_config(CenterMaskCfgNode(_d2_get_cfg()))
