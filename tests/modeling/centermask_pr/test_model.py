"""CenterMask-PR end to end: training on a fixed batch, odd batches, inference outputs, configs."""

import pytest
import torch
from detectron2.modeling import build_model
from detectron2.structures import Boxes, Instances

from tests.support.centermask_pr import (
    EVERY_DETECTOR,
    FCOS,
    FCOS_MASK_STRIDE_2,
    PR_CONFIGS,
    fixed_batch,
    input_with_ellipses,
    matched_detections,
    tiny_model,
    train_steps,
    trained_fcos_model,
)
from tests.support.export import assert_detections_agree
from tests.support.helpers import get_config

pytestmark = pytest.mark.usefixtures("one_thread")


@EVERY_DETECTOR
def test_training_reduces_every_loss_on_a_fixed_batch(detector):
    model = tiny_model(*detector)
    history = train_steps(model, fixed_batch(), 12)
    first, last = history[0], history[-1]
    assert {"loss_mask", "loss_saliency"} <= set(first)
    for name in first:
        assert last[name] < first[name], (name, first[name], last[name])


@pytest.mark.parametrize(
    "overrides, has_shape, saliency_channels, loss_names",
    [
        (["MODEL.CENTERMASK_PR.MASK_MODE", "local"], True, None, {"loss_mask"}),
        (["MODEL.CENTERMASK_PR.MASK_MODE", "global"], False, 6, {"loss_mask", "loss_saliency"}),
        (["MODEL.CENTERMASK_PR.CLASS_SPECIFIC_SALIENCY", "False"], True, 1, {"loss_mask"}),
    ],
    ids=["local-only", "global-only", "class-agnostic"],
)
def test_ablation_options_build_the_branches_they_name(
    overrides, has_shape, saliency_channels, loss_names
):
    model = tiny_model(*overrides)
    head = model.mask_head
    assert (head.shape_proj is not None) == has_shape
    assert (model.detector.shape_tower is not None) == has_shape
    if saliency_channels is None:
        assert head.saliency_head is None
    else:
        assert head.saliency_head[-1].out_channels == saliency_channels
    losses = train_steps(model, fixed_batch(), 1)[0]
    assert {k for k in losses if k.startswith("loss_mask") or k == "loss_saliency"} == loss_names
    model.eval()
    with torch.no_grad():
        out = model([{"image": torch.rand(3, 64, 64) * 255}])[0]["instances"]
    assert out.pred_masks.shape[1:] == (64, 64)


@pytest.mark.parametrize(
    "detector", [[], FCOS_MASK_STRIDE_2], ids=["heatmap", "fcos-mask-stride-2"]
)
def test_batch_of_images_without_objects_trains(detector):
    model = tiny_model(*detector)
    losses = train_steps(
        model, [input_with_ellipses(64, 64, [], []), input_with_ellipses(32, 64, [], [])], 1
    )[0]
    assert losses["loss_mask"] == 0 and losses["loss_saliency"] > 0
    if detector:
        assert losses["loss_fcos_loc"] == 0 and losses["loss_fcos_cls"] > 0
    else:
        assert losses["loss_offset"] == 0 and losses["loss_heatmap"] > 0


@EVERY_DETECTOR
def test_inference_returns_boxes_and_masks_in_the_original_image(detector):
    model = tiny_model(
        "MODEL.CENTERMASK_PR.SCORE_THRESH_TEST",
        "0.0",
        "MODEL.FCOS.INFERENCE_TH_TEST",
        "0.0",
        *detector
    )
    if not detector:  # untrained sizes are ~0: boxes would be empty and dropped
        torch.nn.init.constant_(model.detector.size_head[-1].bias, 4.0)
    model.eval()
    inputs = [
        {"image": torch.rand(3, 64, 96) * 255, "height": 128, "width": 192},
        {"image": torch.rand(3, 48, 64) * 255, "height": 48, "width": 64},
    ]
    with torch.no_grad():
        outputs = model(inputs)
    for out, (height, width) in zip(outputs, [(128, 192), (48, 64)]):
        inst = out["instances"]
        assert inst.image_size == (height, width) and len(inst) > 0
        assert set(inst.get_fields()) == {"pred_boxes", "scores", "pred_classes", "pred_masks"}
        assert inst.pred_masks.dtype == torch.bool and inst.pred_masks.shape[1:] == (height, width)
        boxes = inst.pred_boxes.tensor
        assert (boxes[:, 2] <= width).all() and (boxes[:, 3] <= height).all()
    if not detector:
        assert len(outputs[0]["instances"]) <= 100  # TOPK_TEST


