"""CenterROIHeads and its parts: level assignment, pooler, SAG-Mask, MaskIoU, GT appending."""

import math

import numpy as np
import pytest
import torch
from detectron2.layers import ShapeSpec
from detectron2.modeling.poolers import ROIPooler
from detectron2.modeling.roi_heads import build_roi_heads
from detectron2.structures import BitMasks, Boxes, Instances, Keypoints, PolygonMasks
from detectron2.structures.masks import polygons_to_bitmask
from detectron2.utils.events import EventStorage

from centermask.modeling.roi_heads import (
    AdaptiveROIPooler,
    CenterROIHeads,
    MaskIoUHead,
    SpatialAttention,
    SpatialAttentionMaskHead,
    assign_levels_by_area,
    assign_levels_by_ratio,
)
from centermask.modeling.roi_heads.mask_head import class_mask_logits, mask_loss
from centermask.modeling.roi_heads.maskiou_head import (
    mask_areas,
    mask_areas_inside_boxes,
    maskiou_inference,
    maskiou_loss,
    maskiou_targets,
)
from centermask.modeling.roi_heads.proposal_utils import (
    GT_PROPOSAL_SCORE,
    add_ground_truth_to_detections,
    detections_to_proposals,
)
from tests.support.helpers import CONFIGS, get_config, spec_keys

LITE_YAML = CONFIGS / "centermask_lite_V_19_slim_dw_eSE_FPN_ms_4x.yaml"
STRIDES = {"p2": 4, "p3": 8, "p4": 16, "p5": 32, "p6": 64, "p7": 128}


def feature_shapes(channels, names=("p3", "p4", "p5", "p6", "p7")):
    return {n: ShapeSpec(channels=channels, stride=STRIDES[n]) for n in names}


# ------------------------------------------------------------------------------------------ #
# Level assignment
# ------------------------------------------------------------------------------------------ #
def ratio_levels(boxes, image_size=(100, 100)):
    return assign_levels_by_ratio(
        [Boxes(torch.tensor(boxes, dtype=torch.float32))], [image_size], 3, 5
    ).tolist()


def test_ratio_assignment_boundaries_of_eq2():
    # Image area 10000: > 1/2 -> P5, (1/4, 1/2] -> P4, <= 1/4 -> P3 (indices relative to P3).
    boxes = [
        [0, 0, 100, 100],  # whole image
        [0, 0, 50, 100],  # exactly 1/2
        [0, 0, 50.5, 100],  # just above 1/2
        [0, 0, 25, 100],  # exactly 1/4
        [0, 0, 25.5, 100],  # just above 1/4
        [0, 0, 1, 1],  # tiny
    ]
    assert ratio_levels(boxes) == [2, 1, 2, 0, 1, 0]


def test_ratio_assignment_sends_zero_area_boxes_to_p3():
    assert ratio_levels([[10, 10, 10, 50], [5, 5, 5, 5]]) == [0, 0]


def test_ratio_assignment_uses_per_image_unpadded_size_and_unclipped_boxes():
    box = Boxes(torch.tensor([[0.0, 0.0, 60.0, 100.0]]))
    levels = assign_levels_by_ratio([box, box], [(100, 100), (200, 200)], 3, 5)
    assert levels.tolist() == [2, 0]  # 60% of the first image, 15% of the second
    outside = Boxes(torch.tensor([[-50.0, -50.0, 50.0, 50.0]]))  # 1/4 inside, area counts whole
    assert assign_levels_by_ratio([outside], [(100, 100)], 3, 5).tolist() == [2]


def test_area_assignment_is_the_fpn_rule():
    boxes = Boxes(
        torch.tensor([[0, 0, 223, 223], [0, 0, 224, 224], [0, 0, 448, 448], [0, 0, 0, 0]])
    )
    assert assign_levels_by_area([boxes], 3, 5).tolist() == [0, 1, 2, 0]


