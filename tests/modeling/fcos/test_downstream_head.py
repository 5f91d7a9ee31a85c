"""FCOS's hooks for downstream per-location heads (CondInst's controller): center sampling around
given centres, the positives returned in training, per-detection outputs of a ``top_module``."""

import torch
from detectron2.structures import Boxes, ImageList, Instances
from torch import nn

from centermask.modeling.fcos import FCOS
from centermask.modeling.fcos.head import FCOSHead
from centermask.modeling.fcos.targets import compute_locations_per_level, fcos_targets_per_image


def _positives(gt_centers):
    locations = [compute_locations_per_level(8, 8, 8, torch.device("cpu"))]
    labels, _ = fcos_targets_per_image(
        locations, [8], [(-1, 1e8)], torch.tensor([[0.0, 0.0, 64.0, 64.0]]), torch.tensor([0]),
        num_classes=1, gt_centers=gt_centers,
    )  # fmt: skip
    return {tuple(xy) for xy in locations[0][labels == 0].tolist()}


def test_center_sampling_uses_given_centres_instead_of_the_box_centre():
    # Box centre (32, 32): region 20..44 (1.5 strides), strictly inside -> x, y in {28, 36}.
    assert _positives(None) == {(x, y) for x in (28.0, 36.0) for y in (28.0, 36.0)}
    # Centre (12, 12): region 0..24 -> x, y in {4, 12, 20}.
    near_corner = _positives(torch.tensor([[12.0, 12.0]]))
    assert near_corner == {(x, y) for x in (4.0, 12.0, 20.0) for y in (4.0, 12.0, 20.0)}


def _fcos(**kwargs):
    torch.manual_seed(0)
    head = FCOSHead(in_channels=32, num_classes=3, num_levels=2, num_cls_convs=1,
                    num_box_convs=1, norm="none")  # fmt: skip
    return FCOS(in_features=["p3", "p4"], strides=[8, 16], head=head, num_classes=3,
                sizes_of_interest=[32], **kwargs)  # fmt: skip


def _inputs():
    features = {"p3": torch.randn(2, 32, 8, 8), "p4": torch.randn(2, 32, 4, 4)}
    images = ImageList(torch.zeros(2, 3, 64, 64), [(64, 64), (48, 64)])
    gt = [
        Instances((64, 64), gt_boxes=Boxes(torch.tensor([[0.0, 0.0, 30.0, 30.0], [20.0, 8.0, 60.0, 60.0]])),
                  gt_classes=torch.tensor([1, 2])),
        Instances((48, 64), gt_boxes=Boxes(torch.tensor([[10.0, 10.0, 40.0, 40.0]])),
                  gt_classes=torch.tensor([0])),
    ]  # fmt: skip
    return images, features, gt


def test_training_positives_carry_targets_and_top_module_outputs():
    fcos, top = _fcos(positives_in_training=True), nn.Conv2d(32, 5, 1)
    images, features, gt = _inputs()
    fcos.train()
    positives, losses = fcos(images, features, gt, top_module=top)
    plain = _fcos(positives_in_training=True).train()(images, features, gt)[1]
    assert {k: v.item() for k, v in losses.items()} == {k: v.item() for k, v in plain.items()}
    towers = fcos.fcos_head([features["p3"], features["p4"]])[3]
    for i, (p, g) in enumerate(zip(positives, gt)):
        assert len(p) > 0 and p.image_size == images.image_sizes[i]
        assert set(p.get_fields()) == {"locations", "fpn_levels", "gt_inds", "labels",
                                       "reg_targets", "logits_pred", "ctrness_pred", "top_feats"}  # fmt: skip
        assert torch.equal(p.labels, g.gt_classes[p.gt_inds])
        for k in range(len(p)):
            level, (x, y) = int(p.fpn_levels[k]), p.locations[k].tolist()
            stride = [8, 16][level]
            row, col = int(y) // stride, int(x) // stride
            expected = top(towers[level][i : i + 1])[0, :, row, col]
            torch.testing.assert_close(p.top_feats[k], expected)
            x0, y0, x1, y1 = g.gt_boxes.tensor[p.gt_inds[k]].tolist()
            assert x0 < x < x1 and y0 < y < y1
        assert (torch.diff(p.fpn_levels) >= 0).all()  # level-major order


def test_detections_carry_the_top_module_output_of_their_location():
    fcos, top = _fcos(score_thresh=(0.0, 0.0)), nn.Conv2d(32, 5, 1)
    images, features, _ = _inputs()
    fcos.eval()
    with torch.no_grad():
        detections, _ = fcos(images, features, top_module=top)
        plain, _ = fcos(images, features)
        towers = fcos.fcos_head([features["p3"], features["p4"]])[3]
    assert not plain[0].has("top_feat") and not plain[0].has("fpn_levels")
    for i, det in enumerate(detections):
        assert len(det) == len(plain[i]) > 0
        torch.testing.assert_close(det.scores, plain[i].scores)
        for k in range(len(det)):
            level, (x, y) = int(det.fpn_levels[k]), det.locations[k].tolist()
            stride = [8, 16][level]
            expected = top(towers[level][i : i + 1])[0, :, int(y) // stride, int(x) // stride]
            torch.testing.assert_close(det.top_feat[k], expected)
