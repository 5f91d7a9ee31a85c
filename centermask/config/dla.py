"""DLA backbone configuration keys (``MODEL.DLA.*``) for ``build_dla_backbone``.

:func:`add_dla_config` is called by :func:`centermask.config.add_centermask_config`; like it, it
only adds keys to the config it is given.
"""

from detectron2.config import CfgNode as CN

__all__ = ["add_dla_config"]


def add_dla_config(cfg: CN) -> CN:
    """Add the ``MODEL.DLA`` keys to ``cfg`` in place (no-op when present); returns it."""
    if "DLA" in cfg.MODEL:
        return cfg
    dla = cfg.MODEL.DLA = CN()
    # DLA variant of MODEL.BACKBONE.NAME "build_dla_backbone" (CenterNet's up-path to stride 4).
    dla.CONV_BODY = "DLA-34"
    # Norm of the DLA body: "BN", "FrozenBN" or "SyncBN" (detectron2's get_norm names).
    dla.NORM = "BN"
    # Norm of the up-path's 3x3 conv units ("BN" or "SyncBN"; CenterNet: BN).
    dla.UP_NORM = "BN"
    # Modulated deformable 3x3 convs in the up-path (CenterNet); False: plain 3x3 convs, which
    # export to ONNX.
    dla.DEFORMABLE_UP = True
    # Name of the backbone's one output, the stride-4 map (what MODEL.CENTERMASK_PR.IN_FEATURE
    # and SALIENCY_IN_FEATURE name).
    dla.OUT_FEATURE = "up4"
    return cfg
