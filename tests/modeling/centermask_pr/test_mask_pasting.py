"""CenterMask-PR masks pasted into the original image: all detections at once, with as many
device-to-host synchronisations for 100 detections as for 10."""

import numpy as np
import pytest
import torch
from detectron2.modeling import build_model
from detectron2.structures import Boxes, Instances

from centermask.modeling.centermask_pr import inference
from centermask.modeling.centermask_pr.inference import masks_to_image
from tests.support.helpers import ROOT, get_config

SYNTHETIC = ROOT / "configs" / "quickstart" / "centermask_pr_lite_V_19_slim_dw_eSE_synthetic.yaml"
TINY = ["MODEL.FPN.OUT_CHANNELS", "32", "MODEL.CENTERMASK_PR.HEAD_CHANNELS", "16"]
TINY += ["MODEL.CENTERMASK_PR.SHAPE_SIZE", "8", "MODEL.CHANNELS_LAST", "False"]


def _axis_weights(out_size: int, in_size: int, scale: float) -> np.ndarray:
    """Bilinear weights (out_size, in_size), float64, one output pixel at a time: pixel o reads
    input coordinate (o + 0.5) * scale - 0.5, clamped to [0, in_size - 1]."""
    weights = np.zeros((out_size, in_size))
    for o in range(out_size):
        x = min(max((o + 0.5) * scale - 0.5, 0.0), in_size - 1.0)
        left = int(np.floor(x))
        right = min(left + 1, in_size - 1)
        weights[o, left] += 1.0 - (x - left)
        weights[o, right] += x - left
    return weights


def _reference(probs, stride, input_size, output_size, threshold):
    """One detection after the other, each resampled over the whole image in float64: the
    values (K, H_out, W_out) and the masks."""
    rows = _axis_weights(output_size[0], probs.shape[1], input_size[0] / (output_size[0] * stride))
    cols = _axis_weights(output_size[1], probs.shape[2], input_size[1] / (output_size[1] * stride))
    values = np.stack([rows @ p @ cols.T for p in probs.double().cpu().numpy()])
    return values, values > threshold


def _random_masks(num, height, width, generator):
    """Masks (num, height, width) nonzero in a random box each (a few at the border, one
    everywhere, one nowhere), like assembled masks."""
    probs = torch.zeros(num, height, width)
    for k in range(num):
        y0 = int(torch.randint(0, height, (1,), generator=generator))
        x0 = int(torch.randint(0, width, (1,), generator=generator))
        y1 = y0 + 1 + int(torch.randint(0, height - y0, (1,), generator=generator))
        x1 = x0 + 1 + int(torch.randint(0, width - x0, (1,), generator=generator))
        probs[k, y0:y1, x0:x1] = torch.rand(y1 - y0, x1 - x0, generator=generator)
    probs[0] = torch.rand(height, width, generator=generator)
    probs[1] = 0
    return probs


@pytest.mark.parametrize(
    "stride, input_size, output_size, chunk",
    [
        (4, (37, 45), (50, 61), 1 << 24),  # upsampled, one chunk
        (4, (37, 45), (50, 61), 500),  # the same in chunks of a few detections
        (2, (20, 24), (13, 9), 1 << 24),  # downsampled: some cells reach no output pixel
    ],
    ids=["upsampled", "chunked", "downsampled"],
)
def test_batched_masks_equal_the_per_detection_resampling(
    device, monkeypatch, stride, input_size, output_size, chunk
):
    monkeypatch.setattr(inference, "_CHUNK_ELEMENTS", chunk)
    generator = torch.Generator().manual_seed(1)
    probs = _random_masks(40, 12, 14, generator)
    masks = masks_to_image(probs.to(device), stride, input_size, output_size, threshold=0.4)
    values, expected = _reference(probs, stride, input_size, output_size, 0.4)
    assert masks.shape == expected.shape and masks.device.type == device
    # float32 against float64: only a value within rounding of the threshold may differ.
    decided = np.abs(values - 0.4) > 1e-5
    assert decided.mean() > 0.999
    assert np.array_equal(masks.cpu().numpy()[decided], expected[decided])
    assert expected[decided].any() and not expected[decided].all()
    assert not masks[1].any()


def test_masks_of_no_detections_are_an_empty_tensor(device):
    masks = masks_to_image(torch.zeros(0, 6, 8, device=device), 4, (20, 30), (40, 60))
    assert masks.shape == (0, 40, 60) and masks.dtype == torch.bool


def _detections(num, image_size, device):
    """``num`` detections with random boxes, classes and shape features in one image."""
    generator = torch.Generator().manual_seed(num)
    height, width = image_size
    corners = torch.rand(num, 2, 2, generator=generator) * torch.tensor([width, height])
    boxes = torch.cat([corners.min(dim=1).values, corners.max(dim=1).values + 4], dim=1)
    inst = Instances(image_size)
    inst.pred_boxes = Boxes(boxes.to(device))
    inst.scores = torch.rand(num, generator=generator).to(device)
    inst.pred_classes = torch.randint(0, 6, (num,), generator=generator).to(device)
    inst.shape_features = torch.randn(num, 16, generator=generator).to(device)
    return inst


@torch.no_grad()
def test_post_processing_syncs_do_not_grow_with_the_number_of_detections(device, count_syncs):
    model = build_model(get_config(SYNTHETIC, *TINY, "MODEL.CENTERMASK_PR.MASKNESS_SCORES", "True"))
    model.eval().to(device)
    image_size = (96, 128)
    saliency = torch.randn(1, 6, 24, 32, device=device)  # one channel per class
    counts = {}
    for num in (10, 100):
        detections = [_detections(num, image_size, device)]
        with count_syncs() as syncs:
            (masks,) = [
                r["instances"].pred_masks
                for r in model.finish(
                    detections, saliency, (24, 32), [{"height": 150, "width": 200}]
                )
            ]
            pasted = masks_to_image(
                torch.rand(num, 48, 64, device=device), 2, (96, 128), (150, 200)
            )
        counts[num] = len(syncs)
        assert masks.shape[1:] == (150, 200) and masks.any() and pasted.shape[0] == num
    print("syncs per post-processing (10, 100 detections):", counts)
    assert counts[10] == counts[100]
