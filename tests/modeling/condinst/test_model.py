"""The CondInst model: configs (AdelaiDet's values), state_dict layout and checkpoint loading, and
the reference's bugs fixed (batches of different sizes, images without annotations, zero
detections, bool masks)."""

import numpy as np
import pytest
import torch
import yaml
from detectron2.modeling import build_model
from detectron2.structures import BitMasks, Boxes, Instances, PolygonMasks
from detectron2.utils.events import EventStorage

from centermask.checkpoint import CenterMaskCheckpointer
from centermask.config import get_cfg
from centermask.modeling import CenterMaskWithTTA
from centermask.utils.synthetic_weights import synthetic_state_dict
from tests.support.helpers import (
    CONDINST_PARITY_DIRS,
    PARITY,
    QUICK_CONFIGS,
    ROOT,
    get_config,
    parity_config_file,
    parity_keys,
    synth_state_dict,
)

CONDINST_CONFIGS = sorted((ROOT / "configs" / "condinst").glob("*.yaml"))
TINY = QUICK_CONFIGS / "condinst_lite_V_19_slim_dw_synthetic_instant_test.yaml"


def _flatten(node, prefix=""):
    out = {}
    for key, value in node.items():
        if isinstance(value, dict):
            out.update(_flatten(value, f"{prefix}{key}."))
        else:
            out[f"{prefix}{key}"] = list(value) if isinstance(value, (list, tuple)) else value
    return out


@pytest.mark.parametrize("name", CONDINST_PARITY_DIRS)
def test_merged_config_equals_adelaidet_for_every_key_condinst_reads(name):
    reference = _flatten(yaml.safe_load((PARITY / name / "config_resolved.yaml").read_text()))
    ours = _flatten(yaml.safe_load(get_config(parity_config_file(name)).dump()))
    prefixes = ("MODEL.FCOS.", "MODEL.CONDINST.", "MODEL.RESNETS.", "MODEL.FPN.", "INPUT.",
                "MODEL.PIXEL_", "MODEL.BACKBONE.", "MODEL.PROPOSAL_GENERATOR.", "SOLVER.",
                "MODEL.META_ARCHITECTURE", "MODEL.MASK_ON", "DATASETS.", "OUTPUT_DIR")  # fmt: skip
    # Keys this package does not have, with the value whose behaviour it implements: AdelaiDet's
    # switches for other models or off-by-default features, and keys newer than detectron2 v0.6.
    absent = {"MODEL.FCOS.YIELD_PROPOSAL": False, "MODEL.FCOS.YIELD_BOX_FEATURES": False,
              "MODEL.FCOS.LOSS_NORMALIZER_CLS": "fg", "MODEL.FCOS.LOSS_WEIGHT_CLS": 1.0,
              "MODEL.FCOS.BOX_QUALITY": "ctrness", "MODEL.BACKBONE.ANTI_ALIAS": False,
              "MODEL.RESNETS.DEFORM_INTERVAL": 1, "INPUT.HFLIP_TRAIN": True,
              "INPUT.IS_ROTATE": False, "INPUT.CROP.CROP_INSTANCE": True,
              "SOLVER.BASE_LR_END": 0.0, "SOLVER.NUM_DECAYS": 3,
              "SOLVER.RESCALE_INTERVAL": False}  # fmt: skip
    checked = 0
    for key, value in reference.items():
        if not key.startswith(prefixes):
            continue
        if key not in ours:
            assert absent.get(key, "missing") == value, key
            continue
        assert ours[key] == value, (key, ours[key], value)
        checked += 1
    assert checked > 100


@pytest.mark.parametrize("config", CONDINST_CONFIGS, ids=lambda p: p.stem)
def test_every_condinst_config_merges(config):
    cfg = get_config(config)
    assert cfg.MODEL.META_ARCHITECTURE == "CondInst"
    assert cfg.MODEL.CONDINST.MAX_PROPOSALS == 500 and cfg.MODEL.FCOS.THRESH_WITH_CTR


