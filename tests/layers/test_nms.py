"""Early-stopping class-aware NMS keeps what batched_nms + top-k (with ties) keeps."""

import pytest
import torch
from detectron2.structures import Instances
from torchvision.ops import batched_nms

from centermask.layers.nms import VANILLA_NMS_MIN_BOXES, batched_nms_topk
from centermask.modeling.fcos.inference import keep_top_k_with_ties


def reference(boxes, scores, classes, threshold, k):
    keep = batched_nms(boxes, scores, classes, threshold)
    kept = Instances((1, 1), scores=scores[keep], index=keep)
    return keep_top_k_with_ties(kept, k).index


def candidates(seed, count, num_classes, spread=300.0):
    generator = torch.Generator().manual_seed(seed)
    corner = torch.rand(count, 2, generator=generator) * spread
    boxes = torch.cat([corner, corner + torch.rand(count, 2, generator=generator) * 60 + 1], 1)
    scores = torch.rand(count, generator=generator)
    classes = torch.randint(0, num_classes, (count,), generator=generator)
    return boxes, scores, classes


@pytest.mark.parametrize("count, num_classes", [(1500, 80), (5000, 80), (3000, 3), (400, 80)])
@pytest.mark.parametrize("k", [50, 100, 0])
def test_same_detections_in_the_same_order(count, num_classes, k):
    boxes, scores, classes = candidates(count + k, count, num_classes)
    expected = reference(boxes, scores, classes, 0.6, k)
    assert torch.equal(batched_nms_topk(boxes, scores, classes, 0.6, k), expected)


def test_tied_scores_keep_the_same_set():
    boxes, scores, classes = candidates(7, 3000, 5)
    scores = (scores * 20).round() / 20
    expected = reference(boxes, scores, classes, 0.5, 50)
    kept = batched_nms_topk(boxes, scores, classes, 0.5, 50)
    assert sorted(kept.tolist()) == sorted(expected.tolist())
    assert torch.equal(scores[kept], scores[expected])


def test_iou_equal_to_the_float32_threshold_is_compared_in_float64():
    # IoU 6/10 rounds to float32(0.6) > 0.6 (double): torchvision's kernel suppresses the box,
    # a float32 comparison would keep it.
    count = VANILLA_NMS_MIN_BOXES
    boxes = torch.tensor([[0.0, 0.0, 10.0, 1.0]]).repeat(count, 1)
    boxes += torch.arange(count).repeat_interleave(4).reshape(-1, 4) * 100.0
    boxes[1] = torch.tensor([0.0, 0.0, 6.0, 1.0])
    scores = torch.linspace(1.0, 0.1, count)
    classes = torch.zeros(count, dtype=torch.int64)
    expected = reference(boxes, scores, classes, 0.6, 0)
    assert 1 not in expected.tolist()
    assert torch.equal(batched_nms_topk(boxes, scores, classes, 0.6, 0), expected)
