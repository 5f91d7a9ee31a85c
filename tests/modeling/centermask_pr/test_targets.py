"""CenterMask-PR training targets and losses against hand computations."""

import math

import torch
from detectron2.structures import BitMasks, Boxes, Instances, PolygonMasks

from centermask.modeling.centermask_pr.losses import (
    assembled_mask_loss,
    center_focal_loss,
    saliency_loss,
)
from centermask.modeling.centermask_pr.mask_head import ShapeSaliencyMaskHead
from centermask.modeling.centermask_pr.targets import (
    center_targets,
    gaussian_radius,
    heatmap_targets,
    mask_targets,
)


def test_gaussian_radius_is_the_smallest_cornernet_root():
    # h = w = 10, overlap 0.7. The three CornerNet cases by hand:
    r1 = (20 + math.sqrt(20**2 - 4 * (100 * 0.3 / 1.7))) / 2  # 19.07
    r2 = (40 + math.sqrt(40**2 - 16 * 30)) / 2  # 36.73
    r3 = (-28 + math.sqrt(28**2 + 4 * 2.8 * 30)) / 2  # 2.73
    assert min(r1, r2, r3) == r3
    got = gaussian_radius(torch.tensor([10.0]), torch.tensor([10.0]), 0.7)
    assert abs(got.item() - r3) < 1e-5
    # A 4 x 4 box: r3 = (-11.2 + sqrt(11.2^2 + 4 * 2.8 * 4.8)) / 2 = 1.09 (radius 1 on the map).
    got = gaussian_radius(torch.tensor([4.0]), torch.tensor([4.0]), 0.7)
    assert abs(got.item() - (-11.2 + math.sqrt(11.2**2 + 4 * 2.8 * 4.8)) / 2) < 1e-5


def test_center_cell_offset_and_size_targets():
    # Centre (20, 14) px / stride 4 = (5, 3.5): cell (5, 3), offset (0, 0.5), size (5, 4) cells.
    cells, offsets, sizes = center_targets(torch.tensor([[10.0, 6.0, 30.0, 22.0]]), 4, (8, 8))
    assert cells.tolist() == [[5, 3]]
    assert torch.allclose(offsets, torch.tensor([[0.0, 0.5]]))
    assert torch.allclose(sizes, torch.tensor([[5.0, 4.0]]))


def test_heatmap_gaussians_of_overlapping_objects_keep_the_maximum():
    # Two 4 x 4-cell boxes of class 0 (radius 1, sigma 0.5, so exp(-2 d^2)) centred on cells
    # (x=3, y=3) and (x=4, y=3), and one of class 1 on cell (3, 3).
    boxes = torch.tensor([[6.0, 6.0, 22.0, 22.0], [10.0, 6.0, 26.0, 22.0], [6.0, 6.0, 22.0, 22.0]])
    heat = heatmap_targets(boxes, torch.tensor([0, 0, 1]), 2, 4, (8, 8))
    e2, e4 = math.exp(-2), math.exp(-4)
    expected = torch.zeros(8, 8)
    for cy, cx in ((3, 3), (3, 4)):
        for dy in (-1, 0, 1):
            for dx in (-1, 0, 1):
                value = {0: 1.0, 1: e2, 2: e4}[dy * dy + dx * dx]
                y, x = cy + dy, cx + dx
                expected[y, x] = max(expected[y, x], value)
    assert torch.allclose(heat[0], expected, atol=1e-6)
    # e.g. cell (y=2, x=4): diagonal of the first (e^-4), edge of the second (e^-2) -> e^-2.
    assert abs(heat[0, 2, 4].item() - e2) < 1e-6
    assert heat[0, 3, 5].item() > 0 and heat[0, 3, 6].item() == 0
    assert heat[1, 3, 3].item() == 1
    assert abs(heat[1, 3, 4].item() - e2) < 1e-6 and heat[1, 3, 5].item() == 0


def test_heatmap_of_an_image_without_objects_is_zero():
    heat = heatmap_targets(torch.zeros((0, 4)), torch.zeros((0,), dtype=torch.long), 3, 4, (5, 6))
    assert heat.shape == (3, 5, 6) and heat.abs().sum() == 0


def test_focal_loss_by_hand():
    # p = (0.5, 0.75), targets (1, 0.5): one centre.
    logits = torch.tensor([0.0, math.log(3.0)]).view(1, 1, 1, 2)
    targets = torch.tensor([1.0, 0.5]).view(1, 1, 1, 2)
    positive = (1 - 0.5) ** 2 * -math.log(0.5)
    negative = (1 - 0.5) ** 4 * 0.75**2 * -math.log(1 - 0.75)
    loss = center_focal_loss(logits, targets, alpha=2, beta=4)
    assert abs(loss.item() - (positive + negative)) < 1e-6
    # Without centres, the sum is divided by 1.
    loss = center_focal_loss(logits, torch.tensor([0.0, 0.5]).view(1, 1, 1, 2))
    assert abs(loss.item() - (0.5**2 * -math.log(0.5) + negative)) < 1e-6


def _image_with_masks(masks, classes):
    inst = Instances(tuple(masks.shape[1:]))
    inst.gt_boxes = Boxes(torch.zeros((len(masks), 4)))
    inst.gt_classes = torch.tensor(classes)
    inst.gt_masks = BitMasks(masks)
    return inst


def test_mask_targets_are_cell_coverage_fractions_for_bitmasks_and_polygons():
    # An 8 x 6 image padded to 8 x 8, stride 4: rows 0-3, cols 0-1 cover half of cell (0, 0).
    mask = torch.zeros((1, 8, 6), dtype=torch.bool)
    mask[0, 0:4, 0:2] = True
    targets = mask_targets([_image_with_masks(mask, [0])], (8, 8), 4)
    assert torch.allclose(targets, torch.tensor([[[0.5, 0.0], [0.0, 0.0]]]))
    polygon = Instances((8, 6))
    polygon.gt_boxes = Boxes(torch.zeros((1, 4)))
    polygon.gt_classes = torch.tensor([0])
    polygon.gt_masks = PolygonMasks([[[0.0, 0.0, 2.0, 0.0, 2.0, 4.0, 0.0, 4.0]]])
    assert torch.allclose(mask_targets([polygon], (8, 8), 4), targets)


def test_saliency_targets_are_the_union_of_each_class():
    masks = torch.zeros((3, 4, 4), dtype=torch.bool)
    masks[0, 0, 0] = masks[1, 3, 3] = masks[2, 0, 3] = True
    inst = _image_with_masks(masks, [1, 1, 0])
    targets = mask_targets([inst], (4, 4), 1)
    union = ShapeSaliencyMaskHead._class_union(targets, [inst], torch.Size((1, 2, 4, 4)))
    assert union[0, 1].nonzero().tolist() == [[0, 0], [3, 3]]
    assert union[0, 0].nonzero().tolist() == [[0, 3]]
    logits = torch.zeros((1, 2, 4, 4))
    assert abs(saliency_loss(logits, union).item() - math.log(2)) < 1e-6


def test_mask_loss_is_averaged_inside_each_box_then_over_instances():
    probs = torch.tensor([[[0.5, 0.8, 0.3]], [[0.9, 0.1, 0.1]]])
    targets = torch.tensor([[[1.0, 0.0, 1.0]], [[1.0, 1.0, 1.0]]])
    inside = torch.tensor([[[True, True, False]], [[True, False, False]]])
    first = (-math.log(0.5) - math.log(0.2)) / 2
    second = -math.log(0.9)
    loss = assembled_mask_loss(probs, targets, inside)
    assert abs(loss.item() - (first + second) / 2) < 1e-5