def test_pooler_requires_image_sizes_for_ratio():
    pooler = AdaptiveROIPooler(7, (1 / 8, 1 / 16), 0, "ROIAlignV2", assign_criterion="ratio")
    x = [torch.zeros(1, 2, 8, 8), torch.zeros(1, 2, 4, 4)]
    with pytest.raises(ValueError, match="image_sizes"):
        pooler(x, [Boxes(torch.tensor([[0.0, 0.0, 8.0, 8.0]]))])
    with pytest.raises(ValueError, match="ASSIGN_CRITERION"):
        AdaptiveROIPooler(7, (1 / 8,), 0, "ROIAlignV2", assign_criterion="size")


def test_ratio_pooler_pools_each_box_from_its_assigned_level():
    torch.manual_seed(0)
    x = [torch.randn(2, 3, 16, 16), torch.randn(2, 3, 8, 8), torch.randn(2, 3, 4, 4)]
    pooler = AdaptiveROIPooler(5, (1 / 8, 1 / 16, 1 / 32), 0, "ROIAlignV2")
    boxes = [
        Boxes(torch.tensor([[0.0, 0.0, 128.0, 128.0], [8.0, 8.0, 24.0, 40.0]])),
        Boxes(torch.tensor([[4.0, 4.0, 60.0, 80.0]])),
    ]
    out = pooler(x, boxes, [(128, 128), (100, 100)])
    assert out.shape == (3, 3, 5, 5)
    # Box 0 covers the whole image (P5), box 1 is small (P3), box 2 covers 45% (P4).
    for row, (image, level, box) in enumerate(
        [(0, 2, boxes[0].tensor[0]), (0, 0, boxes[0].tensor[1]), (1, 1, boxes[1].tensor[0])]
    ):
        single = ROIPooler(5, (1 / 2 ** (3 + level),), 0, "ROIAlignV2")
        one_image = [x[level][image : image + 1]]
        expected = single(one_image, [Boxes(box[None])])
        torch.testing.assert_close(out[row : row + 1], expected, rtol=0, atol=0)


def test_area_pooler_matches_detectron2_pooler():
    torch.manual_seed(0)
    x = [torch.randn(1, 2, 64, 64), torch.randn(1, 2, 32, 32), torch.randn(1, 2, 16, 16)]
    boxes = [Boxes(torch.tensor([[0.0, 0.0, 500.0, 500.0], [0, 0, 300, 250], [3, 4, 40, 50]]))]
    ours = AdaptiveROIPooler(7, (1 / 8, 1 / 16, 1 / 32), 0, "ROIAlignV2", assign_criterion="area")
    theirs = ROIPooler(7, (1 / 8, 1 / 16, 1 / 32), 0, "ROIAlignV2")
    torch.testing.assert_close(ours(x, boxes), theirs(x, boxes), rtol=0, atol=0)


# ------------------------------------------------------------------------------------------ #
# SAG-Mask and mask loss
# ------------------------------------------------------------------------------------------ #
def test_spatial_attention_reweights_by_sigmoid_of_mean_and_max():
    torch.manual_seed(0)
    sam = SpatialAttention()
    x = torch.randn(2, 5, 6, 6)
    descriptor = torch.cat([x.mean(1, keepdim=True), x.max(1, keepdim=True)[0]], dim=1)
    expected = x * torch.sigmoid(torch.nn.functional.conv2d(descriptor, sam.conv.weight, padding=1))
    torch.testing.assert_close(sam(x), expected)
    assert sam.conv.bias is None
    assert sam(torch.zeros(0, 5, 6, 6)).shape == (0, 5, 6, 6)


def test_sag_mask_head_layers_and_order():
    torch.manual_seed(0)
    head = SpatialAttentionMaskHead(
        ShapeSpec(channels=6, height=14, width=14), num_classes=3, conv_dims=[4, 4, 5]
    )
    names = [n for n, _ in head.named_children()]
    assert names == ["mask_fcn1", "mask_fcn2", "spatialAtt", "deconv", "predictor"]
    x = torch.randn(2, 6, 14, 14)
    expected = head.spatialAtt(head.mask_fcn2(head.mask_fcn1(x)))
    expected = head.predictor(torch.relu(head.deconv(expected)))
    out = head.layers(x)
    assert out.shape == (2, 3, 28, 28)
    torch.testing.assert_close(out, expected)
    assert float(head.predictor.weight.detach().std()) < 0.01 and not head.predictor.bias.any()


