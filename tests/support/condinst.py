"""CondInst parity checks shared by the model, optimized and ONNX Runtime tests: a runner's raw and
post-processed detections in the reference's instances.npz format, compared with the folder."""

import numpy as np
import torch

from centermask.modeling.condinst.postprocess import postprocess_detections
from tests.support.helpers import (
    compare,
    load_npz,
    parity_dir,
    parity_failures,
    parity_inputs,
    parity_meta,
    parity_summary,
)


def _padded_size(raw, mask_out_stride):
    return tuple(s * mask_out_stride for s in raw.pred_global_masks.shape[2:])


def _as_arrays(runner, prefixes, inputs, raw):
    """The reference's instances.npz fields of our raw detections and of their postprocessed
    copies, plus the matched per-instance mask statistics."""
    out = {}
    stride = runner.mask_head.mask_out_stride
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
        padded = _padded_size(r, stride)
        with torch.inference_mode():  # the pipelines return inference tensors
            final = postprocess_detections(
                r, x["height"], x["width"], padded, runner.mask_threshold
            )
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
    from tests.support.parity.compare import match_detections

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


def check_detections(runner, name, runs):
    """Assert that ``runner`` (CondInst or its inference pipelines) reproduces the reference's
    detections, masks and per-instance fields; ``runs``: {"small__img0": ["small"],
    "single__img0": [0], "batch": [0, 1], ...}."""
    outputs, prefixes = {}, []
    for run, images in runs.items():
        inputs = parity_inputs(name, images)
        names = [f"batch__img{i}" for i in images] if run == "batch" else [run]
        with torch.no_grad():
            raw = runner.inference(inputs, do_postprocess=False)
        outputs.update(_as_arrays(runner, names, inputs, raw))
        prefixes += names
    report = compare(
        str(parity_dir(name)),
        {"instances": outputs},
        prefixes=[p + "__" for p in prefixes],
        verbose=False,
    )
    assert sorted(report["detections"]) == sorted(prefixes)
    assert all(r["raw"]["n_ref"] == 100 for r in report["detections"].values())
    if "small__img0" in prefixes:
        assert "max_mask_prob_diff" in report["detections"]["small__img0"]["raw"]
    assert not parity_failures(report), parity_summary(report)
    tolerances = parity_meta(name)["tolerances"]["compare_thresholds"]
    for prefix in prefixes:
        _check_per_instance_fields(name, prefix, outputs, tolerances)
    return report
