"""CenterMask-PR mask assembly and inference decoding against hand computations."""

import math

import pytest
import torch
from detectron2.structures import Boxes, Instances

from centermask.modeling.centermask_pr.assembly import (
    assemble_masks,
    box_windows,
    full_map,
    inside_box,
)
from centermask.modeling.centermask_pr.inference import (
    decode_boxes,
    extract_peaks,
    interpolation_matrix,
    maskness,
    masks_to_image,
)
from centermask.modeling.centermask_pr.mask_head import ShapeSaliencyMaskHead


def _sigmoid(x: float) -> float:
    return 1 / (1 + math.exp(-x))


def test_assembly_multiplies_local_shape_and_saliency_inside_the_box_only():
    # 4 x 4 map of stride 2 (8 x 8 input); box (2, 2, 6, 6) px = cells 1..2 in x and y, so the
    # 2 x 2 shape lands on the box unchanged.
    shape = torch.tensor([[[1.0, -1.0], [2.0, 0.0]]])
    saliency = torch.arange(16, dtype=torch.float32).view(1, 4, 4) / 8 - 1
    box = torch.tensor([[2.0, 2.0, 6.0, 6.0]])
    masks = assemble_masks(box, shape, saliency, *full_map(1, 4, 4), 2)
    expected = torch.zeros(4, 4)
    for i in range(2):
        for j in range(2):
            g = saliency[0, 1 + i, 1 + j].item()
            expected[1 + i, 1 + j] = _sigmoid(shape[0, i, j].item()) * _sigmoid(g)
    assert torch.allclose(masks[0], expected, atol=1e-6)


def test_local_shape_is_resized_bilinearly_to_the_box():
    # S = 2 shape [[0, 4], [0, 4]] into a 4-cell-wide, 2-cell-high box: the columns read source
    # x = (o + 0.5) / 2 - 0.5 = -0.25 (clamped to 0), 0.25, 0.75, 1.25 (clamped to 1), i.e.
    # values 0, 1, 3, 4; local-only model, so the mask is sigmoid of that.
    shape = torch.tensor([[[0.0, 4.0], [0.0, 4.0]]])
    masks = assemble_masks(torch.tensor([[0.0, 2.0, 4.0, 4.0]]), shape, None, *full_map(1, 4, 4), 1)
    row = torch.tensor([_sigmoid(v) for v in (0.0, 1.0, 3.0, 4.0)])
    assert torch.allclose(masks[0, 2:4], row.expand(2, 4), atol=1e-6)
    assert masks[0, :2].abs().sum() == 0


def test_global_only_mask_is_the_saliency_cropped_to_the_box():
    saliency = torch.randn(1, 3, 5)
    box = torch.tensor([[1.0, 0.0, 3.0, 2.0]])
    masks = assemble_masks(box, None, saliency, *full_map(1, 3, 5), 1)
    expected = torch.zeros(3, 5)
    expected[0:2, 1:3] = saliency[0, 0:2, 1:3].sigmoid()
    assert torch.allclose(masks[0], expected)


@pytest.mark.parametrize("stride", [1, 2, 4])
def test_masks_on_box_windows_equal_the_whole_map_read_there(stride):
    # Boxes of every size, on cell edges and off them, some past the map's border.
    generator = torch.Generator().manual_seed(stride)
    height, width = 10, 13
    corners = torch.rand(40, 2, 2, generator=generator) * torch.tensor([width, height]) * stride
    boxes = torch.cat([corners.amin(1), corners.amax(1)], dim=1)
    boxes[:5] = boxes[:5].round()
    boxes[5:8] += torch.tensor([-3.0, -3.0, 3.0, 3.0]) * stride
    shapes = torch.randn(40, 6, 6, generator=generator)
    saliency = torch.randn(40, height, width, generator=generator)
    whole = assemble_masks(boxes, shapes, saliency, *full_map(40, height, width), stride)
    rows, cols = box_windows(boxes, stride, (height, width))
    index = torch.arange(40)[:, None, None], rows[:, :, None], cols[:, None, :]
    windowed = assemble_masks(boxes, shapes, saliency[index], rows, cols, stride)
    assert torch.equal(windowed, whole[index])
    # Nothing of any mask lies outside its window.
    assert torch.isclose(windowed.sum((1, 2)), whole.sum((1, 2))).all()
    assert (whole.flatten(1) > 0).any(1).all()


