import numpy as np
import pytest
import torch
from detectron2.modeling import build_model

from centermask.benchmark.gt_box_masks import (
    crowded_instances,
    instance_mask_metrics,
    masks_for_boxes,
    summarize_instances,
)
from tests.support.helpers import ROOT, get_config


def _square(x0, y0, x1, y1, size=20):
    mask = np.zeros((size, size), dtype=bool)
    mask[y0:y1, x0:x1] = True
    return mask


def _two_touching_squares_and_a_loner():
    # Two same-class 6x6 squares side by side (their boxes overlap by one column, where the front
    # one owns the pixels), and a lone square of another class.
    first = _square(2, 2, 8, 8)
    second = _square(7, 2, 13, 8) & ~first
    loner = _square(15, 15, 19, 19)
    gt = np.stack([first, second, loner])
    boxes = np.array([[2, 2, 8, 8], [7, 2, 13, 8], [15, 15, 19, 19]], dtype=float)
    classes = np.array([0, 0, 1])
    return gt, boxes, classes


def test_iou_and_leakage_of_a_mask_covering_both_squares():
    gt, _, classes = _two_touching_squares_and_a_loner()
    both = gt[0] | gt[1]  # 36 + 30 = 66 pixels
    pred = np.stack([both, gt[1], gt[2]])
    metrics = instance_mask_metrics(pred, gt, classes)
    # Instance 0: IoU 36 / 66, and 30 of its 66 pixels lie on instance 1.
    assert metrics["iou"][0] == pytest.approx(36 / 66)
    assert metrics["leakage"][0] == pytest.approx(30 / 66)
    # Instance 1 and the loner are predicted exactly: IoU 1, no leakage.
    assert metrics["iou"][1:] == pytest.approx([1.0, 1.0])
    assert metrics["leakage"][1:] == pytest.approx([0.0, 0.0])


def test_leakage_counts_only_instances_of_the_same_class():
    gt, _, _ = _two_touching_squares_and_a_loner()
    both = gt[0] | gt[1]
    pred = np.stack([both, gt[1], gt[2]])
    metrics = instance_mask_metrics(pred, gt, np.array([0, 1, 2]))
    assert metrics["leakage"][0] == 0.0
    assert metrics["iou"][0] == pytest.approx(36 / 66)


def test_an_empty_prediction_has_iou_zero_and_no_leakage():
    gt, _, classes = _two_touching_squares_and_a_loner()
    pred = np.stack([np.zeros_like(gt[0]), gt[1], gt[2]])
    metrics = instance_mask_metrics(pred, gt, classes)
    assert metrics["iou"][0] == 0.0 and metrics["leakage"][0] == 0.0


def test_crowded_means_a_box_intersecting_a_same_class_box():
    _, boxes, classes = _two_touching_squares_and_a_loner()
    assert crowded_instances(boxes, classes).tolist() == [True, True, False]
    assert crowded_instances(boxes, np.array([0, 1, 0])).tolist() == [False, False, False]
    touching = np.array([[0, 0, 4, 4], [4, 0, 8, 4]], dtype=float)  # shared edge, no area
    assert crowded_instances(touching, np.array([0, 0])).tolist() == [False, False]


def test_summary_separates_crowded_and_isolated_instances():
    summary = summarize_instances([0.5, 0.7, 0.9], [0.4, 0.2, 0.0], [True, True, False])
    assert summary["iou_crowded"] == pytest.approx(0.6)
    assert summary["iou_isolated"] == pytest.approx(0.9)
    assert summary["leakage_crowded"] == pytest.approx(0.3)
    assert (summary["num_crowded"], summary["num_isolated"]) == (2, 1)
    assert summarize_instances([0.9], [0.0], [False])["iou_crowded"] is None


QUICKSTART = ROOT / "configs" / "quickstart"
TINY = ["MODEL.FPN.OUT_CHANNELS", "32", "MODEL.CENTERMASK_PR.HEAD_CHANNELS", "16"]
TINY += ["MODEL.CENTERMASK_PR.SHAPE_SIZE", "8", "MODEL.CHANNELS_LAST", "False"]


@pytest.mark.usefixtures("one_thread")
@pytest.mark.parametrize("mode", ["local", "global", "both"])
def test_masks_for_given_boxes_stay_inside_them_in_their_order(mode):
    config = QUICKSTART / "centermask_pr_lite_V_19_slim_dw_eSE_synthetic.yaml"
    cfg = get_config(config, *TINY, "MODEL.CENTERMASK_PR.MASK_MODE", mode)
    model = build_model(cfg).eval()
    # A mask threshold of 0 keeps every pixel the assembly gives a positive value: the boxes (up
    # to one cell of the mask grid, which the bilinear resampling to the image spreads over).
    model.mask_threshold = 0.0
    cell = model.mask_head.mask_stride
    image = torch.randint(0, 255, (3, 64, 96), dtype=torch.uint8)
    boxes = torch.tensor([[8.0, 8.0, 40.0, 32.0], [48.0, 16.0, 88.0, 56.0]])
    masks = masks_for_boxes(model, image, 64, 96, boxes, torch.tensor([2, 2]))
    assert masks.shape == (2, 64, 96) and masks.dtype == torch.bool
    for mask, (x0, y0, x1, y1) in zip(masks, boxes.long().tolist()):
        assert mask.any()
        outside = mask.clone()
        outside[max(y0 - cell, 0) : y1 + cell, max(x0 - cell, 0) : x1 + cell] = False
        assert not outside.any()


def test_masks_for_given_boxes_need_the_heatmap_detector():
    config = QUICKSTART / "centermask_pr_fcos_lite_V_19_slim_dw_eSE_synthetic.yaml"
    model = build_model(get_config(config, *TINY)).eval()
    image = torch.zeros((3, 64, 96), dtype=torch.uint8)
    with pytest.raises(ValueError, match="DETECTOR 'heatmap'"):
        masks_for_boxes(
            model, image, 64, 96, torch.tensor([[8.0, 8.0, 40.0, 32.0]]), torch.tensor([0])
        )