def test_maskness_scores_rank_masks_by_score_times_kept_probability():
    model = tiny_model(*FCOS, "MODEL.CENTERMASK_PR.MASKNESS_SCORES", "True")
    # Two detections in a 64 x 96 input, masks on its stride-8 grid (8 x 12 cells).
    inst = Instances((64, 96), scores=torch.tensor([0.8, 0.5]))
    inst.pred_boxes = Boxes(torch.tensor([[0.0, 0.0, 32.0, 32.0], [40.0, 8.0, 96.0, 56.0]]))
    inst.pred_classes = torch.tensor([0, 1])
    probs = torch.full((2, 8, 12), 0.3)
    probs[0, :4, :4] = 0.9  # kept above 0.4: all 0.9
    probs[1, 1:7, 5:9] = 0.5
    probs[1, 3:5, 6:8] = 0.7  # kept: 20 cells of 0.5, 4 of 0.7 -> mean 0.5333
    inst.mask_probs = probs
    out = model.postprocess(inst, 128, 192)
    assert torch.allclose(out.mask_scores, torch.tensor([0.8 * 0.9, 0.5 * (10 + 2.8) / 24]))
    assert torch.equal(out.scores, torch.tensor([0.8, 0.5]))
    model.maskness_scores = False
    inst.mask_probs = probs
    assert not model.postprocess(inst, 128, 192).has("mask_scores")


def test_heatmap_boxes_are_scaled_to_the_original_image():
    model = tiny_model()
    torch.nn.init.constant_(model.detector.size_head[-1].bias, 4.0)
    model.eval()
    with torch.no_grad():
        image = torch.rand(3, 64, 96) * 255
        small = model.inference([{"image": image}], do_postprocess=False)[0]
        large = model([{"image": image, "height": 128, "width": 192}])[0]["instances"]
    kept = small.pred_boxes.tensor.clamp(min=0)
    kept[:, 0::2] = kept[:, 0::2].clamp(max=96)
    kept[:, 1::2] = kept[:, 1::2].clamp(max=64)
    nonempty = (kept[:, 2] > kept[:, 0]) & (kept[:, 3] > kept[:, 1])
    assert torch.allclose(large.pred_boxes.tensor, kept[nonempty] * 2, atol=1e-4)


def test_zero_detections_give_an_empty_pred_masks_field():
    model = tiny_model("MODEL.CENTERMASK_PR.SCORE_THRESH_TEST", "1.0")
    model.eval()
    with torch.no_grad():
        inst = model([{"image": torch.rand(3, 64, 64) * 255, "height": 50, "width": 70}])[0]
    inst = inst["instances"]
    assert len(inst) == 0 and inst.pred_masks.shape == (0, 50, 70)


@pytest.mark.parametrize(
    "key, value, message",
    [
        ("MODEL.CENTERMASK_PR.DETECTOR", "retina", "MODEL.CENTERMASK_PR.DETECTOR"),
        ("MODEL.CENTERMASK_PR.MASK_MODE", "half", "MODEL.CENTERMASK_PR.MASK_MODE"),
        ("MODEL.CENTERMASK_PR.IN_FEATURE", "p9", "MODEL.CENTERMASK_PR.IN_FEATURE"),
        ("MODEL.CENTERMASK_PR.SALIENCY_IN_FEATURE", "p9", "SALIENCY_IN_FEATURE"),
        ("MODEL.CENTERMASK_PR.MASK_STRIDE", "3", "MODEL.CENTERMASK_PR.MASK_STRIDE"),
    ],
)
def test_bad_options_name_the_key(key, value, message):
    with pytest.raises(ValueError, match=message):
        tiny_model(key, value)