def test_finer_mask_stride_assembles_on_bilinearly_upsampled_saliency():
    # Saliency 2 x 2 at stride 8 (16 x 16 input), masks at stride 4: the 4 x 4 grid's cell
    # centres 2, 6, 10, 14 px read source x = -0.25 (clamped to 0), 0.25, 0.75, 1.25 (clamped to
    # 1), so a row [a, b] becomes [a, 0.75a + 0.25b, 0.25a + 0.75b, b].
    head = ShapeSaliencyMaskHead(
        num_classes=1,
        shape_in_channels=4,
        saliency_in_feature="p3",
        saliency_in_channels=4,
        saliency_stride=8,
        mask_stride=4,
        mode="global",
    )
    assert head.mask_grid((2, 2)) == (4, 4)
    saliency = torch.tensor([[[[0.0, 4.0], [-4.0, 8.0]]]])
    detections = Instances((16, 16), pred_boxes=Boxes(torch.tensor([[0.0, 0.0, 16.0, 16.0]])))
    detections.pred_classes = torch.tensor([0])
    probs = head.predict_masks(saliency, (2, 2), [detections])[0].mask_probs
    weights = torch.tensor([[1.0, 0.0], [0.75, 0.25], [0.25, 0.75], [0.0, 1.0]])
    expected = (weights @ saliency[0, 0] @ weights.T).sigmoid()
    assert probs.shape == (1, 4, 4)
    assert torch.allclose(probs[0], expected, atol=1e-6)


@pytest.mark.parametrize("mask_stride", [3, 16, -2])
def test_mask_stride_must_divide_the_saliency_stride(mask_stride):
    with pytest.raises(ValueError, match="MASK_STRIDE.*stride 8, got " + str(mask_stride)):
        ShapeSaliencyMaskHead(
            num_classes=1,
            shape_in_channels=4,
            saliency_in_feature="p3",
            saliency_in_channels=4,
            saliency_stride=8,
            mask_stride=mask_stride,
        )


def test_a_box_smaller_than_a_cell_keeps_one_cell():
    # Centre 4.4 px, widened to [3.4, 5.4): holds the centre (5.0) of cell 2 on a stride-2 map.
    inside = inside_box(torch.tensor([[3.4, 3.4, 5.4, 5.4]]), *full_map(1, 4, 4), 2)
    assert inside[0].nonzero().tolist() == [[2, 2]]
    masks = assemble_masks(
        torch.tensor([[4.2, 4.2, 4.6, 4.6]]), None, torch.zeros(1, 4, 4), *full_map(1, 4, 4), 2
    )
    assert masks[0].nonzero().tolist() == [[2, 2]] and masks[0, 2, 2].item() == 0.5


def test_peaks_are_3x3_local_maxima_per_class_best_first():
    heat = torch.zeros(1, 2, 4, 4)
    heat[0, 0, 1, 1] = 0.9
    heat[0, 0, 1, 2] = 0.8  # beside a higher value of its class: not a peak
    heat[0, 0, 3, 3] = 0.7
    heat[0, 1, 1, 2] = 0.85  # same cell, other class: a peak
    image_index, scores, classes, ys, xs = extract_peaks(heat, 3)
    assert torch.allclose(scores, torch.tensor([0.9, 0.85, 0.7]))
    assert image_index.tolist() == [0, 0, 0] and classes.tolist() == [0, 1, 0]
    assert ys.tolist() == [1, 1, 3] and xs.tolist() == [1, 2, 3]
    # k larger than the peak count: every peak once; cells at 0 (and non-peaks) never.
    assert extract_peaks(heat, 100)[1].tolist() == pytest.approx([0.9, 0.85, 0.7])
    # min_score: only peaks above it, per image of a batch, image by image.
    other = torch.zeros(1, 2, 4, 4)
    other[0, 1, 2, 0] = 0.95
    image_index, scores, classes, ys, xs = extract_peaks(torch.cat([heat, other]), 2, 0.8)
    assert image_index.tolist() == [0, 0, 1] and classes.tolist() == [0, 1, 1]
    assert scores.tolist() == pytest.approx([0.9, 0.85, 0.95])
    assert ys.tolist() == [1, 1, 2] and xs.tolist() == [1, 2, 0]


