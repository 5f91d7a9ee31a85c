"""FCOS target assignment on hand-made cases, and against a plain per-GT loop."""

import pytest
import torch
from detectron2.structures import Boxes, Instances

from centermask.modeling.fcos.targets import (
    compute_locations_per_level,
    fcos_targets,
    fcos_targets_per_image,
    size_ranges_for_levels,
)

NUM_CLASSES = 5
UNBOUNDED = [[-1.0, 1e8]]


def _assign(points, boxes, classes=None, stride=8, ranges=UNBOUNDED, center_sample=True):
    """Targets of one image with a single level made of the given points."""
    boxes = torch.tensor(boxes, dtype=torch.float32).reshape(-1, 4)
    if classes is None:
        classes = list(range(len(boxes)))
    return fcos_targets_per_image(
        [torch.tensor(points, dtype=torch.float32)],
        [stride],
        [tuple(ranges[0])],
        boxes,
        torch.tensor(classes, dtype=torch.int64),
        num_classes=NUM_CLASSES,
        center_sample=center_sample,
        radius=1.5,
    )


def test_locations_are_cell_centres_row_major():
    loc = compute_locations_per_level(2, 3, 16, torch.device("cpu"))
    expected = [[8, 8], [24, 8], [40, 8], [8, 24], [24, 24], [40, 24]]
    assert loc.tolist() == expected


def test_size_ranges_from_sizes_of_interest():
    assert size_ranges_for_levels([64, 128, 256, 512]) == [
        (-1.0, 64.0),
        (64.0, 128.0),
        (128.0, 256.0),
        (256.0, 512.0),
        (512.0, 1e8),
    ]


def test_center_sampling_region_is_strict_and_radius_times_stride():
    # Box centre x = 100, radius 1.5 * stride 8 = 12: the region is the open interval (88, 112).
    box = [40.0, 40.0, 160.0, 160.0]
    xs = [88.0, 88.5, 100.0, 111.5, 112.0]
    labels, _ = _assign([[x, 100.0] for x in xs], [box], classes=[2])
    assert labels.tolist() == [NUM_CLASSES, 2, 2, 2, NUM_CLASSES]


def test_center_sampling_region_is_clipped_to_the_box():
    # A 10 px box: the +-12 px region is clipped to the box, and the box edge itself is outside.
    box = [95.0, 95.0, 105.0, 105.0]
    xs = [95.0, 95.5, 104.5, 105.0]
    labels, _ = _assign([[x, 100.0] for x in xs], [box], classes=[1])
    assert labels.tolist() == [NUM_CLASSES, 1, 1, NUM_CLASSES]


def test_without_center_sampling_any_point_strictly_inside_is_positive():
    box = [40.0, 40.0, 160.0, 160.0]
    xs = [40.0, 41.0, 150.0, 160.0]
    labels, _ = _assign([[x, 100.0] for x in xs], [box], classes=[3], center_sample=False)
    assert labels.tolist() == [NUM_CLASSES, 3, 3, NUM_CLASSES]


def test_size_ranges_are_inclusive_at_both_ends():
    # Largest distance is exactly 64: positive on P3 [-1, 64] and on P4 [64, 128].
    box = [36.0, 60.0, 164.0, 140.0]
    point = [[100.0, 100.0]]
    for ranges, positive in [
        ([[-1.0, 64.0]], True),
        ([[64.0, 128.0]], True),
        ([[-1.0, 63.99]], False),
        ([[64.01, 128.0]], False),
    ]:
        labels, _ = _assign(point, [box], classes=[4], ranges=ranges)
        assert (labels.item() == 4) == positive, ranges


def test_ambiguous_location_takes_the_smallest_box_in_any_order():
    big, small = [0.0, 0.0, 200.0, 200.0], [90.0, 90.0, 110.0, 110.0]
    point = [[100.0, 100.0]]
    for boxes, classes in [([big, small], [0, 1]), ([small, big], [1, 0])]:
        labels, reg = _assign(point, boxes, classes=classes, center_sample=False)
        assert labels.item() == 1
        torch.testing.assert_close(reg, torch.tensor([[10.0, 10.0, 10.0, 10.0]]) / 8)


def test_box_out_of_the_level_range_leaves_the_larger_box():
    # The small box is too small for this level, so the location goes to the big box.
    big, small = [0.0, 0.0, 200.0, 200.0], [90.0, 90.0, 110.0, 110.0]
    labels, _ = _assign(
        [[100.0, 100.0]], [small, big], classes=[1, 0], ranges=[[64.0, 128.0]], center_sample=False
    )
    assert labels.item() == 0


def test_regression_targets_are_divided_by_the_stride():
    labels, reg = _assign([[100.0, 100.0]], [[60.0, 80.0, 130.0, 150.0]], stride=16)
    assert labels.item() == 0
    torch.testing.assert_close(reg, torch.tensor([[40.0, 20.0, 30.0, 50.0]]) / 16)


