"""CondInst's building blocks against hand computations: aligned_bilinear, the dynamic parameter
layout, the dynamic mask head, dice loss, GT rasterisation and centroids, the semantic head."""

import math

import numpy as np
import pytest
import torch
from detectron2.layers import ShapeSpec
from detectron2.structures import BitMasks, Boxes, Instances, PolygonMasks
from torch.nn import functional as F

from centermask.layers.aligned_bilinear import aligned_bilinear
from centermask.modeling.condinst.dynamic_mask_head import DynamicMaskHead, split_dynamic_params
from centermask.modeling.condinst.losses import dice_loss
from centermask.modeling.condinst.mask_branch import MaskBranch
from centermask.modeling.condinst.postprocess import paste_global_masks
from centermask.modeling.condinst.targets import (
    add_bitmasks,
    full_bitmasks,
    mask_centroids,
    semantic_targets,
)


def test_aligned_bilinear_samples_at_shifted_clamped_coordinates():
    # t(y, x) = 2y + x is linear, so a bilinear sample at (cy, cx) is exactly 2cy + cx.
    t = torch.tensor([[0.0, 1.0], [2.0, 3.0]])[None, None]
    out = aligned_bilinear(t, 2)
    # Output pixel i samples input coordinate (i - 1) / 2, clamped to [0, 1].
    coords = torch.tensor([0.0, 0.0, 0.5, 1.0])
    expected = 2 * coords[:, None] + coords[None, :]
    assert out.shape == (1, 1, 4, 4)
    torch.testing.assert_close(out[0, 0], expected)
    assert aligned_bilinear(t, 1) is t


def test_aligned_bilinear_rejects_bad_factors_and_shapes():
    with pytest.raises(ValueError, match="factor"):
        aligned_bilinear(torch.zeros(1, 1, 2, 2), 0)
    with pytest.raises(ValueError, match="N, C, H, W"):
        aligned_bilinear(torch.zeros(2, 2), 2)


def test_dynamic_params_are_all_weights_then_all_biases():
    params = torch.arange(169, dtype=torch.float32)[None]
    weights, biases = split_dynamic_params(params, in_channels=10, channels=8, num_layers=3)
    assert [tuple(w.shape) for w in weights] == [(1, 8, 10), (1, 8, 8), (1, 1, 8)]
    assert [tuple(b.shape) for b in biases] == [(1, 8, 1), (1, 8, 1), (1, 1, 1)]
    assert weights[0][0, 3].tolist() == list(range(30, 40))  # row o holds P[10o:10o+10]
    assert weights[1][0, 0, 0] == 80 and weights[2][0, 0, 0] == 144
    assert biases[0][0, :, 0].tolist() == list(range(152, 160)) and biases[2].item() == 168
    with pytest.raises(ValueError, match="169"):
        split_dynamic_params(params[:, :150], in_channels=10, channels=8, num_layers=3)


def test_dynamic_mask_head_equals_a_per_instance_fcn_with_relative_coordinates():
    torch.manual_seed(0)
    head = DynamicMaskHead(in_channels=3, channels=4, num_layers=2, mask_feat_stride=8)
    assert head.num_params == 5 * 4 + 4 * 1 + 4 + 1
    assert head.sizes_of_interest.tolist() == [64, 128, 256, 512, 1024]
    feats = torch.randn(2, 3, 3, 4)  # two images, stride 8 -> locations (8j+4, 8i+4)
    params = torch.randn(2, head.num_params)
    locations = torch.tensor([[20.0, 12.0], [4.0, 28.0]])
    levels, im_inds = torch.tensor([0, 2]), torch.tensor([1, 0])
    logits = head(feats, params, locations, levels, im_inds)
    assert logits.shape == (2, 1, 6, 8)  # x2 to stride 4
    for k in range(2):
        w0 = params[k, :20].reshape(4, 5)
        w1 = params[k, 20:24].reshape(1, 4)
        b0, b1 = params[k, 24:28], params[k, 28]
        soi = [64.0, 128.0, 256.0, 512.0, 1024.0][levels[k]]
        expected = torch.zeros(3, 4)
        for i in range(3):
            for j in range(4):
                rel = [(locations[k, 0] - (8 * j + 4)) / soi, (locations[k, 1] - (8 * i + 4)) / soi]
                x = torch.cat([torch.tensor(rel), feats[im_inds[k], :, i, j]])
                expected[i, j] = w1 @ torch.relu(w0 @ x + b0) + b1
        torch.testing.assert_close(logits[k, 0], aligned_bilinear(expected[None, None], 2)[0, 0])