def test_boxes_decode_from_cell_offset_and_size():
    # Cell (3, 2) + offset (0.5, 0.25) = centre (3.5, 2.25); size (4, 2) cells; stride 4.
    boxes = decode_boxes(
        torch.tensor([3]),
        torch.tensor([2]),
        torch.tensor([[0.5, 0.25]]),
        torch.tensor([[4.0, 2.0]]),
        4,
    )
    assert torch.allclose(boxes, torch.tensor([[6.0, 5.0, 22.0, 13.0]]))
    # A negative predicted size gives an empty box at the centre, not an inverted one.
    boxes = decode_boxes(
        torch.tensor([1]), torch.tensor([1]), torch.zeros(1, 2), torch.tensor([[-2.0, 1.0]]), 2
    )
    assert torch.allclose(boxes, torch.tensor([[2.0, 1.0, 2.0, 3.0]]))


def test_interpolation_matrix_by_hand_and_like_f_interpolate():
    weights = interpolation_matrix(4, 2, 0.5)
    expected = torch.tensor([[1.0, 0.0], [0.75, 0.25], [0.25, 0.75], [0.0, 1.0]])
    assert torch.allclose(weights, expected)
    grid = torch.rand(1, 1, 3, 5)
    ours = interpolation_matrix(7, 3, 3 / 7) @ grid[0, 0] @ interpolation_matrix(11, 5, 5 / 11).T
    theirs = torch.nn.functional.interpolate(
        grid, size=(7, 11), mode="bilinear", align_corners=False
    )
    assert torch.allclose(ours, theirs[0, 0], atol=1e-6)


def test_masks_map_back_to_the_original_image_through_the_padding():
    # Padded input 8 x 8 (2 x 2 cells of stride 4); the image is 4 x 8 input px and 4 x 8 in the
    # original. Rows read cell rows (o + 0.5) * 4 / 16 - 0.5 -> 0, 0, 0.125, 0.375 (clamped):
    # values 1, 1, 0.875, 0.625 for cell rows 1 and 0.
    probs = torch.tensor([[[1.0, 1.0], [0.0, 0.0]]])
    masks = masks_to_image(probs, 4, (4, 8), (4, 8), threshold=0.7)
    assert masks.dtype == torch.bool and masks.shape == (1, 4, 8)
    assert masks[0, :, 0].tolist() == [True, True, True, False]
    # Upscaled 2x into a 16 x 16 original from a full 8 x 8 input: F.interpolate's result.
    probs = torch.rand(3, 2, 2)
    masks = masks_to_image(probs, 4, (8, 8), (16, 16), threshold=0.4)
    resized = torch.nn.functional.interpolate(probs[:, None], size=(16, 16), mode="bilinear")
    assert torch.equal(masks, resized[:, 0] > 0.4)


def test_masks_resampled_near_their_box_equal_a_full_image_resampling():
    # Three masks on a 10 x 12 grid: nonzero in a box, at the border, and nowhere.
    probs = torch.zeros(3, 10, 12)
    probs[0, 3:6, 4:9] = torch.rand(3, 5) * 0.5 + 0.45
    probs[1, 8:, :2] = 0.9
    masks = masks_to_image(probs, 4, (37, 45), (50, 61), threshold=0.4)
    rows = interpolation_matrix(50, 10, 37 / (50 * 4))
    cols = interpolation_matrix(61, 12, 45 / (61 * 4))
    assert torch.equal(masks, (rows @ probs @ cols.T) > 0.4)
    assert masks[0].any() and masks[1].any() and not masks[2].any()


def test_maskness_is_the_mean_probability_of_the_kept_cells():
    probs = torch.tensor(
        [
            [[0.9, 0.5], [0.2, 0.0]],  # kept above 0.4: 0.9, 0.5 -> 0.7
            [[0.3, 0.1], [0.0, 0.4]],  # nothing above 0.4 -> 0
            [[1.0, 1.0], [1.0, 0.6]],  # all four -> 0.9
        ]
    )
    assert torch.allclose(maskness(probs, 0.4), torch.tensor([0.7, 0.0, 0.9]))
