"""CondInst parity with AdelaiDet on the synthetic weights (folder G_condinst_MS_R_50_1x): backbone,
FCOS head, controller and mask-branch tensors, detections with their dynamic parameters and
stride-4 mask probabilities, final masks, and the training losses.

By default: the tensors and detections of the small input, image 0 alone and its losses;
CENTERMASK_FULL_PARITY=1 adds image 1 alone, the batch of two differently sized images and their
losses.
"""

import os
from functools import lru_cache

import pytest
import torch
from detectron2.utils.events import EventStorage

from tests.support.condinst import check_detections
from tests.support.helpers import (
    CONDINST_PARITY_DIRS,
    build_synthetic_model,
    compare,
    load_npz,
    parity_dir,
    parity_failures,
    parity_summary,
    parity_training_inputs,
)

pytestmark = pytest.mark.slow

FULL = os.environ.get("CENTERMASK_FULL_PARITY", "") == "1"
LEVELS = ["p3", "p4", "p5", "p6", "p7"]
LOSS_NAMES = ["loss_fcos_cls", "loss_fcos_loc", "loss_fcos_ctr", "loss_mask"]
RUNS = {"small__img0": ["small"], "single__img0": [0], "single__img1": [1], "batch": [0, 1]}
CHECKED_RUNS = list(RUNS) if FULL else ["small__img0", "single__img0"]
# One image alone in CI (the batch of two 800-pixel images takes twice as long).
LOSS_SECTIONS = ["batch", "single_img0", "single_img1"] if FULL else ["single_img0"]


@lru_cache(maxsize=None)
def _model(name):
    return build_synthetic_model(name)[0]


@pytest.mark.parametrize("name", CONDINST_PARITY_DIRS)
def test_backbone_head_controller_and_mask_branch_match_the_reference(name):
    model = _model(name)
    image = load_npz(name, "features_small.npz")["input_normalized"]
    with torch.no_grad():
        features = model.backbone(torch.from_numpy(image))
        fcos = model.proposal_generator
        logits, bbox_reg, ctrness, towers = fcos.fcos_head([features[f] for f in LEVELS])
        mask_feats, _ = model.mask_branch(features)
    head = {"mask_feats": mask_feats.numpy()}
    for i, level in enumerate(LEVELS):
        head[f"logits_{level}"] = logits[i].numpy()
        head[f"bbox_reg_{level}"] = bbox_reg[i].numpy()
        head[f"ctrness_{level}"] = ctrness[i].numpy()
        head[f"top_feats_{level}"] = model.controller(towers[i]).detach().numpy()
    outputs = {"features_small": {k: v.numpy() for k, v in features.items()}, "head_small": head}
    report = compare(str(parity_dir(name)), outputs, verbose=False)
    assert len(report["tensors"]) == 5 + 4 * 5 + 1  # every level, head output and mask_feats
    assert not parity_failures(report), parity_summary(report)


@pytest.mark.parametrize("name", CONDINST_PARITY_DIRS)
def test_detections_and_masks_match_the_reference(name):
    check_detections(_model(name), name, {run: RUNS[run] for run in CHECKED_RUNS})


@pytest.mark.parametrize("name", CONDINST_PARITY_DIRS)
def test_training_losses_match_the_reference(name):
    model = _model(name)
    images_of = {"batch": [0, 1], "single_img0": [0], "single_img1": [1]}
    losses = {}
    weights = {k: v.clone() for k, v in model.state_dict().items()}
    model.train()
    try:
        for section in LOSS_SECTIONS:
            inputs = parity_training_inputs(name, images_of[section])
            with EventStorage(0), torch.no_grad():
                torch.manual_seed(0)
                loss_dict = model(inputs)
            assert list(loss_dict) == LOSS_NAMES
            assert {v.dtype for v in loss_dict.values()} == {torch.float32}
            losses[section] = {k: v.item() for k, v in loss_dict.items()}
    finally:
        model.load_state_dict(weights)  # training updated the BN statistics and _iter
        model.eval()
    report = compare(str(parity_dir(name)), {"losses": losses}, verbose=False)
    assert len(report["losses"]) >= 4 * len(LOSS_SECTIONS)
    assert not parity_failures(report, loss_sections=LOSS_SECTIONS), parity_summary(report)
