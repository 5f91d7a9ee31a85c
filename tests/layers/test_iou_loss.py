"""IoU / linear IoU / GIoU losses on (l, t, r, b) distance boxes, with the +1 smoothing."""

import math

import pytest
import torch

from centermask.layers.iou_loss import IOULoss, iou_loss


def _t(*rows):
    return torch.tensor(rows, dtype=torch.float32)


def test_identical_boxes_have_zero_loss_for_every_type():
    boxes = _t([1.0, 2.0, 3.0, 4.0], [0.5, 0.5, 0.5, 0.5])
    for loss_type in ["iou", "linear_iou", "giou"]:
        assert iou_loss(boxes, boxes, loss_type=loss_type).abs().item() < 1e-7


def test_nested_boxes_use_plus_one_smoothing():
    # Target area 16, prediction area 4 inside it: IoU = (4 + 1) / (16 + 1); the enclosing box is
    # the union, so GIoU = IoU.
    pred, target = _t([1.0, 1.0, 1.0, 1.0]), _t([2.0, 2.0, 2.0, 2.0])
    iou = 5.0 / 17.0
    assert iou_loss(pred, target, loss_type="linear_iou").item() == pytest.approx(1 - iou)
    assert iou_loss(pred, target, loss_type="iou").item() == pytest.approx(-math.log(iou))
    assert iou_loss(pred, target, loss_type="giou").item() == pytest.approx(1 - iou)


def test_giou_penalises_the_empty_part_of_the_enclosing_box():
    # Boxes on opposite sides of the shared point: no overlap, union 8, enclosing 4x4 = 16.
    pred, target = _t([2.0, 2.0, 0.0, 0.0]), _t([0.0, 0.0, 2.0, 2.0])
    expected = 1.0 - (1.0 / 9.0 - (16.0 - 8.0) / 16.0)
    assert iou_loss(pred, target, loss_type="giou").item() == pytest.approx(expected)


def test_weights_multiply_each_pair_before_the_sum():
    pred = _t([1.0, 1.0, 1.0, 1.0], [2.0, 2.0, 0.0, 0.0])
    target = _t([2.0, 2.0, 2.0, 2.0], [0.0, 0.0, 2.0, 2.0])
    per_pair = iou_loss(pred, target, loss_type="giou", reduction="none")
    weight = _t(0.25, 2.0)
    total = iou_loss(pred, target, weight, loss_type="giou")
    assert total.item() == pytest.approx((per_pair * weight).sum().item())
    assert IOULoss("giou")(pred, target, weight).item() == pytest.approx(total.item())


def test_empty_input_sums_to_zero_and_keeps_the_graph():
    pred = torch.zeros((0, 4), requires_grad=True)
    loss = iou_loss(pred, torch.zeros((0, 4)), torch.zeros(0))
    assert loss.item() == 0.0
    loss.backward()
    assert pred.grad.shape == (0, 4)


def test_gradients_are_finite():
    pred = torch.rand(16, 4, requires_grad=True)
    target = torch.rand(16, 4) + 0.1
    for loss_type in ["iou", "linear_iou", "giou"]:
        pred.grad = None
        iou_loss(pred, target, loss_type=loss_type).backward()
        assert torch.isfinite(pred.grad).all(), loss_type


def test_unknown_loss_type_names_the_config_key():
    with pytest.raises(ValueError, match="LOC_LOSS_TYPE"):
        IOULoss("diou")
    with pytest.raises(ValueError, match="diou"):
        iou_loss(_t([1.0, 1, 1, 1]), _t([1.0, 1, 1, 1]), loss_type="diou")
