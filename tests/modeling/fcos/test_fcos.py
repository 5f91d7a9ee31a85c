"""The FCOS proposal generator: registry, config errors, training/inference outputs, losses."""

import pytest
import torch
from detectron2.modeling import PROPOSAL_GENERATOR_REGISTRY, build_proposal_generator
from detectron2.structures import Boxes, ImageList, Instances

import centermask  # noqa: F401  (registers FCOS)
from centermask.modeling.fcos import FCOS
from centermask.modeling.fcos.losses import centerness_targets, fcos_losses
from tests.support.fcos import LEVELS, fpn_output_shape, small_features, synthetic_fcos
from tests.support.helpers import PARITY_DIRS, get_config, parity_config_file

LITE = PARITY_DIRS[0]  # A: CenterMask-Lite V-19-slim-dw


def _cfg(*overrides):
    return get_config(parity_config_file(LITE), *overrides)


def _gt(boxes, classes, image_size=(128, 160)):
    return Instances(
        image_size,
        gt_boxes=Boxes(torch.tensor(boxes, dtype=torch.float32).reshape(-1, 4)),
        gt_classes=torch.tensor(classes, dtype=torch.int64),
    )


def _small_batch(name=LITE):
    features = small_features(name)
    images = ImageList(torch.zeros(1, 3, 128, 160), [(128, 160)])
    gt = [_gt([[20.0, 30.0, 90.0, 100.0], [100.0, 10.0, 150.0, 60.0]], [3, 17])]
    return images, features, gt


def test_fcos_is_registered_and_built_from_config():
    assert "FCOS" in PROPOSAL_GENERATOR_REGISTRY
    cfg = _cfg()
    fcos = build_proposal_generator(cfg, fpn_output_shape(cfg))
    assert isinstance(fcos, FCOS)
    assert fcos.in_features == LEVELS and fcos.strides == [8, 16, 32, 64, 128]
    assert fcos.post_nms_topk == (100, 50)
    assert fcos.proposals_in_training  # MASK_ON is True in every shipped config


def test_mismatched_class_counts_fail_at_build_time_naming_both_keys():
    cfg = _cfg("MODEL.FCOS.NUM_CLASSES", 3)
    with pytest.raises(ValueError, match="MODEL.FCOS.NUM_CLASSES.*MODEL.ROI_HEADS.NUM_CLASSES"):
        build_proposal_generator(cfg, fpn_output_shape(cfg))


def test_in_features_and_strides_of_different_lengths_name_both_keys():
    cfg = _cfg("MODEL.FCOS.FPN_STRIDES", [8, 16, 32, 64])
    with pytest.raises(ValueError, match="MODEL.FCOS.IN_FEATURES.*MODEL.FCOS.FPN_STRIDES"):
        FCOS(cfg, fpn_output_shape(cfg))


def test_missing_backbone_feature_lists_the_available_ones():
    # TOP_LEVELS 1: the backbone stops at p6 but IN_FEATURES still asks for p7.
    cfg = _cfg("MODEL.FCOS.TOP_LEVELS", 1)
    with pytest.raises(ValueError, match=r"\['p7'\].*\['p3', 'p4', 'p5', 'p6'\]"):
        FCOS(cfg, fpn_output_shape(cfg, LEVELS[:4]))


def test_four_levels_work_when_features_strides_and_sizes_agree():
    overrides = {
        "MODEL.FCOS.TOP_LEVELS": 1,
        "MODEL.FCOS.IN_FEATURES": ["p3", "p4", "p5", "p6"],
        "MODEL.FCOS.FPN_STRIDES": [8, 16, 32, 64],
        "MODEL.FCOS.SIZES_OF_INTEREST": [64, 128, 256],
    }
    cfg = _cfg(*[x for item in overrides.items() for x in item])
    fcos = FCOS(cfg, fpn_output_shape(cfg, LEVELS[:4]))
    assert len(fcos.fcos_head.scales) == 4 and fcos.size_ranges[-1] == (256.0, 1e8)


def test_sizes_of_interest_must_match_the_number_of_levels():
    cfg = _cfg("MODEL.FCOS.SIZES_OF_INTEREST", [64, 128, 256])
    with pytest.raises(ValueError, match="MODEL.FCOS.SIZES_OF_INTEREST"):
        FCOS(cfg, fpn_output_shape(cfg))


def test_stride_disagreeing_with_the_backbone_is_an_error():
    cfg = _cfg("MODEL.FCOS.FPN_STRIDES", [8, 16, 32, 64, 64])
    with pytest.raises(ValueError, match="MODEL.FCOS.FPN_STRIDES.*'p7'.*128"):
        FCOS(cfg, fpn_output_shape(cfg))


def test_deformable_towers_raise_not_implemented_naming_the_key():
    cfg = _cfg("MODEL.FCOS.USE_DEFORMABLE", True)
    with pytest.raises(NotImplementedError, match="MODEL.FCOS.USE_DEFORMABLE"):
        FCOS(cfg, fpn_output_shape(cfg))


def test_unknown_loc_loss_type_is_rejected():
    cfg = _cfg("MODEL.FCOS.LOC_LOSS_TYPE", "smooth_l1")
    with pytest.raises(ValueError, match="MODEL.FCOS.LOC_LOSS_TYPE"):
        FCOS(cfg, fpn_output_shape(cfg))


