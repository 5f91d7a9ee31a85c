"""Full-image parity of FCOS (backbone + FPN + FCOS, synthetic weights): test-time detections of
each image alone, and training losses for the batch and for each image alone."""

import json
from functools import lru_cache

import pytest
import torch
from detectron2.modeling import build_backbone
from detectron2.structures import Boxes, ImageList, Instances

from tests.support.fcos import check_raw_detections, synthetic_fcos
from tests.support.helpers import PARITY_DIRS, load_npz, parity_dir, parity_keys, synth_state_dict

LOSS_REL_TOL = 1e-4
FCOS_LOSSES = ["loss_fcos_cls", "loss_fcos_loc", "loss_fcos_ctr"]

pytestmark = pytest.mark.slow


@lru_cache(maxsize=None)
def _model(name):
    """(backbone, fcos, cfg) with the synthetic weights; cached for the tests of one folder."""
    fcos, cfg = synthetic_fcos(name)
    backbone = build_backbone(cfg)
    keys = {k: s for k, s in parity_keys(name).items() if k.startswith("backbone.")}
    weights = {k[len("backbone.") :]: v for k, v in synth_state_dict(keys).items()}
    backbone.load_state_dict(weights, strict=True)
    backbone.eval()
    return backbone, fcos, cfg


def _images(name, cfg):
    """The resized BGR images, normalised with the config's pixel mean/std, CHW float32."""
    inputs = load_npz(name, "inputs.npz")
    mean = torch.tensor(cfg.MODEL.PIXEL_MEAN).view(3, 1, 1)
    std = torch.tensor(cfg.MODEL.PIXEL_STD).view(3, 1, 1)
    return [
        (torch.from_numpy(inputs[f"image_{i}_bgr_resized"]).permute(2, 0, 1).float() - mean) / std
        for i in range(2)
    ]


def _gt_instances(name):
    fed = json.loads((parity_dir(name) / "losses.json").read_text())["gt_as_fed_resized_coords"]
    return [
        Instances(
            tuple(g["resized_hw"]),
            gt_boxes=Boxes(torch.tensor(g["gt_boxes_xyxy"], dtype=torch.float32)),
            gt_classes=torch.tensor(g["gt_classes"], dtype=torch.int64),
        )
        for g in fed
    ]


@lru_cache(maxsize=None)
def _features(name, which):
    """Backbone features and the padded ImageList of image 0, image 1 or both ("batch").

    Padding is zeros after normalisation up to a multiple of 32, as in GeneralizedRCNN. Cached so
    the detection and loss tests of a folder share the expensive backbone runs.
    """
    backbone, _, cfg = _model(name)
    images = _images(name, cfg)
    selected = images if which == "batch" else [images[int(which[-1])]]
    batch = ImageList.from_tensors(selected, size_divisibility=32)
    with torch.no_grad():
        return batch, backbone(batch.tensor)


@pytest.fixture(scope="module", autouse=True)
def _release_cached_features():
    yield
    _features.cache_clear()
    _model.cache_clear()


def _run(name, which, gt=None):
    _, fcos, _ = _model(name)
    images, features = _features(name, which)
    with torch.no_grad():
        return fcos(images, features, gt)


@pytest.mark.parametrize("name", PARITY_DIRS)
def test_full_image_detections_match_reference(name):
    _, fcos, _ = _model(name)
    fcos.eval()
    for i in range(2):
        (detections,), _ = _run(name, f"img{i}")
        assert detections.image_size == _features(name, f"img{i}")[0].image_sizes[0]
        check_raw_detections(name, f"single__img{i}", detections)


@pytest.mark.parametrize("name", PARITY_DIRS)
def test_full_image_losses_match_reference(name):
    _, fcos, _ = _model(name)
    gt = _gt_instances(name)
    reference = json.loads((parity_dir(name) / "losses.json").read_text())
    runs = {
        "batch": ("batch", gt),
        "single_img0": ("img0", gt[:1]),
        "single_img1": ("img1", gt[1:]),
    }
    failures = []
    fcos.train()
    try:
        for section, (which, section_gt) in runs.items():
            _, losses = _run(name, which, section_gt)
            for loss_name in FCOS_LOSSES:
                ref, ours = reference[section][loss_name], losses[loss_name]
                assert ours.dtype == torch.float32, f"{section}/{loss_name}: {ours.dtype}"
                rel = abs(ours.item() - ref) / abs(ref)
                if rel > LOSS_REL_TOL:
                    failures.append(
                        f"{section}/{loss_name}: {ours.item():.7g} vs {ref:.7g} (rel {rel:.2g})"
                    )
    finally:
        fcos.eval()
    assert not failures, f"{name}: " + "; ".join(failures)
