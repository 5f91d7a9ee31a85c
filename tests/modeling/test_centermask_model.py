"""Whole models with CenterROIHeads: key layout of every shipped config, panoptic, TTA with MaskIoU,
box-only (MASK_ON False) detection and training without GT proposals."""

from functools import lru_cache

import numpy as np
import pytest
import torch
from detectron2.modeling import META_ARCH_REGISTRY, build_model
from detectron2.structures import Boxes, Instances, PolygonMasks
from detectron2.utils.events import EventStorage

from centermask.modeling.test_time_augmentation import CenterMaskWithTTA
from tests.support.helpers import (
    CONFIGS,
    KEYS,
    PARITY_DIRS,
    build_synthetic_model,
    get_config,
    load_npz,
    spec_keys,
    synth_state_dict,
)

CONFIG_STEMS = sorted(p.stem for p in KEYS.glob("*.tsv"))
LITE_YAML = CONFIGS / "centermask_lite_V_19_slim_dw_eSE_FPN_ms_4x.yaml"


@pytest.mark.parametrize("stem", CONFIG_STEMS)
def test_whole_model_state_dict_matches_the_reference(stem):
    cfg = get_config(CONFIGS / f"{stem}.yaml")
    with torch.device("meta"):  # shapes only
        model = META_ARCH_REGISTRY.get(cfg.MODEL.META_ARCHITECTURE)(cfg)
    ours = {k: tuple(v.shape) for k, v in model.state_dict().items()}
    assert ours == spec_keys(stem)


def small_image():
    bgr = load_npz(PARITY_DIRS[0], "inputs.npz")["small_bgr"]
    return torch.from_numpy(np.ascontiguousarray(bgr.transpose(2, 0, 1)))


def small_gt():
    polygon = np.array([10, 10, 60, 10, 60, 80, 10, 80], dtype=np.float64)
    return Instances(
        (128, 160),
        gt_boxes=Boxes(torch.tensor([[10.0, 10.0, 60.0, 80.0]])),
        gt_classes=torch.tensor([3]),
        gt_masks=PolygonMasks([[polygon]]),
    )


def tiny_model(config_file, *overrides):
    """A narrow model with the synthetic weights, so that it detects things on the small image."""
    cfg = get_config(
        config_file,
        "MODEL.VOVNET.CONV_BODY",
        "V-19-slim-dw-eSE",
        "MODEL.FPN.OUT_CHANNELS",
        "32",
        "MODEL.ROI_MASK_HEAD.CONV_DIM",
        "32",
        "MODEL.ROI_MASKIOU_HEAD.CONV_DIM",
        "16",
        "MODEL.FCOS.NUM_CLS_CONVS",
        "1",
        "MODEL.FCOS.NUM_BOX_CONVS",
        "1",
        *overrides,
    )
    model = build_model(cfg)
    model.load_state_dict(synth_state_dict({k: v.shape for k, v in model.state_dict().items()}))
    return model.eval(), cfg


@pytest.mark.slow
def test_panoptic_model_runs_in_eval_and_train_mode():
    model, _ = tiny_model(
        CONFIGS / "panoptic_centermask_V_39_eSE_FPN_ms_3x.yaml",
        "MODEL.SEM_SEG_HEAD.CONVS_DIM",
        "32",
    )
    inputs = [{"image": small_image().float(), "height": 128, "width": 160}]
    with torch.no_grad():
        output = model(inputs)[0]
    assert output["panoptic_seg"][0].shape == (128, 160)
    assert output["instances"].has("mask_scores") and len(output["instances"]) > 0
    model.train()
    sem_seg = torch.full((128, 160), 255, dtype=torch.long)
    sem_seg[20:100, 30:150] = 5
    inputs[0].update(instances=small_gt(), sem_seg=sem_seg)
    with EventStorage(0):
        losses = model(inputs)
    assert {"loss_sem_seg", "loss_mask", "loss_maskiou", "loss_fcos_cls"} <= set(losses)
    assert all(torch.isfinite(v) for v in losses.values())


def test_mask_on_false_gives_a_box_only_detector():
    model, _ = tiny_model(LITE_YAML, "MODEL.MASK_ON", "False")
    assert not any(k.startswith("roi_heads.") for k in model.state_dict())
    inputs = [{"image": small_image().float(), "height": 128, "width": 160}]
    with torch.no_grad():
        instances = model(inputs)[0]["instances"]
    assert len(instances) > 0 and not instances.has("pred_masks")
    model.train()
    inputs[0]["instances"] = small_gt()
    with EventStorage(0):
        losses = model(inputs)
    assert set(losses) == {"loss_fcos_cls", "loss_fcos_loc", "loss_fcos_ctr"}


def test_training_without_appending_gt_proposals():
    model, _ = tiny_model(LITE_YAML, "MODEL.ROI_HEADS.PROPOSAL_APPEND_GT", "False")
    model.train()
    inputs = [{"image": small_image().float(), "height": 128, "width": 160}]
    inputs[0]["instances"] = small_gt()
    with EventStorage(0):
        losses = model(inputs)
    assert {"loss_mask", "loss_maskiou"} <= set(losses)
    assert all(torch.isfinite(v) for v in losses.values())


@lru_cache(maxsize=None)
def _lite_model():
    return build_synthetic_model(PARITY_DIRS[0])


@pytest.mark.slow
def test_tta_with_maskiou_keeps_mask_scores():
    model, cfg = _lite_model()
    cfg = cfg.clone()
    cfg.TEST.AUG.MIN_SIZES = (128,)  # plus its horizontal flip
    tta = CenterMaskWithTTA(cfg, model, batch_size=2)
    with torch.no_grad():
        instances = tta([{"image": small_image(), "height": 128, "width": 160}])[0]["instances"]
    assert len(instances) > 0
    assert instances.mask_scores.shape == instances.scores.shape
    assert instances.pred_masks.shape[1:] == (128, 160)
    assert not torch.allclose(instances.mask_scores, instances.scores)


@pytest.mark.slow
def test_tta_mask_scores_are_box_scores_times_the_predicted_iou():
    # One augmentation at the input size: the mask pass runs on the merged boxes once, so the
    # TTA mask_scores must equal a direct given-box inference on those boxes.
    model, cfg = _lite_model()
    cfg = cfg.clone()
    cfg.TEST.AUG.MIN_SIZES = (128,)
    cfg.TEST.AUG.FLIP = False
    tta = CenterMaskWithTTA(cfg, model)
    inputs = [{"image": small_image(), "height": 128, "width": 160}]
    with torch.no_grad():
        merged = tta(inputs)[0]["instances"]
        given = Instances(
            (128, 160),
            pred_boxes=merged.pred_boxes,
            pred_classes=merged.pred_classes,
            scores=merged.scores,
        )
        inputs[0]["image"] = inputs[0]["image"].float()
        direct = model.inference(inputs, [given], do_postprocess=False)[0]
    torch.testing.assert_close(merged.mask_scores, direct.mask_scores)