def test_dynamic_mask_head_rejects_non_positive_sizes_of_interest():
    head = DynamicMaskHead(in_channels=1, channels=2, num_layers=2)
    head.sizes_of_interest.zero_()
    with pytest.raises(ValueError, match="sizes_of_interest"):
        head(torch.zeros(1, 1, 2, 2), torch.zeros(1, head.num_params), torch.zeros(1, 2),
             torch.zeros(1, dtype=torch.int64), torch.zeros(1, dtype=torch.int64))  # fmt: skip


def test_dice_loss_by_hand():
    probs = torch.tensor([[0.5, 1.0, 0.0, 0.25]])
    target = torch.tensor([[1.0, 1.0, 0.0, 0.0]])
    # 1 - 2 * 1.5 / (0.25 + 1 + 0 + 0.0625 + 2 + 1e-5)
    expected = 1 - 3.0 / (3.3125 + 1e-5)
    assert dice_loss(probs, target).item() == pytest.approx(expected, rel=1e-6)


def test_polygon_and_bitmask_gt_rasterise_on_the_padded_canvas():
    polygons = PolygonMasks([[np.array([0.0, 0.0, 4.0, 0.0, 4.0, 4.0, 0.0, 4.0])]])
    full = full_bitmasks(polygons, (8, 12), torch.device("cpu"))
    assert full.shape == (1, 8, 12) and full.dtype == torch.float32
    assert full[0, :4, :4].all() and full[0, 5:].sum() == 0 and full[0, :, 5:].sum() == 0
    bits = BitMasks(torch.ones(1, 6, 10, dtype=torch.bool))
    padded = full_bitmasks(bits, (8, 12), torch.device("cpu"))
    assert padded[0, :6, :10].all() and padded.sum() == 60
    assert full_bitmasks(PolygonMasks([]), (8, 12), torch.device("cpu")).shape == (0, 8, 12)
    with pytest.raises(ValueError, match="larger than the padded image"):
        full_bitmasks(
            BitMasks(torch.ones(1, 9, 10, dtype=torch.bool)), (8, 12), torch.device("cpu")
        )


def test_centroids_stride4_sampling_and_empty_images():
    mask = torch.zeros(1, 8, 8)
    mask[0, 2:4, 1:6] = 1  # columns 1..5 (mean 3), rows 2, 3 (mean 2.5)
    torch.testing.assert_close(mask_centroids(mask), torch.tensor([[3.0, 2.5]]))
    gt = Instances((8, 8), gt_boxes=Boxes(torch.tensor([[1.0, 2.0, 6.0, 4.0]])),
                   gt_masks=BitMasks(mask.bool()), gt_classes=torch.tensor([0]))  # fmt: skip
    empty = Instances((8, 8), gt_boxes=Boxes(torch.zeros(0, 4)), gt_masks=PolygonMasks([]),
                      gt_classes=torch.zeros(0, dtype=torch.int64))  # fmt: skip
    add_bitmasks([gt, empty], (8, 8), mask_out_stride=4)
    # Sampled pixels (row, col) in {2, 6} x {2, 6}: only (2, 2) lies in the mask.
    assert gt.gt_bitmasks.tolist() == [[[1.0, 0.0], [0.0, 0.0]]]
    assert empty.gt_bitmasks.shape == (0, 2, 2) and empty.gt_centers.shape == (0, 2)


