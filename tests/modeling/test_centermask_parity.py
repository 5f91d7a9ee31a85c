"""Whole-model parity with the original implementation (GeneralizedRCNN + FCOS + CenterROIHeads on
the synthetic weights): detections, 28x28 mask probabilities, pasted masks, mask_scores and the
training losses.

The Lite folder (A) is checked on every prefix and loss section. The two 800-pixel folders are
slow on CPU, so by default they check one image alone, the GT-box ("given") path, the small input
and the batch losses; set CENTERMASK_FULL_PARITY=1 to check everything there too.
"""

import os
from functools import lru_cache

import numpy as np
import pytest
import torch
from detectron2.modeling.meta_arch.rcnn import GeneralizedRCNN
from detectron2.structures import Boxes, Instances
from detectron2.utils.events import EventStorage

from tests.support.helpers import (
    PARITY_DIRS,
    build_synthetic_model,
    compare,
    parity_dir,
    parity_failures,
    parity_gt,
    parity_inputs,
    parity_summary,
    parity_training_inputs,
)

pytestmark = pytest.mark.slow

FULL = os.environ.get("CENTERMASK_FULL_PARITY", "") == "1"
ALL_PREFIXES = ["single__img0", "single__img1", "batch__img0", "batch__img1", "given__img0"]
ALL_PREFIXES += ["given__img1", "small__img0"]
ALL_LOSS_SECTIONS = ["batch", "single_img0", "single_img1"]


def _checked(name):
    """(prefixes, loss sections) checked for a parity folder."""
    if FULL or name.startswith("A_"):
        return ALL_PREFIXES, ALL_LOSS_SECTIONS
    return ["single__img0", "given__img0", "small__img0"], ["batch"]


@lru_cache(maxsize=None)
def _model(name):
    return build_synthetic_model(name)[0]


def _as_arrays(prefixes, inputs, raw):
    """The reference's instances.npz fields for the raw outputs and their postprocessed copies."""
    out = {}
    for p, r in zip(prefixes, raw):
        p += "__"
        out[p + "raw_boxes"] = r.pred_boxes.tensor.numpy().copy()
        out[p + "raw_scores"] = r.scores.numpy().copy()
        out[p + "raw_classes"] = r.pred_classes.numpy().copy()
        out[p + "raw_mask_scores"] = r.mask_scores.numpy().copy()
        out[p + "raw_mask_probs"] = r.pred_masks[:, 0].numpy().copy()
    final = GeneralizedRCNN._postprocess(raw, inputs, [r.image_size for r in raw])
    for p, f in zip(prefixes, final):
        p, f = p + "__", f["instances"]
        out[p + "boxes"] = f.pred_boxes.tensor.numpy()
        out[p + "scores"] = f.scores.numpy()
        out[p + "classes"] = f.pred_classes.numpy()
        out[p + "mask_scores"] = f.mask_scores.numpy()
        masks = f.pred_masks.numpy().astype(bool)
        out[p + "masks_packed"] = np.packbits(masks, axis=-1)
        out[p + "masks_shape"] = np.array(masks.shape)
    return out


def _run_inference(name, prefixes):
    model, out = _model(name), {}
    runs = {
        "single__img0": ([0], None),
        "single__img1": ([1], None),
        "batch__img0": ([0, 1], None),
        "small__img0": (["small"], None),
        "given__img0": ([0], 0),
        "given__img1": ([1], 1),
    }
    wanted = {p if not p.startswith("batch") else "batch__img0" for p in prefixes}
    with torch.no_grad():
        for key in sorted(wanted):
            images, given = runs[key]
            inputs = parity_inputs(name, images)
            detected = None
            if given is not None:
                gt = parity_gt(name)[given]
                boxes = torch.tensor(gt["gt_boxes_xyxy"], dtype=torch.float32)
                detected = [
                    Instances(
                        tuple(gt["resized_hw"]),
                        pred_boxes=Boxes(boxes),
                        pred_classes=torch.tensor(gt["gt_classes"], dtype=torch.int64),
                        scores=torch.ones(len(boxes)),
                    )
                ]
            raw = model.inference(inputs, detected, do_postprocess=False)
            names = ["batch__img0", "batch__img1"] if key.startswith("batch") else [key]
            out.update(_as_arrays(names, inputs, raw))
    return out


@pytest.mark.parametrize("name", PARITY_DIRS)
def test_inference_matches_the_reference(name):
    prefixes, _ = _checked(name)
    outputs = {"instances": _run_inference(name, prefixes)}
    report = compare(
        str(parity_dir(name)), outputs, prefixes=[p + "__" for p in prefixes], verbose=False
    )
    assert sorted(report["detections"]) == sorted(prefixes)
    assert not parity_failures(report), parity_summary(report)
    assert report["all_ok"], parity_summary(report)


@pytest.mark.parametrize("name", PARITY_DIRS)
def test_training_losses_match_the_reference(name):
    _, sections = _checked(name)
    model = _model(name)
    losses, dtypes = {}, set()
    images_of = {"batch": [0, 1], "single_img0": [0], "single_img1": [1]}
    model.train()
    try:
        for section in sections:
            inputs = parity_training_inputs(name, images_of[section])
            with EventStorage(0) as storage, torch.no_grad():
                torch.manual_seed(0)
                loss_dict = model(inputs)
                scalars = {k: v[0] for k, v in storage.latest().items()}
            losses[section] = {k: v.item() for k, v in loss_dict.items()}
            dtypes |= {v.dtype for v in loss_dict.values()}
            assert scalars["roi_head/num_fg_samples"] == 5.0
    finally:
        model.eval()
    assert dtypes == {torch.float32}  # loss_maskiou is float32 here (float64 in the original)
    report = compare(str(parity_dir(name)), {"losses": losses}, verbose=False)
    assert not parity_failures(report, loss_sections=sections), parity_summary(report)
    if set(sections) == set(ALL_LOSS_SECTIONS):
        assert report["all_ok"], parity_summary(report)
