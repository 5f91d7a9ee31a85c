"""CenterMask-PR's GT masks cross to the device as bool masks at the image size; the float,
padded masks are made there, equal to the ones made on the host."""

import torch
from detectron2.structures import BitMasks, Boxes, Instances, PolygonMasks
from torch.nn import functional as F

from centermask.modeling.centermask_pr.targets import gt_bitmasks, mask_targets
from tests.support.devices import DeviceCopies


def _instances(polygons: bool):
    inst = Instances((30, 41))
    inst.gt_boxes = Boxes(torch.tensor([[2.0, 3.0, 25.0, 20.0], [10.0, 5.0, 40.0, 29.0]]))
    inst.gt_classes = torch.tensor([0, 1])
    shapes = [[[2.0, 3.0, 25.0, 3.0, 12.0, 20.0]], [[10.0, 5.0, 40.0, 29.0, 10.0, 29.0]]]
    masks = PolygonMasks(shapes)
    inst.gt_masks = masks if polygons else BitMasks.from_polygon_masks(masks, 30, 41)
    return inst


def _host_reference(inst, padded_size):
    """Float masks padded on the host, the way the masks are defined."""
    masks = inst.gt_masks
    if isinstance(masks, PolygonMasks):
        masks = BitMasks.from_polygon_masks(masks, *inst.image_size)
    tensor = masks.tensor.float()
    return F.pad(tensor, (0, padded_size[1] - tensor.shape[2], 0, padded_size[0] - tensor.shape[1]))


def test_gt_masks_made_on_the_device_equal_the_host_ones(device):
    for polygons in (True, False):
        inst = _instances(polygons)
        masks = gt_bitmasks(inst, (32, 48), torch.device(device))
        assert masks.device.type == device and masks.dtype == torch.float32
        assert torch.equal(masks.cpu(), _host_reference(inst, (32, 48)))
        assert masks.sum() > 0
    targets = mask_targets([_instances(True).to(device), _instances(False).to(device)], (32, 48), 4)
    reference = torch.cat([_host_reference(_instances(p), (32, 48)) for p in (True, False)])
    assert torch.allclose(targets.cpu(), F.avg_pool2d(reference[:, None], 4)[:, 0])


def test_gt_masks_cross_to_the_device_as_bool(monkeypatch):
    with DeviceCopies(monkeypatch) as copies:
        masks = gt_bitmasks(_instances(True), (32, 48), torch.device("meta"))
    assert masks.device.type == "meta" and masks.shape == (2, 32, 48)
    assert copies.dtypes == [torch.bool]