def test_training_returns_float32_losses_and_proposals_with_train_thresholds():
    fcos, _ = synthetic_fcos(LITE)
    fcos.train()
    images, features, gt = _small_batch()
    proposals, losses = fcos(images, features, gt)
    assert set(losses) == {"loss_fcos_cls", "loss_fcos_loc", "loss_fcos_ctr"}
    assert all(v.dtype == torch.float32 and torch.isfinite(v) for v in losses.values())
    (prop,) = proposals
    assert 50 < len(prop) <= 100  # POST_NMS_TOPK_TRAIN 100 (test would cap at 50)
    assert not prop.scores.requires_grad and not prop.pred_boxes.tensor.requires_grad
    sum(losses.values()).backward()
    grads = [p.grad for p in fcos.parameters()]
    assert all(g is not None and torch.isfinite(g).all() for g in grads)


def test_box_only_training_returns_losses_and_empty_proposals():
    fcos, _ = synthetic_fcos(LITE, "MODEL.MASK_ON", False, "MODEL.MASKIOU_ON", False)
    assert not fcos.proposals_in_training
    fcos.train()
    images, features, gt = _small_batch()
    proposals, losses = fcos(images, features, gt)
    assert len(losses) == 3
    assert len(proposals) == 1 and len(proposals[0]) == 0
    assert proposals[0].image_size == (128, 160) and proposals[0].has("pred_boxes")
    fcos.eval()
    detections, losses = fcos(images, features)
    assert losses == {} and len(detections[0]) == 50


def test_images_without_gt_train_without_nan():
    fcos, _ = synthetic_fcos(LITE)
    fcos.train()
    images, features, _ = _small_batch()
    images = ImageList(torch.zeros(2, 3, 128, 160), [(128, 160), (100, 120)])
    features = {k: torch.cat([v, v]) for k, v in features.items()}
    gt = [_gt([], []), _gt([], [], (100, 120))]
    _, losses = fcos(images, features, gt)
    assert losses["loss_fcos_loc"].item() == 0 and losses["loss_fcos_ctr"].item() == 0
    assert torch.isfinite(losses["loss_fcos_cls"]) and losses["loss_fcos_cls"] > 0
    sum(losses.values()).backward()
    assert all(torch.isfinite(p.grad).all() for p in fcos.parameters() if p.grad is not None)


def test_training_requires_ground_truth():
    fcos, _ = synthetic_fcos(LITE)
    fcos.train()
    images, features, _ = _small_batch()
    with pytest.raises(ValueError, match="gt_instances"):
        fcos(images, features)


def test_centerness_target_formula():
    reg = torch.tensor([[1.0, 2.0, 3.0, 4.0], [2.0, 2.0, 2.0, 2.0]])
    expected = torch.tensor([((1 / 3) * (2 / 4)) ** 0.5, 1.0])
    torch.testing.assert_close(centerness_targets(reg), expected)
    assert centerness_targets(torch.zeros(0, 4)).shape == (0,)


def test_losses_normalise_by_positives_and_centerness_sum():
    torch.manual_seed(0)
    logits, reg, ctr = torch.randn(6, 3), torch.rand(6, 4) + 0.5, torch.randn(6)
    labels = torch.tensor([3, 0, 3, 2, 3, 3])
    targets = torch.rand(6, 4) + 0.5
    out = fcos_losses(logits, reg, ctr, labels, targets)
    from fvcore.nn import sigmoid_focal_loss

    onehot = torch.zeros(6, 3)
    onehot[1, 0] = onehot[3, 2] = 1
    torch.testing.assert_close(
        out["loss_fcos_cls"], sigmoid_focal_loss(logits, onehot, 0.25, 2.0, "sum") / 2
    )
    pos = torch.tensor([1, 3])
    ctr_t = centerness_targets(targets[pos])
    bce = torch.nn.functional.binary_cross_entropy_with_logits(ctr[pos], ctr_t, reduction="sum")
    torch.testing.assert_close(out["loss_fcos_ctr"], bce / 2)
    from centermask.layers.iou_loss import iou_loss

    expected_loc = iou_loss(reg[pos], targets[pos], ctr_t) / ctr_t.sum()
    torch.testing.assert_close(out["loss_fcos_loc"], expected_loc)


def test_normalisers_are_averaged_over_workers(monkeypatch):
    """With two workers, positives and centerness sums are all-reduced and divided by two."""
    from centermask.modeling.fcos import losses as losses_module

    peer_values = []  # what the (simulated) other worker contributes to each all_reduce

    def fake_all_reduce(tensor, op=None):
        tensor += peer_values.pop(0)

    monkeypatch.setattr(losses_module.comm, "get_world_size", lambda: 2)
    monkeypatch.setattr(losses_module.dist, "all_reduce", fake_all_reduce)
    peer_values.append(torch.tensor(3.0))
    assert losses_module.average_over_workers(torch.tensor(1.0)).item() == 2.0  # (1 + 3) / 2

    # Locally 1 positive with centerness target 1; the peer has 5 positives, centerness sum 3.
    logits, reg, ctr = torch.zeros(4, 2), torch.full((4, 4), 2.0), torch.zeros(4)
    labels, targets = torch.tensor([0, 2, 2, 2]), torch.ones(4, 4)
    peer_values.extend([torch.tensor(5.0), torch.tensor(3.0)])
    out = fcos_losses(logits, reg, ctr, labels, targets)
    assert not peer_values
    bce = torch.nn.functional.binary_cross_entropy_with_logits(torch.zeros(1), torch.ones(1))
    torch.testing.assert_close(out["loss_fcos_ctr"], bce / 3)  # num_pos_avg (1 + 5) / 2
    # GIoU loss 1 - 5/17 for a 4x4 prediction around a 2x2 target; normaliser (1 + 3) / 2.
    assert out["loss_fcos_loc"].item() == pytest.approx((12 / 17) / 2)
