"""CondInst configuration keys (``MODEL.CONDINST.*``), AdelaiDet's names and defaults.

:func:`add_condinst_config` is called by :func:`centermask.config.add_centermask_config`; like it,
it only adds keys to the config it is given.
"""

from detectron2.config import CfgNode as CN

__all__ = ["add_condinst_config"]


def add_condinst_config(cfg: CN) -> CN:
    """Add the ``MODEL.CONDINST`` keys to ``cfg`` in place (no-op when present); returns it."""
    if "CONDINST" in cfg.MODEL:
        return cfg
    cfg.MODEL.CONDINST = CN()
    # Stride of the dynamic mask head's output, of the GT bitmasks and of the dice loss.
    cfg.MODEL.CONDINST.MASK_OUT_STRIDE = 4
    cfg.MODEL.CONDINST.BOTTOM_PIXELS_REMOVED = -1  # kept for YAML compatibility (BoxInst); unused
    # More FCOS positives than this: a random subset of this size gets the mask loss (-1: all).
    cfg.MODEL.CONDINST.MAX_PROPOSALS = -1
    # Alternative to MAX_PROPOSALS: per image, the best K / #GT positives of every GT.
    cfg.MODEL.CONDINST.TOPK_PROPOSALS_PER_IM = -1

    cfg.MODEL.CONDINST.MASK_HEAD = CN()
    # Channels of the dynamic mask head's hidden layers.
    cfg.MODEL.CONDINST.MASK_HEAD.CHANNELS = 8
    # Layers (1x1 convs) of the dynamic mask head.
    cfg.MODEL.CONDINST.MASK_HEAD.NUM_LAYERS = 3
    cfg.MODEL.CONDINST.MASK_HEAD.USE_FP16 = False  # kept for YAML compatibility; unused
    # Leave out the relative coordinates the dynamic head gets with the mask features.
    cfg.MODEL.CONDINST.MASK_HEAD.DISABLE_REL_COORDS = False

    cfg.MODEL.CONDINST.MASK_BRANCH = CN()
    # Channels of the mask features the dynamic head reads.
    cfg.MODEL.CONDINST.MASK_BRANCH.OUT_CHANNELS = 8
    # The first level sets the mask-feature stride.
    cfg.MODEL.CONDINST.MASK_BRANCH.IN_FEATURES = ["p3", "p4", "p5"]
    # Channels of the mask branch's convs.
    cfg.MODEL.CONDINST.MASK_BRANCH.CHANNELS = 128
    # Norm of the mask branch's convs ("BN", "SyncBN", "GN" or "").
    cfg.MODEL.CONDINST.MASK_BRANCH.NORM = "BN"
    # Convs of the mask branch after merging the levels.
    cfg.MODEL.CONDINST.MASK_BRANCH.NUM_CONVS = 4
    # Auxiliary semantic-segmentation loss on the first level (training only).
    cfg.MODEL.CONDINST.MASK_BRANCH.SEMANTIC_LOSS_ON = False
    return cfg
