"""CondInst parity with AdelaiDet on the synthetic weights (folder G_condinst_MS_R_50_1x): backbone,
FCOS head, controller and mask-branch tensors, detections with their dynamic parameters and
stride-4 mask probabilities, final masks, and the training losses.

By default: the tensors and detections of the small input, image 0 alone and the batch losses;
CENTERMASK_FULL_PARITY=1 adds image 1 alone, the batch of two differently sized images and the
single-image losses.
"""

import os
from functools import lru_cache

import numpy as np
import pytest
import torch
from detectron2.utils.events import EventStorage

from helpers import (
    CONDINST_PARITY_DIRS,
    build_synthetic_model,
    compare,
    load_npz,
    parity_dir,
    parity_failures,
    parity_inputs,
    parity_meta,
    parity_summary,
    parity_training_inputs,
)

pytestmark = pytest.mark.slow

FULL = os.environ.get("CENTERMASK_FULL_PARITY", "") == "1"
LEVELS = ["p3", "p4", "p5", "p6", "p7"]
LOSS_NAMES = ["loss_fcos_cls", "loss_fcos_loc", "loss_fcos_ctr", "loss_mask"]
RUNS = {"small__img0": ["small"], "single__img0": [0], "single__img1": [1], "batch": [0, 1]}
CHECKED_RUNS = list(RUNS) if FULL else ["small__img0", "single__img0"]
LOSS_SECTIONS = ["batch", "single_img0", "single_img1"] if FULL else ["batch"]


@lru_cache(maxsize=None)
def _model(name):
    return build_synthetic_model(name)[0]


def _tolerances(name):
    return parity_meta(name)["tolerances"]["compare_thresholds"]


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


def _padded_size(raw, mask_out_stride):
    return tuple(s * mask_out_stride for s in raw.pred_global_masks.shape[2:])


def _as_arrays(model, prefixes, inputs, raw):
    """The reference's instances.npz fields of our raw detections and of their postprocessed
    copies, plus the matched per-instance mask statistics."""
    out = {}
    stride = model.mask_head.mask_out_stride
    for prefix, r, x in zip(prefixes, raw, inputs):
        p = prefix + "__"
        probs = r.pred_global_masks[:, 0]
        out[p + "raw_boxes"] = r.pred_boxes.tensor.numpy().copy()
        out[p + "raw_scores"] = r.scores.numpy().copy()
        out[p + "raw_classes"] = r.pred_classes.numpy().copy()
        out[p + "raw_locations"] = r.locations.numpy().copy()
        out[p + "raw_fpn_levels"] = r.fpn_levels.numpy().copy()
        out[p + "raw_mask_head_params"] = r.top_feat.numpy().copy()
        out[p + "raw_mask_prob_mean"] = probs.mean(dim=(1, 2)).numpy()
        out[p + "raw_mask_area_s4"] = (probs > 0.5).sum(dim=(1, 2)).numpy()
        out[p + "mask_prob_shape_s4"] = np.array(probs.shape)
        out[p + "padded_size"] = np.array(_padded_size(r, stride))
        if prefix.startswith("small"):
            out[p + "raw_mask_probs"] = probs.numpy().copy()
        final = model.postprocess(r, x["height"], x["width"], _padded_size(r, stride))
        masks = final.pred_masks.numpy()
        assert final.pred_masks.dtype == torch.bool
        out[p + "boxes"] = final.pred_boxes.tensor.numpy()
        out[p + "scores"] = final.scores.numpy()
        out[p + "classes"] = final.pred_classes.numpy()
        out[p + "masks_packed"] = np.packbits(masks, axis=-1)
        out[p + "masks_shape"] = np.array(masks.shape)
    return out


def _check_per_instance_fields(name, prefix, ours, tol):
    """Dynamic parameters, locations, levels and mask statistics of the matched raw detections."""
    from compare import match_detections

    ref = load_npz(name, "instances.npz")
    p = prefix + "__"
    for key in ["mask_prob_shape_s4", "padded_size"]:
        assert list(ours[p + key]) == list(ref[p + key]), (prefix, key)
    pairs = match_detections(
        ref[p + "raw_boxes"],
        ref[p + "raw_classes"],
        ours[p + "raw_boxes"],
        ours[p + "raw_classes"],
        tol["det_box_iou_min"],
        ref[p + "raw_scores"],
        ours[p + "raw_scores"],
        tol["det_box_coord_abs_px"],
    )
    assert len(pairs) == len(ref[p + "raw_boxes"]) == len(ours[p + "raw_boxes"])
    r, o = np.array([a for a, _, _ in pairs]), np.array([b for _, b, _ in pairs])
    np.testing.assert_array_equal(ours[p + "raw_locations"][o], ref[p + "raw_locations"][r])
    np.testing.assert_array_equal(ours[p + "raw_fpn_levels"][o], ref[p + "raw_fpn_levels"][r])
    np.testing.assert_allclose(
        ours[p + "raw_mask_prob_mean"][o],
        ref[p + "raw_mask_prob_mean"][r],
        atol=tol["mask_prob_abs"],
    )
    area_diff = np.abs(ours[p + "raw_mask_area_s4"][o] - ref[p + "raw_mask_area_s4"][r])
    assert area_diff.max() <= tol["mask_pixel_slack"], (prefix, area_diff.max())
    if p + "raw_mask_head_params" in ref:
        ref_params = ref[p + "raw_mask_head_params"][r]
        diff = np.abs(ours[p + "raw_mask_head_params"][o] - ref_params).max()
        assert diff <= tol["tensor_rel_to_max"] * np.abs(ref_params).max(), (prefix, diff)


@pytest.mark.parametrize("name", CONDINST_PARITY_DIRS)
def test_detections_and_masks_match_the_reference(name):
    model, outputs, prefixes = _model(name), {}, []
    for run in CHECKED_RUNS:
        images = RUNS[run]
        inputs = parity_inputs(name, images)
        names = [f"batch__img{i}" for i in images] if run == "batch" else [run]
        with torch.no_grad():
            raw = model.inference(inputs, do_postprocess=False)
        outputs.update(_as_arrays(model, names, inputs, raw))
        prefixes += names
    report = compare(
        str(parity_dir(name)),
        {"instances": outputs},
        prefixes=[p + "__" for p in prefixes],
        verbose=False,
    )
    assert sorted(report["detections"]) == sorted(prefixes)
    assert all(r["raw"]["n_ref"] == 100 for r in report["detections"].values())
    assert "max_mask_prob_diff" in report["detections"]["small__img0"]["raw"]
    assert not parity_failures(report), parity_summary(report)
    for prefix in prefixes:
        _check_per_instance_fields(name, prefix, outputs, _tolerances(name))


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