@pytest.mark.parametrize("name", CONDINST_PARITY_DIRS)
def test_state_dict_layout_is_adelaidets_and_checkpoints_load_strictly(name, tmp_path):
    keys = parity_keys(name)
    cfg = get_config(parity_config_file(name))
    model = build_model(cfg)
    state = model.state_dict()
    assert list(state) == list(keys)
    assert {k: tuple(v.shape) for k, v in state.items()} == keys
    assert state["mask_head.sizes_of_interest"].dtype == torch.int64
    torch.save({"model": synth_state_dict(keys)}, tmp_path / "condinst.pth")
    for parameter in model.parameters():  # so that loading has something to change
        torch.nn.init.zeros_(parameter)
    extra = CenterMaskCheckpointer(model).load(str(tmp_path / "condinst.pth"))
    assert extra == {}  # what load returns besides the weights: the file held nothing else
    loaded = model.state_dict()
    assert all(torch.equal(loaded[k], v) for k, v in synth_state_dict(keys).items())
    # The packaged synthetic weights (used by the tools) agree with the parity specification.
    ours, spec = synthetic_state_dict(keys), synth_state_dict(keys)
    assert all(torch.equal(ours[k], spec[k]) and ours[k].dtype == spec[k].dtype for k in keys)


def test_semantic_config_adds_the_fourteen_seg_head_keys_after_the_tower():
    model = build_model(get_config(ROOT / "configs/condinst/MS_R_50_3x_sem.yaml"))
    keys = list(model.state_dict())
    assert len(keys) == 386
    start = keys.index("mask_branch.tower.4.bias") + 1
    bn = ["weight", "bias", "running_mean", "running_var", "num_batches_tracked"]
    expected = ["mask_branch.seg_head.0.0.weight", *[f"mask_branch.seg_head.0.1.{k}" for k in bn],
                "mask_branch.seg_head.1.0.weight", *[f"mask_branch.seg_head.1.1.{k}" for k in bn],
                "mask_branch.logits.weight", "mask_branch.logits.bias"]  # fmt: skip
    assert keys[start : start + 14] == expected
    assert keys[-2:] == ["controller.weight", "controller.bias"]
    assert tuple(model.state_dict()["mask_branch.logits.weight"].shape) == (80, 128, 1, 1)


def test_import_leaves_detectron2_defaults_alone():
    from detectron2.config import get_cfg as d2_get_cfg

    assert "CONDINST" not in d2_get_cfg().MODEL and "CONDINST" in get_cfg().MODEL


@pytest.fixture(scope="module")
def tiny():
    cfg = get_config(TINY, "MODEL.FCOS.INFERENCE_TH_TEST", "0.0")
    torch.manual_seed(0)
    return build_model(cfg).eval(), cfg


def _image(h, w, seed):
    return torch.rand(3, h, w, generator=torch.Generator().manual_seed(seed)) * 255


def test_batch_of_different_sizes_gives_each_image_its_own_size(tiny):
    model, _ = tiny
    small, large = {"image": _image(64, 96, 0)}, {
        "image": _image(96, 128, 1),
        "height": 48,
        "width": 64,
    }
    with torch.no_grad():
        batch = model([small, large])
        alone = model([large])[0]["instances"]
    first, second = batch[0]["instances"], batch[1]["instances"]
    assert first.image_size == (64, 96) and first.pred_masks.shape[1:] == (64, 96)
    assert second.image_size == (48, 64) and second.pred_masks.shape[1:] == (48, 64)
    assert len(first) > 0 and len(second) > 0
    # The larger image is padded the same way alone and in the batch: identical results.
    torch.testing.assert_close(second.pred_boxes.tensor, alone.pred_boxes.tensor)
    assert torch.equal(second.pred_masks, alone.pred_masks)


def test_zero_detections_give_an_empty_bool_pred_masks(tiny):
    model, _ = tiny
    threshold = model.proposal_generator.score_thresh
    model.proposal_generator.score_thresh = (threshold[0], 1.0)
    try:
        with torch.no_grad():
            (out,) = model([{"image": _image(64, 96, 2), "height": 32, "width": 48}])
    finally:
        model.proposal_generator.score_thresh = threshold
    instances = out["instances"]
    assert len(instances) == 0 and instances.pred_masks.shape == (0, 32, 48)
    assert instances.pred_masks.dtype == torch.bool


def test_detections_have_bool_masks_at_the_output_size(tiny):
    model, _ = tiny
    with torch.no_grad():
        (out,) = model([{"image": _image(64, 96, 3), "height": 128, "width": 192}])
    instances = out["instances"]
    assert len(instances) > 0 and instances.pred_masks.dtype == torch.bool
    assert instances.pred_masks.shape == (len(instances), 128, 192)
    assert set(instances.get_fields()) == {"pred_boxes", "scores", "pred_classes", "pred_masks",
                                           "locations", "fpn_levels"}  # fmt: skip