@pytest.mark.parametrize("name", sorted(p.name for p in PR_CONFIGS.glob("centermask_pr_*.yaml")))
def test_model_zoo_configs_build(name):
    cfg = get_config(PR_CONFIGS / name)
    model = build_model(cfg)
    assert type(model).__name__ == "CenterMaskPR"
    expected = "fcos" if "_fcos_" in name else "heatmap"
    assert cfg.MODEL.CENTERMASK_PR.DETECTOR == expected
    if expected == "heatmap":
        assert model.detector.stride == 4 and model.mask_head.saliency_stride == 4


# The tiny model's mask probabilities stay below the paper's 0.4 after a few steps: a lower
# threshold gives non-empty masks to compare. FCOS needs a lower score threshold to detect.
MASKS_ON = ["MODEL.CENTERMASK_PR.MASK_THRESHOLD", "0.2"]
OPTIMIZED_DETECTORS = pytest.mark.parametrize(
    "detector", [[], FCOS + ["MODEL.FCOS.INFERENCE_TH_TEST", "0.01"]], ids=["heatmap", "fcos"]
)


def trained_for_inference(detector):
    """A tiny CenterMask-PR trained 12 steps (heatmap: boxes of a useful size from the start),
    in eval mode, and its inference inputs: the training images without annotations."""
    torch.manual_seed(0)
    model = tiny_model(*detector, *MASKS_ON)
    if not detector:
        torch.nn.init.constant_(model.detector.size_head[-1].bias, 4.0)
    train_steps(model, fixed_batch(), 12)
    inputs = [{"image": x["image"]} for x in fixed_batch()[:2]]
    inputs[0].update(height=80, width=120)  # a different output size than the input's
    return model.eval(), inputs


@OPTIMIZED_DETECTORS
def test_optimize_for_inference_keeps_the_outputs(detector):
    from centermask import optimize_for_inference

    model, inputs = trained_for_inference(detector)
    with torch.no_grad():
        expected = model(inputs)
    got = optimize_for_inference(model)(inputs)
    for e, g in zip(expected, got):
        e, g = e["instances"], g["instances"]
        assert len(g) == len(e)
        # FCOS: some of its 100 boxes are a few pixels wide, their masks empty at 0.2.
        assert_detections_agree(e, g, score_atol=1e-4, max_empty_fraction=0.25)


@OPTIMIZED_DETECTORS
def test_bf16_autocast_keeps_detections_and_returns_float32(detector):
    """bf16 dense part, float32 decoding and masks: close to the float32 model, not equal to the
    float32 pipeline (the autocast ran). The FCOS variant's 100 detections include near-ties at the top-k cut,
    which 16-bit rounding reorders, and masks of 20-40 pixels, where one row is 20% IoU."""
    from centermask import optimize_for_inference

    model, inputs = trained_for_inference(detector)
    with torch.no_grad():
        expected = model(inputs)
    got = optimize_for_inference(model, dtype="bf16")(inputs)
    for e, g in zip(expected, got):
        e, g = e["instances"], g["instances"]
        assert g.scores.dtype == g.pred_boxes.tensor.dtype == torch.float32
        assert g.pred_masks.dtype == torch.bool
        agreement = assert_detections_agree(
            e,
            g,
            iou_threshold=0.8,
            min_match_rate=0.9,
            score_atol=0.02,
            min_masks_agreeing=0.9,
            max_empty_fraction=0.25,
        )
        assert agreement.mean_mask_iou >= 0.98
    # The autocast ran: the scores differ from those of the float32 pipeline (same folding).
    float32 = optimize_for_inference(model)(inputs)[0]["instances"]
    assert not torch.equal(float32.scores, got[0]["instances"].scores)


