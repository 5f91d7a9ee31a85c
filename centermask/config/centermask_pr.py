"""CenterMask-PR configuration keys (``MODEL.CENTERMASK_PR.*``, ``MODEL.UPSAMPLING_NECK.*``).

:func:`add_centermask_pr_config` is called by :func:`centermask.config.add_centermask_config`;
like it, it only adds keys to the config it is given. The number of classes is
``MODEL.FCOS.NUM_CLASSES`` (equal to ``MODEL.ROI_HEADS.NUM_CLASSES``, as for the other models), so
the data-set class checks of the trainer apply unchanged.
"""

from detectron2.config import CfgNode as CN

__all__ = ["add_centermask_pr_config"]


def add_centermask_pr_config(cfg: CN) -> CN:
    """Add the ``MODEL.CENTERMASK_PR`` and ``MODEL.UPSAMPLING_NECK`` keys to ``cfg`` in place
    (no-op when present); returns it."""
    if "CENTERMASK_PR" in cfg.MODEL:
        return cfg
    pr = cfg.MODEL.CENTERMASK_PR = CN()
    # "heatmap": CenterNet-style centre heatmap, offset and size heads on IN_FEATURE (the paper's
    # detector); "fcos": the FCOS proposal generator (MODEL.FCOS.*), one instance per location (the
    # paper's experiment on FCOS).
    pr.DETECTOR = "heatmap"
    # Heatmap detector: the stride-4 feature its heads (and the shape tower) run on.
    pr.IN_FEATURE = "p2"
    # Feature the saliency map is predicted on; masks are assembled at its stride unless
    # MASK_STRIDE names a finer one.
    pr.SALIENCY_IN_FEATURE = "p2"
    # Stride of the grid the masks are assembled and trained on: 0 for the saliency feature's
    # (the paper), or a divisor of it, the saliency logits then upsampled bilinearly. Finer grids
    # resolve small objects that cover a few saliency cells.
    pr.MASK_STRIDE = 0
    # Hidden channels of every head (heatmap, offset, size, shape tower, saliency; CenterNet: 256).
    pr.HEAD_CHANNELS = 64
    # S: the local shape is an S x S map (S^2 channels per location).
    pr.SHAPE_SIZE = 32
    # "both" (local shape x global saliency), "local" (shape only) or "global" (saliency only).
    pr.MASK_MODE = "both"
    # One saliency channel per class (the instance's class is used) or one for all.
    pr.CLASS_SPECIFIC_SALIENCY = True

    # CornerNet's focal loss on the heatmap: alpha (the power of the prediction).
    pr.FOCAL_ALPHA = 2.0
    # CornerNet's focal loss on the heatmap: beta (the power of 1 - the Gaussian target).
    pr.FOCAL_BETA = 4.0
    # CornerNet's Gaussian radius keeps boxes at this IoU.
    pr.GAUSSIAN_MIN_OVERLAP = 0.7
    # Weight of the heatmap loss (the paper: 1).
    pr.HEATMAP_LOSS_WEIGHT = 1.0
    # Weight of the centre-offset L1 loss (the paper: 1).
    pr.OFFSET_LOSS_WEIGHT = 1.0
    # Weight of the box-size L1 loss (the paper: 0.1).
    pr.SIZE_LOSS_WEIGHT = 0.1
    # Weight of the mask BCE loss (the paper: 1).
    pr.MASK_LOSS_WEIGHT = 1.0
    # Direct BCE on the class-specific saliency map (unused with a class-agnostic one).
    pr.SALIENCY_LOSS_WEIGHT = 1.0
    # FCOS detector: at most this many random positives per batch get the mask loss (-1: all).
    pr.MAX_TRAIN_MASKS = 256

    # Heatmap detector inference: peaks per image and their minimum score (no NMS).
    pr.TOPK_TEST = 100
    # Heatmap detector inference: peaks below this score are dropped.
    pr.SCORE_THRESH_TEST = 0.05
    # Mask probability above which a pixel is in the mask (the paper: 0.4).
    pr.MASK_THRESHOLD = 0.4
    # Not in the paper: also output ``mask_scores`` = score x the mean probability of the mask's
    # pixels above MASK_THRESHOLD (SOLOv2's "maskness"), which the COCO mask evaluation ranks by.
    pr.MASKNESS_SCORES = False

    # The stride-4 feature without an FPN (MODEL.BACKBONE.NAME "build_upsampling_neck_backbone",
    # whose output "up4" IN_FEATURE and SALIENCY_IN_FEATURE then name): BOTTOM_UP is a registered
    # bottom-up builder, IN_FEATURES its outputs from stride 4 to the coarsest.
    neck = cfg.MODEL.UPSAMPLING_NECK = CN()
    # Registered bottom-up backbone builder whose outputs the neck merges.
    neck.BOTTOM_UP = "build_vovnet_backbone"
    # Bottom-up outputs merged, from stride 4 to the coarsest.
    neck.IN_FEATURES = ["stage2", "stage3", "stage4", "stage5"]
    # Channels of the neck's stride-4 output.
    neck.OUT_CHANNELS = 64
    # Norm of the neck's convs ("" for none).
    neck.NORM = ""
    return cfg