def _train_input(h, w, boxes, bitmask=False):
    instances = Instances((h, w))
    instances.gt_boxes = Boxes(torch.tensor(boxes, dtype=torch.float32).reshape(-1, 4))
    instances.gt_classes = torch.arange(len(boxes), dtype=torch.int64) % 6
    if bitmask:
        masks = torch.zeros(len(boxes), h, w, dtype=torch.bool)
        for m, (x0, y0, x1, y1) in zip(masks, boxes):
            m[int(y0) : int(y1), int(x0) : int(x1)] = True
        instances.gt_masks = BitMasks(masks)
    else:
        rectangles = [[np.array([x0, y0, x1, y0, x1, y1, x0, y1], dtype=np.float64)]
                      for x0, y0, x1, y1 in boxes]  # fmt: skip
        instances.gt_masks = PolygonMasks(rectangles)
    return {"image": _image(h, w, 4), "instances": instances}


@pytest.mark.parametrize("bitmask", [False, True], ids=["polygon", "bitmask"])
def test_training_accepts_images_without_annotations_alone_and_in_a_batch(tiny, bitmask):
    model, _ = tiny
    model.train()
    try:
        batches = [
            [_train_input(64, 96, [[8, 8, 60, 50]], bitmask), _train_input(96, 64, [], bitmask)],
            [_train_input(64, 96, [], bitmask)],
        ]
        for batch in batches:
            model.zero_grad()
            with EventStorage(0):
                losses = model(batch)
            assert list(losses) == ["loss_fcos_cls", "loss_fcos_loc", "loss_fcos_ctr", "loss_mask"]
            assert all(torch.isfinite(v) for v in losses.values())
            sum(losses.values()).backward()
            assert model.controller.weight.grad is not None
    finally:
        model.eval()
    assert losses["loss_mask"].item() == 0.0  # the image alone has no positives


def test_mask_loss_subsamples_at_most_max_proposals_positives(tiny):
    model, _ = tiny
    model.train()
    seen = []
    hook = model.mask_head.register_forward_hook(lambda m, inputs, out: seen.append(len(out)))
    model.max_proposals = 5
    try:
        with EventStorage(0):
            model([_train_input(64, 96, [[8, 8, 60, 50], [30, 20, 90, 60]])])
    finally:
        model.max_proposals = 500
        hook.remove()
        model.eval()
    assert seen == [5]


def test_training_without_masks_names_the_missing_field(tiny):
    model, _ = tiny
    batch = [_train_input(64, 96, [[8, 8, 60, 50]])]
    batch[0]["instances"].remove("gt_masks")
    model.train()
    try:
        with pytest.raises(ValueError, match="gt_masks"), EventStorage(0):
            model(batch)
    finally:
        model.eval()


def test_topk_proposals_per_image_keeps_the_best_positives_of_each_gt(tiny):
    model, _ = tiny
    # Image 0: GT 0 has three positives, GT 1 one; image 1: GT 2 has two. K = 2 per image.
    fields = {
        "im_inds": torch.tensor([0, 0, 0, 0, 1, 1]),
        "gt_inds": torch.tensor([0, 0, 0, 1, 2, 2]),
        "logits_pred": torch.tensor([[0.0], [3.0], [1.0], [0.0], [0.0], [0.0]]),
        "ctrness_pred": torch.tensor([0.0, 0.0, 0.0, 0.0, 1.0, -1.0]),
    }
    fields["order"] = torch.arange(6)
    model.max_proposals, model.topk_proposals_per_image = -1, 2
    try:
        kept = model._select_for_mask_loss(fields)
    finally:
        model.max_proposals, model.topk_proposals_per_image = 500, -1
    # Image 0: two GTs -> max(2 // 2, 1) = 1 per GT: the best of GT 0 (index 1) and GT 1's only
    # one; image 1: one GT -> 2 per GT, both kept.
    assert sorted(kept["order"].tolist()) == [1, 3, 4, 5]


def test_max_proposals_and_topk_per_image_cannot_both_be_set():
    with pytest.raises(ValueError, match="TOPK_PROPOSALS_PER_IM"):
        build_model(get_config(TINY, "MODEL.CONDINST.TOPK_PROPOSALS_PER_IM", "64"))


def test_test_time_augmentation_refuses_condinst_with_a_clear_error(tiny):
    # detectron2's TTA re-runs ROI heads on merged boxes; CondInst has none. The trainer checks
    # this when it builds its hooks, so a long training run never ends in this error.
    model, cfg = tiny
    cfg = cfg.clone()
    cfg.TEST.AUG.ENABLED = True
    with pytest.raises(NotImplementedError, match="TEST.AUG.ENABLED.*CondInst"):
        CenterMaskWithTTA(cfg, model)
