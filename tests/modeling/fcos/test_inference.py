"""FCOS decoding: parity on the small input, hand-made cases, batch vs single, ties at the top-k."""

import numpy as np
import pytest
import torch
from detectron2.structures import Boxes, ImageList, Instances
from torchvision.ops import batched_nms

from centermask.modeling.fcos.inference import fcos_detections, keep_top_k_with_ties
from centermask.modeling.fcos.targets import compute_locations
from tests.support.fcos import check_raw_detections, small_features, synthetic_fcos
from tests.support.helpers import PARITY_DIRS, load_npz


@pytest.mark.parametrize("name", PARITY_DIRS)
def test_small_input_detections_match_reference(name):
    fcos, _ = synthetic_fcos(name)
    images = ImageList(torch.zeros(1, 3, 128, 160), [(128, 160)])
    with torch.no_grad():
        detections, losses = fcos(images, small_features(name))
    assert losses == {}
    (det,) = detections
    assert det.image_size == (128, 160)
    assert set(det.get_fields()) == {"pred_boxes", "scores", "pred_classes", "locations"}
    check_raw_detections(name, "small__img0", det)
    # Detections are in descending score order, and each location is that of a decoded box.
    assert torch.all(det.scores[:-1] >= det.scores[1:])
    ref = load_npz(name, "instances.npz")
    np.testing.assert_array_equal(
        np.sort(det.locations.numpy(), axis=0), np.sort(ref["small__img0__locations"], axis=0)
    )


def _level_outputs(n, sizes, num_classes=4, seed=0):
    g = torch.Generator().manual_seed(seed)
    logits = [torch.randn(n, num_classes, h, w, generator=g) - 1.0 for h, w in sizes]
    bbox_reg = [torch.rand(n, 4, h, w, generator=g) * 3 for h, w in sizes]
    ctrness = [torch.randn(n, 1, h, w, generator=g) for h, w in sizes]
    return logits, bbox_reg, ctrness


SIZES, STRIDES = [(12, 16), (6, 8), (3, 4)], [8, 16, 32]
PARAMS = dict(score_thresh=0.05, pre_nms_topk=60, nms_thresh=0.6, post_nms_topk=30)


def _locations(sizes=SIZES, strides=STRIDES):
    return compute_locations([torch.zeros(1, 1, h, w) for h, w in sizes], strides)


def _assert_same(a: Instances, b: Instances):
    assert len(a) == len(b)
    for field in ["pred_classes", "locations", "scores"]:
        torch.testing.assert_close(a.get(field), b.get(field), rtol=0, atol=0)
    torch.testing.assert_close(a.pred_boxes.tensor, b.pred_boxes.tensor, rtol=0, atol=0)


def test_batched_images_decode_like_each_image_alone():
    logits, bbox_reg, ctrness = _level_outputs(2, SIZES)
    sizes = [(90, 120), (96, 64)]
    batch = fcos_detections(_locations(), logits, bbox_reg, ctrness, STRIDES, sizes, **PARAMS)
    for i in range(2):
        (single,) = fcos_detections(
            _locations(),
            [x[i : i + 1] for x in logits],
            [x[i : i + 1] for x in bbox_reg],
            [x[i : i + 1] for x in ctrness],
            STRIDES,
            [sizes[i]],
            **PARAMS,
        )
        assert batch[i].image_size == sizes[i]
        assert len(single) > 0
        _assert_same(batch[i], single)


def _loop_decoder(
    locations,
    logits,
    bbox_reg,
    ctrness,
    strides,
    *,
    score_thresh,
    pre_nms_topk,
    nms_thresh,
    post_nms_topk,
    thresh_with_ctr=False,
):
    """Level-by-level decoding with explicit candidate lists (one image), from the description."""
    boxes, scores, classes = [], [], []
    for loc, lg, rg, ct, s in zip(locations, logits, bbox_reg, ctrness, strides):
        probs = lg[0].permute(1, 2, 0).reshape(-1, lg.shape[1]).sigmoid()
        ctr = ct[0].reshape(-1).sigmoid()
        reg = rg[0].permute(1, 2, 0).reshape(-1, 4) * s
        product = probs * ctr[:, None]
        candidates = (product if thresh_with_ctr else probs) > score_thresh
        loc_idx, cls_idx = candidates.nonzero(as_tuple=True)
        cand_scores = product[loc_idx, cls_idx]
        if len(cand_scores) > pre_nms_topk:
            cand_scores, top = cand_scores.topk(pre_nms_topk)
            loc_idx, cls_idx = loc_idx[top], cls_idx[top]
        x, y = loc[loc_idx, 0], loc[loc_idx, 1]
        r = reg[loc_idx]
        boxes.append(torch.stack([x - r[:, 0], y - r[:, 1], x + r[:, 2], y + r[:, 3]], dim=1))
        scores.append(cand_scores.sqrt())
        classes.append(cls_idx)
    boxes, scores, classes = torch.cat(boxes), torch.cat(scores), torch.cat(classes)
    keep = batched_nms(boxes, scores, classes, nms_thresh)
    boxes, scores, classes = boxes[keep], scores[keep], classes[keep]
    if len(scores) > post_nms_topk:
        kth = torch.sort(scores, descending=True).values[post_nms_topk - 1]
        keep = scores >= kth
        boxes, scores, classes = boxes[keep], scores[keep], classes[keep]
    return boxes, scores, classes


