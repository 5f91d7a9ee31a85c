"""Batched mask pasting gives detectron2's paste_masks_in_image results bit for bit."""

import pytest
import torch
from detectron2.layers import paste_masks_in_image

from centermask.layers.mask_paste import paste_masks_batched, paste_regions


def random_boxes(generator, count, height, width, max_side):
    corner = torch.rand(count, 2, generator=generator) * torch.tensor([width, height]) - 10
    side = torch.rand(count, 2, generator=generator) ** 3 * max_side + 0.01
    boxes = torch.cat([corner, corner + side], dim=1)
    # Postprocessed boxes are clipped to the image.
    boxes[:, 0::2] = boxes[:, 0::2].clamp(0, width)
    boxes[:, 1::2] = boxes[:, 1::2].clamp(0, height)
    return boxes


@pytest.mark.parametrize("seed", range(6))
def test_same_masks_as_detectron2(seed):
    generator = torch.Generator().manual_seed(seed)
    height, width = 97, 131
    boxes = random_boxes(generator, 40, height, width, max_side=150)
    masks = torch.rand(40, 28, 28, generator=generator)
    expected = paste_masks_in_image(masks, boxes, (height, width))
    assert torch.equal(paste_masks_batched(masks, boxes, (height, width)), expected)


def test_thin_full_image_and_degenerate_boxes():
    boxes = torch.tensor(
        [[0.0, 0.0, 64.0, 48.0], [10.2, 10.7, 10.3, 30.0], [5.0, 5.0, 5.0, 5.0], [63.5, 0, 64, 1]]
    )
    masks = torch.rand(4, 28, 28, generator=torch.Generator().manual_seed(0))
    expected = paste_masks_in_image(masks, boxes, (48, 64))
    assert torch.equal(paste_masks_batched(masks, boxes, (48, 64)), expected)


def test_no_masks_and_memory_bounded_groups(monkeypatch):
    assert paste_masks_batched(torch.zeros(0, 28, 28), torch.zeros(0, 4), (5, 6)).shape == (0, 5, 6)
    import centermask.layers.mask_paste as mask_paste

    monkeypatch.setattr(mask_paste, "_MAX_PIXELS_PER_GROUP", 500)  # forces one mask per group
    generator = torch.Generator().manual_seed(1)
    boxes = random_boxes(generator, 12, 40, 50, max_side=40)
    masks = torch.rand(12, 14, 14, generator=generator)
    expected = paste_masks_in_image(masks, boxes, (40, 50))
    assert torch.equal(paste_masks_batched(masks, boxes, (40, 50)), expected)


def test_paste_regions_grow_boxes_by_one_pixel_inside_the_image():
    regions = paste_regions(torch.tensor([[0.5, 2.2, 10.1, 7.0], [90.0, 1.0, 99.5, 3.0]]), (8, 100))
    assert regions.tolist() == [[0, 1, 12, 8], [89, 0, 100, 4]]