def _semantic_gt():
    """Two overlapping masks on a 16x16 canvas: a big one (class 2) and a small one (class 0)."""
    big, small = torch.zeros(16, 16), torch.zeros(16, 16)
    big[0:12, 0:12] = 1
    small[2:6, 2:14] = 1
    gt = Instances((16, 16), gt_classes=torch.tensor([2, 0]))
    gt.gt_bitmasks_full = torch.stack([big, small])
    return gt


def test_semantic_targets_take_the_smallest_covering_mask():
    # Sampled pixels (4 + 8k): (4, 4) both masks -> small (class 0 + 1); (4, 12) small only;
    # (12, 4) and (12, 12) outside both (the big mask ends at 11).
    targets = semantic_targets([_semantic_gt()], stride=8)
    assert targets.tolist() == [[[1, 1], [0, 0]]]


def test_semantic_head_loss_equals_a_hand_focal_loss():
    torch.manual_seed(0)
    # A 16x16 padded canvas: P3 (stride 8) is 2x2, P4 1x1.
    shapes = {"p3": ShapeSpec(channels=32, stride=8), "p4": ShapeSpec(channels=32, stride=16)}
    branch = MaskBranch(input_shape=shapes, in_features=("p3", "p4"), channels=32,
                        out_channels=4, num_convs=1, norm="none", semantic_loss_on=True,
                        num_classes=3)  # fmt: skip
    features = {"p3": torch.randn(1, 32, 2, 2), "p4": torch.randn(1, 32, 1, 1)}
    branch.train()
    gt = _semantic_gt()
    mask_feats, losses = branch(features, [gt])
    assert mask_feats.shape == (1, 4, 2, 2) and list(losses) == ["loss_sem"]
    logits = branch.logits(branch.seg_head(features["p3"]))  # (1, 3, 2, 2)
    one_hot = torch.zeros_like(logits)
    one_hot[0, 0, 0, 0] = one_hot[0, 0, 0, 1] = 1  # targets [[1, 1], [0, 0]]: class 0 twice
    p = logits.sigmoid()
    p_t = torch.where(one_hot > 0, p, 1 - p)
    alpha_t = torch.where(one_hot > 0, torch.tensor(0.25), torch.tensor(0.75))
    hand = (-alpha_t * (1 - p_t) ** 2 * torch.log(p_t)).sum() / 2
    assert losses["loss_sem"].item() == pytest.approx(hand.item(), rel=1e-5)
    assert branch.logits.bias[0].item() == pytest.approx(-math.log(99))
    branch.eval()
    assert branch(features, [gt])[1] == {}  # the semantic head never runs at inference


@pytest.mark.parametrize(
    "padded, resized, output",
    [((608, 800), (600, 800), (480, 640)), ((800, 1216), (800, 1067), (427, 640)),
     ((96, 128), (70, 100), (200, 300)), ((128, 160), (128, 160), (128, 160))],
)  # fmt: skip
def test_mask_pasting_equals_condinsts_upsample_crop_resize_chain(padded, resized, output):
    torch.manual_seed(0)
    probs = torch.rand(6, 1, padded[0] // 4, padded[1] // 4)
    probs = F.avg_pool2d(F.pad(probs, (2, 2, 2, 2), mode="replicate"), 5, stride=1)  # smooth
    # The reference's chain, step by step.
    chain = aligned_bilinear(probs, 4)[:, :, : resized[0], : resized[1]]
    chain = F.interpolate(chain, size=output, mode="bilinear", align_corners=False)[:, 0]
    masks = paste_global_masks(probs, resized, output, padded)
    assert masks.dtype == torch.bool and masks.shape == (6, *output)
    differ = masks ^ (chain > 0.5)
    # Only float rounding: pixels whose probability is within 1e-5 of the threshold.
    assert ((chain[differ] - 0.5).abs() < 1e-5).all() and differ.sum() <= 10
    assert paste_global_masks(probs[:0], resized, output, padded).shape == (0, *output)