@pytest.mark.parametrize("thresh_with_ctr", [False, True])
def test_vectorised_decoding_equals_level_by_level_loop(thresh_with_ctr):
    logits, bbox_reg, ctrness = _level_outputs(1, SIZES, seed=1)
    params = dict(PARAMS, thresh_with_ctr=thresh_with_ctr)
    (ours,) = fcos_detections(
        _locations(), logits, bbox_reg, ctrness, STRIDES, [(96, 128)], **params
    )
    boxes, scores, classes = _loop_decoder(
        _locations(), logits, bbox_reg, ctrness, STRIDES, **params
    )
    assert len(ours) == len(scores) > 0
    order = torch.argsort(scores, descending=True, stable=True)
    torch.testing.assert_close(ours.scores, scores[order], rtol=0, atol=0)
    torch.testing.assert_close(ours.pred_boxes.tensor, boxes[order], rtol=0, atol=0)
    torch.testing.assert_close(ours.pred_classes, classes[order], rtol=0, atol=0)


def test_single_location_decodes_to_location_minus_and_plus_scaled_distances():
    logits = [torch.full((1, 3, 1, 1), -10.0)]
    logits[0][0, 2] = 2.0
    bbox_reg = [torch.tensor([1.0, 2.0, 3.0, 4.0]).reshape(1, 4, 1, 1)]
    ctrness = [torch.full((1, 1, 1, 1), 0.5)]
    locations = _locations([(1, 1)], [16])
    (det,) = fcos_detections(locations, logits, bbox_reg, ctrness, [16], [(16, 16)], **PARAMS)
    assert det.pred_classes.tolist() == [2]
    assert det.pred_boxes.tensor.tolist() == [[8.0 - 16, 8.0 - 32, 8.0 + 48, 8.0 + 64]]
    expected = torch.sqrt(torch.sigmoid(torch.tensor(2.0)) * torch.sigmoid(torch.tensor(0.5)))
    torch.testing.assert_close(det.scores, expected.reshape(1))
    assert det.locations.tolist() == [[8.0, 8.0]]


def test_threshold_with_centerness_drops_candidates_with_low_product():
    logits = [torch.tensor([0.0, -10.0]).reshape(1, 2, 1, 1)]  # p = 0.5 for class 0
    bbox_reg = [torch.ones(1, 4, 1, 1)]
    ctrness = [torch.full((1, 1, 1, 1), -4.0)]  # c ~ 0.018, p * c ~ 0.009 < 0.05
    args = (_locations([(1, 1)], [8]), logits, bbox_reg, ctrness, [8], [(8, 8)])
    assert len(fcos_detections(*args, **PARAMS, thresh_with_ctr=False)[0]) == 1
    assert len(fcos_detections(*args, **PARAMS, thresh_with_ctr=True)[0]) == 0


def test_pre_nms_topk_is_per_level_and_image():
    logits, bbox_reg, ctrness = _level_outputs(1, SIZES, seed=2)
    logits = [x + 5 for x in logits]  # every pair is a candidate
    params = dict(PARAMS, pre_nms_topk=7, nms_thresh=0.0, post_nms_topk=0)  # no NMS, no cap
    (det,) = fcos_detections(
        _locations(), logits, bbox_reg, ctrness, STRIDES, [(96, 128)], **params
    )
    assert len(det) == 7 * len(SIZES)


def test_post_nms_topk_keeps_ties_at_the_cut():
    inst = Instances((10, 10))
    inst.scores = torch.tensor([0.9, 0.8, 0.8, 0.7])
    inst.pred_boxes = Boxes(torch.zeros(4, 4))
    assert keep_top_k_with_ties(inst, 2).scores.tolist() == pytest.approx([0.9, 0.8, 0.8])
    assert len(keep_top_k_with_ties(inst, 4)) == 4
    assert len(keep_top_k_with_ties(inst, 0)) == 4


def test_no_candidates_gives_empty_detections_with_all_fields():
    logits = [torch.full((2, 3, 2, 2), -20.0)]
    args = (_locations([(2, 2)], [8]), logits, [torch.ones(2, 4, 2, 2)], [torch.zeros(2, 1, 2, 2)])
    dets = fcos_detections(*args, [8], [(16, 16), (12, 12)], **PARAMS)
    assert [len(d) for d in dets] == [0, 0]
    assert dets[0].pred_boxes.tensor.shape == (0, 4) and dets[0].locations.shape == (0, 2)