def test_optimize_for_inference_keeps_the_outputs_of_the_fcos_detector():
    from centermask import optimize_for_inference
    from centermask.acceleration.fused_modules import FusedFCOSHead

    model = trained_fcos_model()
    inputs = [{"image": torch.rand(3, 64, 96) * 255, "height": 80, "width": 120}]
    inputs += [{"image": x["image"]} for x in fixed_batch()]
    with torch.no_grad():
        expected = model(inputs)
    fast = optimize_for_inference(model)
    assert isinstance(fast.model.detector.fcos.fcos_head, FusedFCOSHead)
    non_empty = 0
    for got, want in zip(fast(inputs), expected):
        assert len(want["instances"]) > 0
        non_empty += matched_detections(got["instances"], want["instances"])
    assert non_empty > 0


def test_benchmark_stages_split_detector_and_mask_assembly():
    from centermask.benchmark.stage_timer import StageTimer
    from tests.support.timing import timed_with_a_fake_clock

    model = tiny_model()
    model.eval()
    timer = StageTimer(model)
    with torch.no_grad():
        stages = timer.run(lambda: model([{"image": torch.rand(3, 64, 64) * 255}]))
    for name in ("backbone", "fpn", "point_detector", "assemble_paste"):
        assert stages[name] > 0, name
    # Time spent in the mask head's assembly lands in "assemble_paste" and nowhere else.
    with torch.no_grad():
        stages = timed_with_a_fake_clock(
            timer,
            model.mask_head,
            lambda: model([{"image": torch.rand(3, 64, 64) * 255}]),
            method="predict_masks",
        )
    assert stages["assemble_paste"] >= 1000 and stages["total"] >= 1000
    assert all(v < 1000 for k, v in stages.items() if k not in ("assemble_paste", "total"))


def test_mobilenetv2_fpn_p2_feeds_the_heatmap_detector():
    overrides = ["MODEL.BACKBONE.NAME", "build_fcos_resnet_fpn_backbone", "MODEL.MOBILENET", "True"]
    overrides += ["MODEL.RESNETS.OUT_FEATURES", '["res2", "res3", "res4", "res5"]']
    overrides += ["MODEL.FPN.IN_FEATURES", '["res2", "res3", "res4", "res5"]']
    model = tiny_model(*overrides)
    assert type(model.backbone.bottom_up).__name__ == "MobileNetV2"
    assert model.detector.stride == 4
    losses = train_steps(model, fixed_batch(), 1)[0]
    assert all(v == v for v in losses.values())


def test_heads_at_cells_equal_the_dense_heads_read_there():
    """The offset / size / shape heads evaluated on 3x3 neighbourhoods give what the convs run
    over the whole map give at those cells, borders (zero padding) included."""
    from centermask.modeling.centermask_pr import CenterHeatmapDetector

    torch.manual_seed(0)
    detector = CenterHeatmapDetector(
        in_feature="p2", in_channels=6, stride=4, num_classes=3, head_channels=5
    )
    for parameter in detector.parameters():
        torch.nn.init.normal_(parameter)
    feature = torch.randn(2, 6, 5, 7)
    image_index = torch.tensor([0, 1, 1, 0, 1])
    ys = torch.tensor([0, 4, 2, 4, 0])
    xs = torch.tensor([0, 6, 3, 0, 6])
    offsets, sizes, shape = detector.heads_at(feature, image_index, ys, xs)
    dense = {
        "offsets": detector.offset_head(feature),
        "sizes": detector.size_head(feature),
        "shape": detector.shape_tower(feature),
    }
    for name, got in (("offsets", offsets), ("sizes", sizes), ("shape", shape)):
        expected = dense[name][image_index, :, ys, xs]
        torch.testing.assert_close(got, expected, rtol=1e-5, atol=1e-5, msg=name)