def test_mask_loss_is_mean_bce_of_gt_class_and_logs_accuracy():
    logits = torch.tensor([[[[2.0, -1.0]], [[-3.0, 4.0]]]])  # (1, 2 classes, 1, 2)
    selected = class_mask_logits(logits, torch.tensor([1]))
    gt = torch.tensor([[[True, False]]])
    with EventStorage(0) as storage:
        loss = mask_loss(selected, gt)
        scalars = {k: v[0] for k, v in storage.latest().items()}
    expected = torch.nn.functional.binary_cross_entropy_with_logits(
        torch.tensor([-3.0, 4.0]), torch.tensor([1.0, 0.0])
    )
    torch.testing.assert_close(loss, expected)
    assert scalars["mask_rcnn/accuracy"] == 0.0
    assert scalars["mask_rcnn/false_positive"] == 1.0
    assert scalars["mask_rcnn/false_negative"] == 1.0


def test_mask_loss_without_foreground_is_a_connected_zero():
    logits = torch.zeros((0, 28, 28), requires_grad=True)
    loss = mask_loss(logits, torch.zeros((0, 28, 28), dtype=torch.bool))
    assert loss.item() == 0.0 and loss.requires_grad


# ------------------------------------------------------------------------------------------ #
# MaskIoU head, targets, loss, inference
# ------------------------------------------------------------------------------------------ #
def test_maskiou_head_shapes_and_init():
    head = MaskIoUHead(
        in_channels=6, conv_dims=[4, 4], fc_dims=[1024, 1024], num_classes=3, pooler_resolution=14
    )
    assert head.maskiou_fcn1.weight.shape == (4, 7, 3, 3)
    assert head.maskiou_fcn2.stride == (2, 2) and head.maskiou_fcn1.stride == (1, 1)
    assert head.maskiou_fc1.weight.shape == (1024, 4 * 7 * 7)
    assert float(head.maskiou.weight.detach().std()) == pytest.approx(0.01, rel=0.1)
    assert not head.maskiou_fc1.bias.any()
    out = head(torch.randn(2, 6, 14, 14), torch.rand(2, 1, 28, 28))
    assert out.shape == (2, 3)
    assert head(torch.zeros(0, 6, 14, 14), torch.zeros(0, 1, 28, 28)).shape == (0, 3)


def square_polygon(x0, y0, x1, y1):
    return [np.array([x0, y0, x1, y0, x1, y1, x0, y1], dtype=np.float64)]


def test_area_inside_box_for_polygons_and_bitmasks():
    polygons = [square_polygon(10, 20, 30, 60), square_polygon(0, 0, 8, 8)]
    boxes = torch.tensor([[10.0, 20.0, 20.0, 60.0], [0.0, 0.0, 16.0, 16.0]])
    gt_poly = PolygonMasks(polygons)
    bitmasks = np.stack([polygons_to_bitmask(p, 64, 64) for p in polygons])
    gt_bit = BitMasks(torch.from_numpy(bitmasks))
    assert mask_areas_inside_boxes(gt_poly, boxes).tolist() == [400.0, 64.0]
    assert mask_areas(gt_poly).tolist() == [800.0, 64.0]
    assert mask_areas_inside_boxes(gt_bit, boxes).tolist() == [400.0, 64.0]
    assert mask_areas(gt_bit).tolist() == [800.0, 64.0]
    assert mask_areas_inside_boxes(gt_poly, boxes).dtype == torch.float64


def test_polygon_area_inside_box_uses_int_truncated_canvas():
    # The canvas is int(h) x int(w) = 10 x 10 for a 10.9 x 10.9 box, so only 100 pixels count.
    gt = PolygonMasks([square_polygon(0, 0, 20, 20)])
    assert mask_areas_inside_boxes(gt, torch.tensor([[0.0, 0.0, 10.9, 10.9]])).tolist() == [100.0]


def maskiou_case(gt_masks, box):
    instances = Instances((64, 64))
    instances.proposal_boxes = Boxes(torch.tensor([box]))
    instances.gt_masks = gt_masks
    gt28 = instances.gt_masks.crop_and_resize(instances.proposal_boxes.tensor, 28)
    return instances, gt28