def test_image_without_gt_is_all_background_with_zero_regression():
    labels, reg = _assign([[4.0, 4.0], [12.0, 4.0]], [], classes=[])
    assert labels.tolist() == [NUM_CLASSES, NUM_CLASSES]
    assert reg.shape == (2, 4) and reg.abs().sum() == 0


def test_box_centred_on_x_zero_still_gets_positives():
    # The original treated "first box centre x == 0" as "no GT" and made the whole image
    # background; a box straddling the left edge is a real object.
    labels, _ = _assign([[4.0, 20.0], [4.0, 100.0]], [[-10.0, 0.0, 10.0, 40.0]], classes=[3])
    assert labels.tolist() == [3, NUM_CLASSES]


def _loop_reference(locations, strides, ranges, boxes, classes, radius):
    """Plain loops over locations and GT boxes, straight from the behaviour description."""
    labels, regs = [], []
    for (x, y), s, (lo, hi) in zip(locations.tolist(), strides.tolist(), ranges.tolist()):
        best_area, best = float("inf"), None
        for (x0, y0, x1, y1), c in zip(boxes.tolist(), classes.tolist()):
            cx, cy = (x0 + x1) / 2, (y0 + y1) / 2
            rx0, ry0 = max(cx - s * radius, x0), max(cy - s * radius, y0)
            rx1, ry1 = min(cx + s * radius, x1), min(cy + s * radius, y1)
            inside = min(x - rx0, y - ry0, rx1 - x, ry1 - y) > 0
            dist = (x - x0, y - y0, x1 - x, y1 - y)
            area = (x1 - x0) * (y1 - y0)
            if inside and lo <= max(dist) <= hi and area < best_area:
                best_area, best = area, (c, [d / s for d in dist])
        labels.append(NUM_CLASSES if best is None else best[0])
        regs.append(None if best is None else best[1])
    return labels, regs


def test_vectorised_assignment_equals_a_per_box_loop_on_random_boxes():
    g = torch.Generator().manual_seed(3)
    grid = [(16, 20, 8), (8, 10, 16), (4, 5, 32)]
    locations = [compute_locations_per_level(h, w, s, torch.device("cpu")) for h, w, s in grid]
    xy = torch.rand(12, 2, generator=g) * torch.tensor([160.0, 128.0])
    wh = torch.rand(12, 2, generator=g) * 120 + 4
    boxes = torch.cat([xy - wh / 2, xy + wh / 2], dim=1)
    classes = torch.randint(0, NUM_CLASSES, (12,), generator=g)
    instances = Instances((128, 160), gt_boxes=Boxes(boxes), gt_classes=classes)
    ranges = size_ranges_for_levels([32, 64])
    labels, reg = fcos_targets(
        locations,
        [instances],
        strides=[8, 16, 32],
        size_ranges=ranges,
        num_classes=NUM_CLASSES,
        radius=1.5,
    )
    all_loc = torch.cat(locations)
    strides = torch.cat([torch.full((len(l),), float(s)) for l, s in zip(locations, [8, 16, 32])])
    loc_ranges = torch.cat([torch.tensor([r]).expand(len(l), 2) for l, r in zip(locations, ranges)])
    ref_labels, ref_regs = _loop_reference(all_loc, strides, loc_ranges, boxes, classes, 1.5)
    assert labels[0].tolist() == ref_labels
    positives = [i for i, lab in enumerate(ref_labels) if lab != NUM_CLASSES]
    assert len(positives) > 20
    torch.testing.assert_close(reg[0, positives], torch.tensor([ref_regs[i] for i in positives]))


def test_batch_targets_have_one_row_per_image_and_handle_empty_images():
    locations = [compute_locations_per_level(4, 4, 8, torch.device("cpu"))]
    full = Instances(
        (32, 32),
        gt_boxes=Boxes(torch.tensor([[0.0, 0.0, 32.0, 32.0]])),
        gt_classes=torch.tensor([2]),
    )
    empty = Instances((32, 32), gt_boxes=Boxes(torch.zeros(0, 4)), gt_classes=torch.zeros(0).long())
    labels, reg = fcos_targets(
        locations, [full, empty], strides=[8], size_ranges=[(-1, 1e8)], num_classes=NUM_CLASSES
    )
    assert labels.shape == (2, 16) and reg.shape == (2, 16, 4)
    assert (labels[0] == 2).sum() == 4  # the 2x2 cells within 12 px of the centre (16, 16)
    assert (labels[1] == NUM_CLASSES).all()


def test_too_few_size_ranges_is_an_error_naming_the_key():
    locations = [compute_locations_per_level(2, 2, 8, torch.device("cpu"))] * 2
    with pytest.raises(ValueError, match="SIZES_OF_INTEREST"):
        fcos_targets(locations, [], strides=[8, 16], size_ranges=[(-1, 64)], num_classes=3)
