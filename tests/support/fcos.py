"""Builders shared by the FCOS tests: a stand-alone FCOS with the synthetic parity weights."""

import numpy as np
import torch
from detectron2.layers import ShapeSpec

from tests.support.helpers import (
    compare,
    get_config,
    load_npz,
    parity_config_file,
    parity_dir,
    parity_keys,
    synth_state_dict,
)

FCOS_PREFIX = "proposal_generator."
LEVELS = ["p3", "p4", "p5", "p6", "p7"]
SCORE_TOL = 5e-4  # meta.json det_score_abs


def fpn_output_shape(cfg, levels=LEVELS):
    """What an FCOS FPN backbone reports: OUT_CHANNELS channels, stride 2**k for pk."""
    return {
        name: ShapeSpec(channels=cfg.MODEL.FPN.OUT_CHANNELS, stride=2 ** int(name[1:]))
        for name in levels
    }


def fcos_state_dict(name: str) -> dict:
    """The synthetic ``proposal_generator.*`` weights of a parity folder, prefix removed."""
    keys = {k: s for k, s in parity_keys(name).items() if k.startswith(FCOS_PREFIX)}
    return {k[len(FCOS_PREFIX) :]: v for k, v in synth_state_dict(keys).items()}


def synthetic_fcos(name: str, *overrides):
    """The FCOS of parity folder ``name`` (built from its YAML) with synthetic weights, eval mode."""
    from centermask.modeling.fcos import FCOS

    cfg = get_config(parity_config_file(name), *overrides)
    fcos = FCOS(cfg, fpn_output_shape(cfg))
    fcos.load_state_dict(fcos_state_dict(name), strict=True)
    fcos.eval()
    return fcos, cfg


def small_features(name: str) -> dict:
    """The reference FPN features p3..p7 of the small (128x160) input."""
    return {
        k: torch.from_numpy(v)
        for k, v in load_npz(name, "features_small.npz").items()
        if k in LEVELS
    }


def detections_as_arrays(instances):
    return (
        instances.pred_boxes.tensor.detach().cpu().numpy().astype(np.float64),
        instances.scores.detach().cpu().numpy().astype(np.float64),
        instances.pred_classes.detach().cpu().numpy(),
    )


def check_raw_detections(name, prefix, instances):
    """Assert that FCOS detections equal the reference raw detections ``<prefix>__raw_*``
    (match rate 1, score difference within tolerance), with a message saying how far off."""
    ref = load_npz(name, "instances.npz")
    boxes, scores, classes = detections_as_arrays(instances)
    ours = {
        f"{prefix}__raw_boxes": boxes,
        f"{prefix}__raw_scores": scores,
        f"{prefix}__raw_classes": classes,
    }
    report = compare(
        str(parity_dir(name)), {"instances": ours}, prefixes=[prefix + "__"], verbose=False
    )
    raw = report["detections"][prefix]["raw"]
    assert raw["match_rate"] == 1.0, (
        f"{name} {prefix}: {raw['n_matched']} of {raw['n_ref']} reference detections matched "
        f"({raw['n_out']} produced)"
    )
    assert raw["max_score_diff"] <= SCORE_TOL, (
        f"{name} {prefix}: max score diff {raw['max_score_diff']:.3g} > {SCORE_TOL} "
        f"(max box coordinate diff {raw['max_box_coord_diff']:.3g} px)"
    )
    assert len(ref[f"{prefix}__raw_scores"]) == len(scores)
    return raw