@pytest.mark.parametrize("mask_format", ["polygon", "bitmask"])
def test_maskiou_target_accounts_for_gt_outside_the_box(mask_format):
    polygons = square_polygon(10, 20, 30, 60)
    if mask_format == "polygon":
        gt_masks = PolygonMasks([polygons])
    else:
        gt_masks = BitMasks(torch.from_numpy(polygons_to_bitmask(polygons, 64, 64))[None])
    # The box holds the left half of the object; the prediction covers the whole box.
    instances, gt28 = maskiou_case(gt_masks, [10.0, 20.0, 20.0, 60.0])
    assert gt28.all()
    logits = torch.ones(1, 28, 28)
    targets = maskiou_targets([instances], logits, gt28)
    # overlap 784, full GT at this scale 784 / 0.5, union = 784 + 1568 - 784.
    assert targets.dtype == torch.float64
    assert targets.tolist() == pytest.approx([0.5])
    # A prediction covering nothing has IoU 0.
    assert maskiou_targets([instances], -logits, gt28).tolist() == [0.0]


def test_maskiou_targets_agree_between_polygon_and_bitmask_gt():
    rng = np.random.default_rng(0)
    angles = np.sort(rng.uniform(0, 2 * np.pi, 12))
    radius = rng.uniform(10, 20, 12)
    polygon = np.stack([32 + radius * np.cos(angles), 32 + radius * np.sin(angles)], 1).ravel()
    box = [20.0, 18.0, 50.0, 44.0]
    poly_inst, poly28 = maskiou_case(PolygonMasks([[polygon]]), box)
    bit = torch.from_numpy(polygons_to_bitmask([polygon], 64, 64))[None]
    bit_inst, bit28 = maskiou_case(BitMasks(bit), box)
    logits = torch.randn(1, 28, 28)
    poly_target = maskiou_targets([poly_inst], logits, poly28)
    bit_target = maskiou_targets([bit_inst], logits, bit28)
    assert 0 < float(poly_target) < 1
    assert float(bit_target) == pytest.approx(float(poly_target), abs=0.03)


def test_maskiou_loss_averages_half_squared_error_over_positive_targets():
    pred = torch.tensor([[0.0, 0.9], [0.5, 0.2], [0.3, 0.3]], requires_grad=True)
    classes = torch.tensor([1, 0, 1])
    targets = torch.tensor([0.5, 0.0, 0.1])  # the zero target is ignored
    loss = maskiou_loss(pred, classes, targets, loss_weight=2.0)
    expected = 2.0 * (0.5 * 0.4**2 + 0.5 * 0.2**2) / 2
    assert loss.dtype == torch.float32
    assert loss.item() == pytest.approx(expected)
    zero = maskiou_loss(pred, classes, torch.zeros(3))
    assert zero.item() == 0.0 and zero.requires_grad


def test_maskiou_loss_keeps_float64_targets_when_prediction_nearly_cancels_them():
    # IoU targets such as 1/3 are not float32 numbers. A float32 prediction equal to the target's
    # float32 rounding leaves only the rounding error, which the original squares in float64:
    # rounding the target to float32 first would give exactly 0 (a relative error of 1.0).
    targets = torch.tensor([1.0 / 3.0, 2.0 / 7.0], dtype=torch.float64)
    pred = targets.to(torch.float32)[:, None].clone().requires_grad_()
    classes = torch.tensor([0, 0])
    loss = maskiou_loss(pred, classes, targets, loss_weight=1.0)
    rounding = [float(torch.tensor(t, dtype=torch.float32).double()) - t for t in targets.tolist()]
    expected = (0.5 * rounding[0] ** 2 + 0.5 * rounding[1] ** 2) / 2
    assert expected > 0
    assert loss.dtype == torch.float32
    assert loss.item() == pytest.approx(expected, rel=1e-6)
    loss.backward()
    assert pred.grad is not None and pred.grad.dtype == torch.float32


