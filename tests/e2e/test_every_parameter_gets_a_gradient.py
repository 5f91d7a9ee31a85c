"""Every trainable parameter receives a gradient in one training step, on a batch with objects
and on one without: DistributedDataParallel (``find_unused_parameters=False``, as detectron2's
trainer builds it) fails at the next iteration when a parameter got none, so a single-process
test sees the multi-GPU failure."""

import pytest
import torch
from detectron2.modeling import build_model
from detectron2.structures import Boxes, Instances, PolygonMasks
from detectron2.utils.events import EventStorage

from tests.support.helpers import ROOT, get_config

QUICKSTART = ROOT / "configs" / "quickstart"
SMALL_FPN = ["MODEL.FPN.OUT_CHANNELS", "32", "MODEL.CHANNELS_LAST", "False"]
# One family per meta-architecture and head design, small where the config allows it.
CASES = {
    "centermask-lite": (
        QUICKSTART / "centermask_lite_V_19_slim_dw_eSE_synthetic.yaml",
        SMALL_FPN,
    ),
    # The stage5 of VoVNet feeds nothing here; it must not exist.
    "centermask-lite-stage3-4": (
        QUICKSTART / "centermask_lite_V_19_slim_dw_eSE_synthetic.yaml",
        SMALL_FPN
        + ["MODEL.VOVNET.OUT_FEATURES", "['stage3', 'stage4']"]
        + ["MODEL.FPN.IN_FEATURES", "['stage3', 'stage4']"]
        + [
            "MODEL.FCOS.IN_FEATURES",
            "['p3', 'p4', 'p5', 'p6']",
            "MODEL.FCOS.FPN_STRIDES",
            "[8, 16, 32, 64]",
            "MODEL.FCOS.SIZES_OF_INTEREST",
            "[64, 128, 256]",
        ],
    ),
    "centermask": (
        ROOT / "configs" / "centermask" / "centermask_V_39_eSE_FPN_ms_3x.yaml",
        ["MODEL.VOVNET.CONV_BODY", "V-19-slim-eSE", "MODEL.VOVNET.NORM", "BN"] + SMALL_FPN,
    ),
    "panoptic-centermask": (
        ROOT / "configs" / "centermask" / "panoptic_centermask_V_39_eSE_FPN_ms_3x.yaml",
        ["MODEL.VOVNET.CONV_BODY", "V-19-slim-eSE", "MODEL.VOVNET.NORM", "BN"] + SMALL_FPN,
    ),
    "condinst-lite": (QUICKSTART / "condinst_lite_V_19_slim_dw_eSE_synthetic.yaml", SMALL_FPN),
    "condinst-sem": (
        ROOT / "configs" / "condinst" / "MS_R_50_3x_sem.yaml",
        ["MODEL.RESNETS.DEPTH", "18", "MODEL.RESNETS.RES2_OUT_CHANNELS", "64"] + SMALL_FPN,
    ),
    "centermask-pr-heatmap": (
        QUICKSTART / "centermask_pr_lite_V_19_slim_dw_eSE_synthetic.yaml",
        SMALL_FPN,
    ),
    "centermask-pr-fcos": (
        QUICKSTART / "centermask_pr_fcos_lite_V_19_slim_dw_eSE_synthetic.yaml",
        SMALL_FPN,
    ),
    "centermask-pr-dla": (
        ROOT / "configs" / "quick_schedules" / "centermask_pr_DLA_34_synthetic_instant_test.yaml",
        [],
    ),
    "centermask-pr-neck": (
        ROOT / "configs" / "centermask_pr" / "centermask_pr_lite_V_19_slim_dw_eSE_neck_ms_4x.yaml",
        ["MODEL.UPSAMPLING_NECK.OUT_CHANNELS", "32", "MODEL.VOVNET.NORM", "BN"],
    ),
}


def _input(boxes, classes, height=64, width=80):
    inst = Instances((height, width))
    inst.gt_boxes = Boxes(torch.tensor(boxes, dtype=torch.float32).view(-1, 4))
    inst.gt_classes = torch.tensor(classes, dtype=torch.int64)
    inst.gt_masks = PolygonMasks(
        [[[x0, y0, x1, y0, (x0 + x1) / 2, y1]] for x0, y0, x1, y1 in boxes]
    )
    return {
        "image": torch.rand(3, height, width) * 255,
        "instances": inst,
        "height": height,
        "width": width,
        # Panoptic FPN's semantic targets: the stuff classes, 255 ignored.
        "sem_seg": torch.randint(0, 2, (height, width)),
    }


BATCHES = {
    "objects": lambda: [
        _input([[6, 8, 40, 50], [30, 4, 76, 30]], [1, 2]),
        _input([[10, 20, 60, 62]], [0]),
    ],
    "no-objects": lambda: [_input([], []), _input([], [])],
}


@pytest.mark.parametrize("batch", sorted(BATCHES))
@pytest.mark.parametrize("case", sorted(CASES))
def test_every_trainable_parameter_gets_a_gradient(device, case, batch):
    config, overrides = CASES[case]
    cfg = get_config(config, *overrides, "MODEL.BACKBONE.FREEZE_AT", "0")
    cfg.MODEL.DEVICE = device
    model = build_model(cfg).train()
    with EventStorage():
        losses = model(BATCHES[batch]())
    assert all(torch.isfinite(v) for v in losses.values()), losses
    sum(losses.values()).backward()
    trainable = [name for name, p in model.named_parameters() if p.requires_grad]
    missing = [name for name, p in model.named_parameters() if p.requires_grad and p.grad is None]
    assert trainable and not missing, f"{len(missing)} parameters without a gradient: {missing}"
