"""CondInst's GT masks cross to the device as bool masks; the float masks on the padded canvas
are made there, equal to the ones made on the host."""

import numpy as np
import torch
from detectron2.structures import BitMasks, PolygonMasks, polygons_to_bitmask

from centermask.modeling.condinst.targets import full_bitmasks
from tests.support.devices import DeviceCopies

# The second polygon reaches past the 30 x 41 image into the padding, where it keeps its pixels.
POLYGONS = [[[2.0, 3.0, 25.0, 3.0, 12.0, 20.0]], [[10.0, 5.0, 46.0, 31.0, 10.0, 29.0]]]


def _host_reference(padded_size):
    """Float masks rasterised on the padded canvas on the host (AdelaiDet's)."""
    masks = [polygons_to_bitmask(p, *padded_size) for p in POLYGONS]
    return torch.from_numpy(np.stack(masks).astype(np.float32))


def test_polygon_and_bit_masks_on_the_device_equal_the_host_ones(device):
    expected = _host_reference((32, 48))
    assert expected[1, 30:, :].sum() > 0  # pixels in the padding
    masks = full_bitmasks(PolygonMasks(POLYGONS), (32, 48), torch.device(device))
    assert masks.device.type == device and masks.dtype == torch.float32
    assert torch.equal(masks.cpu(), expected)
    bitmasks = BitMasks(expected[:, :30, :41].bool().to(device))
    masks = full_bitmasks(bitmasks, (32, 48), torch.device(device))
    expected[:, 30:, :] = 0
    expected[:, :, 41:] = 0
    assert torch.equal(masks.cpu(), expected)


def test_gt_masks_cross_to_the_device_as_bool(monkeypatch):
    with DeviceCopies(monkeypatch) as copies:
        masks = full_bitmasks(PolygonMasks(POLYGONS), (32, 48), torch.device("meta"))
        full_bitmasks(BitMasks(torch.ones(2, 30, 41, dtype=torch.bool)), (32, 48), "meta")
    assert masks.device.type == "meta" and masks.shape == (2, 32, 48)
    assert copies.dtypes == [torch.bool, torch.bool]