def test_maskiou_inference_scales_box_scores_by_predicted_iou():
    images = [Instances((10, 10)), Instances((10, 10))]
    images[0].scores, images[0].pred_classes = torch.tensor([0.5, 0.8]), torch.tensor([1, 0])
    images[1].scores, images[1].pred_classes = torch.zeros(0), torch.zeros(0, dtype=torch.int64)
    pred = torch.tensor([[0.1, 0.6], [0.7, -0.2]])
    maskiou_inference(pred, images)
    torch.testing.assert_close(images[0].mask_scores, torch.tensor([0.3, 0.56]))
    assert images[1].mask_scores.shape == (0,)


# ------------------------------------------------------------------------------------------ #
# Proposals
# ------------------------------------------------------------------------------------------ #
def fcos_detections(boxes, image_size=(64, 80)):
    n = len(boxes)
    return Instances(
        image_size,
        pred_boxes=Boxes(torch.tensor(boxes, dtype=torch.float32).reshape(-1, 4)),
        scores=torch.linspace(0.9, 0.5, n),
        pred_classes=torch.zeros(n, dtype=torch.int64),
        locations=torch.full((n, 2), 7.0),
    )


def gt_instances(boxes, classes, image_size=(64, 80), mask_format="polygon"):
    gt = Instances(image_size)
    gt.gt_boxes = Boxes(torch.tensor(boxes, dtype=torch.float32).reshape(-1, 4))
    gt.gt_classes = torch.tensor(classes, dtype=torch.int64)
    polygons = [square_polygon(*b) for b in boxes]
    if mask_format == "polygon":
        gt.gt_masks = PolygonMasks(polygons)
    else:
        h, w = image_size
        masks = [torch.from_numpy(polygons_to_bitmask(p, h, w)) for p in polygons]
        gt.gt_masks = BitMasks(torch.stack(masks) if masks else torch.zeros(0, h, w, dtype=bool))
    return gt


def test_gt_boxes_are_appended_after_the_detections_with_fcos_fields():
    proposals = [detections_to_proposals(fcos_detections([[0, 0, 10, 10]]))]
    targets = [gt_instances([[5, 5, 20, 30], [1, 2, 3, 4]], [2, 1])]
    merged = add_ground_truth_to_detections(targets, proposals)[0]
    assert len(merged) == 3
    assert merged.proposal_boxes.tensor[1:].tolist() == targets[0].gt_boxes.tensor.tolist()
    assert merged.pred_classes.tolist() == [0, 2, 1]
    assert merged.scores[1:].tolist() == pytest.approx([math.log((1 - 1e-10) / 1e-10)] * 2)
    assert GT_PROPOSAL_SCORE == pytest.approx(23.02585, rel=1e-6)
    assert merged.locations[1:].tolist() == [[1.0, 1.0], [1.0, 1.0]]
    assert not merged.has("pred_boxes")


# ------------------------------------------------------------------------------------------ #
# CenterROIHeads
# ------------------------------------------------------------------------------------------ #
@pytest.mark.parametrize(
    "config_stem", sorted(p.stem for p in CONFIGS.glob("*.yaml") if not p.stem.startswith("Base"))
)
def test_roi_head_keys_and_shapes_match_the_reference(config_stem):
    cfg = get_config(CONFIGS / f"{config_stem}.yaml")
    names = ("p2", "p3", "p4", "p5", "p6", "p7")
    with torch.device("meta"):
        heads = build_roi_heads(cfg, feature_shapes(cfg.MODEL.FPN.OUT_CHANNELS, names))
    assert isinstance(heads, CenterROIHeads)
    ours = {f"roi_heads.{k}": tuple(v.shape) for k, v in heads.state_dict().items()}
    reference = {k: v for k, v in spec_keys(config_stem).items() if k.startswith("roi_heads.")}
    assert ours == reference
    assert list(ours) == list(reference)  # same order as the original state_dict


def tiny_cfg(*overrides):
    return get_config(
        LITE_YAML,
        "MODEL.ROI_HEADS.NUM_CLASSES",
        "3",
        "MODEL.FCOS.NUM_CLASSES",
        "3",
        "MODEL.ROI_MASK_HEAD.CONV_DIM",
        "8",
        "MODEL.ROI_MASKIOU_HEAD.CONV_DIM",
        "8",
        *overrides,
    )


