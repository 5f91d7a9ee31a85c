"""A training step waits for the device as often with many objects as with few: the counting
hook of ``count_syncs`` (host reads of tensor values, value-dependent sizes) sees the same
number of such operations for 2 and for 12 objects per image.

The GT masks are bitmasks: polygons are rasterised on the host by design (detectron2's
``PolygonMasks`` and pycocotools, for parity with the original targets), after one copy of the
boxes."""

import pytest
import torch
from detectron2.modeling import build_model
from detectron2.structures import BitMasks, Boxes, Instances
from detectron2.utils.events import EventStorage

from tests.support.helpers import ROOT, get_config

QUICKSTART = ROOT / "configs" / "quickstart"
SMALL = ["MODEL.FPN.OUT_CHANNELS", "32", "MODEL.CHANNELS_LAST", "False"]
CASES = {
    "centermask-lite": QUICKSTART / "centermask_lite_V_19_slim_dw_eSE_synthetic.yaml",
    "condinst-lite": QUICKSTART / "condinst_lite_V_19_slim_dw_eSE_synthetic.yaml",
    "centermask-pr-heatmap": QUICKSTART / "centermask_pr_lite_V_19_slim_dw_eSE_synthetic.yaml",
    "centermask-pr-fcos": QUICKSTART / "centermask_pr_fcos_lite_V_19_slim_dw_eSE_synthetic.yaml",
}


def _input(num, generator, height=96, width=128):
    """An image with ``num`` objects: random boxes of 16-48 px, each mask the box's inscribed
    ellipse."""
    corner = torch.rand(num, 2, generator=generator) * torch.tensor([width - 48, height - 48])
    size = 16 + torch.rand(num, 2, generator=generator) * 32
    boxes = torch.cat([corner, corner + size], dim=1)
    ys, xs = torch.meshgrid(torch.arange(height) + 0.5, torch.arange(width) + 0.5, indexing="ij")
    centre, radius = (boxes[:, :2] + boxes[:, 2:]) / 2, size / 2
    masks = ((xs - centre[:, 0, None, None]) / radius[:, 0, None, None]) ** 2 + (
        (ys - centre[:, 1, None, None]) / radius[:, 1, None, None]
    ) ** 2 <= 1
    inst = Instances((height, width))
    inst.gt_boxes = Boxes(boxes)
    inst.gt_classes = torch.randint(0, 6, (num,), generator=generator)
    inst.gt_masks = BitMasks(masks)
    return {"image": torch.rand(3, height, width) * 255, "instances": inst}


@pytest.mark.parametrize("case", sorted(CASES))
def test_training_step_syncs_do_not_grow_with_the_objects(device, count_syncs, case):
    cfg = get_config(CASES[case], *SMALL)
    cfg.MODEL.DEVICE = device
    model = build_model(cfg).train()
    counts = {}
    for num in (1, 2, 12):  # the first step also runs one-time checks
        generator = torch.Generator().manual_seed(num)
        batch = [_input(num, generator), _input(num, generator)]
        with EventStorage(), count_syncs() as syncs:
            losses = model(batch)
            sum(losses.values()).backward()
        counts[num] = len(syncs)
        assert all(torch.isfinite(v) for v in losses.values())
    del counts[1]
    print(case, "syncs per training step (2, 12 objects per image):", counts, syncs.calls)
    assert counts[2] == counts[12]