def tiny_features(batch=2, channels=8, size=(64, 80), names=("p3", "p4", "p5")):
    torch.manual_seed(0)
    h, w = size
    return {n: torch.randn(batch, channels, h // STRIDES[n], w // STRIDES[n]) for n in names}


def build_tiny_heads(cfg, names=("p3", "p4", "p5", "p6", "p7")):
    return build_roi_heads(cfg, feature_shapes(8, names))


def training_batch(mask_format="polygon"):
    targets = [
        gt_instances([[4, 6, 30, 40], [40, 10, 75, 60]], [1, 2], mask_format=mask_format),
        gt_instances([], [], mask_format=mask_format),  # an image without objects
    ]
    detections = [
        fcos_detections([[5, 5, 31, 41], [0, 0, 3, 3], [41, 12, 74, 58]]),
        fcos_detections([[10, 10, 20, 20]]),
    ]
    return detections, targets


@pytest.mark.parametrize("mask_format", ["polygon", "bitmask"])
@pytest.mark.parametrize("append_gt", [True, False])
def test_training_gives_mask_and_maskiou_losses(mask_format, append_gt):
    heads = build_tiny_heads(tiny_cfg("MODEL.ROI_HEADS.PROPOSAL_APPEND_GT", str(append_gt)))
    heads.train()
    detections, targets = training_batch(mask_format)
    with EventStorage(0) as storage:
        proposals, losses = heads(None, tiny_features(), detections, targets)
        scalars = {k: v[0] for k, v in storage.latest().items()}
    assert set(losses) == {"loss_mask", "loss_maskiou"}
    assert all(v.dtype == torch.float32 and torch.isfinite(v) for v in losses.values())
    num_fg = 4 if append_gt else 2
    assert scalars["roi_head/num_fg_samples"] == num_fg / 2
    assert "mask_rcnn/accuracy" in scalars
    assert len(proposals[0]) == (5 if append_gt else 3)
    assert proposals[0].has("proposal_boxes") and proposals[0].has("gt_classes")


def test_maskiou_loss_trains_the_mask_head_too():
    heads = build_tiny_heads(tiny_cfg())
    heads.train()
    detections, targets = training_batch()
    with EventStorage(0):
        _, losses = heads(None, tiny_features(), detections, targets)
    losses["loss_maskiou"].backward()
    assert heads.mask_head.mask_fcn1.weight.grad.abs().sum() > 0
    assert heads.maskiou_head.maskiou.weight.grad.abs().sum() > 0


def test_training_without_foreground_gives_zero_connected_losses():
    heads = build_tiny_heads(tiny_cfg())
    heads.train()
    detections = [fcos_detections([[10, 10, 20, 20]])]
    targets = [gt_instances([], [])]
    with EventStorage(0):
        _, losses = heads(None, tiny_features(batch=1), detections, targets)
    assert {k: float(v) for k, v in losses.items()} == {"loss_mask": 0.0, "loss_maskiou": 0.0}
    sum(losses.values()).backward()


def test_inference_adds_masks_and_mask_scores():
    heads = build_tiny_heads(tiny_cfg()).eval()
    detections = [fcos_detections([[5, 5, 31, 41], [0, 0, 64, 60]]), fcos_detections([])]
    with torch.no_grad():
        results, losses = heads(None, tiny_features(), detections)
    assert losses == {}
    assert results[0].pred_masks.shape == (2, 1, 28, 28)
    assert results[0].mask_scores.shape == (2,)
    assert results[1].mask_scores.shape == (0,)
    assert results[0].has("locations")


def test_all_empty_batch_still_has_mask_scores():
    heads = build_tiny_heads(tiny_cfg()).eval()
    with torch.no_grad():
        results, _ = heads(None, tiny_features(), [fcos_detections([]), fcos_detections([])])
    assert [len(r.mask_scores) for r in results] == [0, 0]
    assert [tuple(r.pred_masks.shape) for r in results] == [(0, 1, 28, 28)] * 2


def test_mask_on_false_is_a_box_only_detector():
    heads = build_tiny_heads(tiny_cfg("MODEL.MASK_ON", "False"))
    assert len(heads.state_dict()) == 0 and not heads.mask_on and not heads.maskiou_on
    heads.train()
    with EventStorage(0):
        _, losses = heads(None, tiny_features(), None, training_batch()[1])
    assert losses == {}
    heads.eval()
    detections = [fcos_detections([[5, 5, 31, 41]])]
    results, _ = heads(None, tiny_features(batch=1), detections)
    assert set(results[0].get_fields()) == {"pred_boxes", "scores", "pred_classes", "locations"}


def test_plain_mask_head_without_attention_can_be_selected():
    heads = build_tiny_heads(tiny_cfg("MODEL.ROI_MASK_HEAD.NAME", "MaskRCNNConvUpsampleHead"))
    assert not any("spatialAtt" in k for k in heads.state_dict())
    heads.eval()
    with torch.no_grad():
        results, _ = heads(None, tiny_features(batch=1), [fcos_detections([[5, 5, 31, 41]])])
    assert results[0].pred_masks.shape == (1, 1, 28, 28) and results[0].has("mask_scores")


def test_turning_masks_off_like_tta_skips_maskiou():
    heads = build_tiny_heads(tiny_cfg()).eval()
    heads.mask_on = False
    with torch.no_grad():
        results = heads.forward_with_given_boxes(
            tiny_features(batch=1), [fcos_detections([[5, 5, 31, 41]])]
        )
    assert not results[0].has("pred_masks") and not results[0].has("mask_scores")


def test_keypoint_head_on_missing_features_names_the_config_key():
    cfg = tiny_cfg("MODEL.KEYPOINT_ON", "True")
    with pytest.raises(ValueError, match="MODEL.ROI_KEYPOINT_HEAD.IN_FEATURES"):
        build_tiny_heads(cfg)


def test_keypoint_head_with_ratio_pooler_trains_and_predicts():
    cfg = tiny_cfg(
        "MODEL.KEYPOINT_ON",
        "True",
        "MODEL.ROI_KEYPOINT_HEAD.IN_FEATURES",
        "['p3', 'p4', 'p5']",
        "MODEL.ROI_KEYPOINT_HEAD.NUM_KEYPOINTS",
        "2",
        "MODEL.ROI_KEYPOINT_HEAD.CONV_DIMS",
        "(8,)",
    )
    heads = build_tiny_heads(cfg)
    heads.train()
    detections, targets = training_batch()
    targets[0].gt_keypoints = Keypoints(torch.tensor([[[10, 20, 2], [20, 30, 2]]] * 2).float())
    targets[1].gt_keypoints = Keypoints(torch.zeros(0, 2, 3))
    with EventStorage(0):
        _, losses = heads(None, tiny_features(), detections, targets)
    assert set(losses) == {"loss_mask", "loss_maskiou", "loss_keypoint"}
    heads.eval()
    with torch.no_grad():
        results, _ = heads(None, tiny_features(batch=1), [fcos_detections([[5, 5, 31, 41]])])
    assert results[0].pred_keypoints.shape == (1, 2, 3)


def test_mismatched_class_counts_are_reported_by_key():
    with pytest.raises(ValueError, match="MODEL.FCOS.NUM_CLASSES"):
        build_tiny_heads(tiny_cfg("MODEL.FCOS.NUM_CLASSES", "5"))


def test_given_boxes_without_scores_get_the_predicted_iou_as_mask_score():
    heads = build_tiny_heads(tiny_cfg()).eval()
    given = Instances((64, 80), pred_boxes=Boxes(torch.tensor([[5.0, 5.0, 31.0, 41.0]])))
    given.pred_classes = torch.tensor([2])
    with torch.no_grad():
        result = heads.forward_with_given_boxes(tiny_features(batch=1), [given])[0]
        expected = heads.maskiou_head(
            heads.mask_pooler(
                [tiny_features(batch=1)[f] for f in ("p3", "p4", "p5")],
                [given.pred_boxes],
                [(64, 80)],
            ),
            result.pred_masks,
        )[:, 2]
    torch.testing.assert_close(result.mask_scores, expected)
