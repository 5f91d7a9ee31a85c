"""faster-coco-eval (the ``eval`` extra) computes the same COCO AP as pycocotools, and pycocotools
stays in use when it is not installed."""

import sys

import faster_coco_eval
import numpy as np
import pytest
import torch
from detectron2.data import DatasetCatalog, MetadataCatalog
from detectron2.structures import BitMasks, Boxes, BoxMode, Instances, PolygonMasks
from pycocotools.cocoeval import COCOeval

from centermask.data import register_coco_checked
from centermask.data.synthetic import annotation_path, generate_synthetic
from centermask.data.synthetic_scene import CLASS_NAMES, SceneConfig
from centermask.evaluation import COCOEvaluator, cocoeval_class


@pytest.fixture(scope="module")
def val_split(tmp_path_factory):
    """A small synthetic val split (6 images), registered under a test name."""
    root = tmp_path_factory.mktemp("synthetic")
    scene = SceneConfig(min_short_side=64, max_short_side=96, min_object_size=10)
    generate_synthetic(root, 1, 6, seed=3, scene=scene, progress=False)
    name = "centermask_test_faster_eval_val"
    register_coco_checked(
        name, {"thing_classes": list(CLASS_NAMES)}, annotation_path(root, "val"), root / "val"
    )
    yield name
    DatasetCatalog.remove(name)
    MetadataCatalog.remove(name)


def _noisy_predictions(dataset_name):
    """Model-like outputs: every object found with a jittered box, a shifted mask, a random score
    and mask score, some with a wrong class, plus one false positive per image."""
    rng = np.random.default_rng(0)
    inputs, outputs = [], []
    for record in DatasetCatalog.get(dataset_name):
        height, width = record["height"], record["width"]
        annotations = record["annotations"]
        boxes = np.array([BoxMode.convert(a["bbox"], a["bbox_mode"], BoxMode.XYXY_ABS)
                          for a in annotations] + [[2, 2, 20, 20]], dtype=np.float32)  # fmt: skip
        boxes += rng.normal(0, 2, boxes.shape).astype(np.float32)
        polygons = PolygonMasks([a["segmentation"] for a in annotations])
        masks = BitMasks.from_polygon_masks(polygons, height, width).tensor
        masks = torch.roll(masks, shifts=int(rng.integers(-2, 3)), dims=2)
        masks = torch.cat([masks, torch.zeros(1, height, width, dtype=torch.bool)])
        masks[-1, 2:20, 2:20] = True
        classes = [a["category_id"] for a in annotations] + [0]
        classes = [c if rng.random() > 0.15 else (c + 1) % len(CLASS_NAMES) for c in classes]
        count = len(classes)
        instances = Instances(
            (height, width),
            pred_boxes=Boxes(torch.from_numpy(boxes)),
            scores=torch.from_numpy(rng.random(count).astype(np.float32)),
            mask_scores=torch.from_numpy(rng.random(count).astype(np.float32)),
            pred_classes=torch.tensor(classes),
            pred_masks=masks,
        )
        inputs.append({"image_id": record["image_id"], "height": height, "width": width})
        outputs.append({"instances": instances})
    return inputs, outputs


def _evaluate(dataset_name, **kwargs):
    evaluator = COCOEvaluator(dataset_name, distributed=False, **kwargs)
    evaluator.reset()
    inputs, outputs = _noisy_predictions(dataset_name)
    evaluator.process(inputs, outputs)
    return evaluator, evaluator.evaluate()


def test_faster_coco_eval_gives_the_pycocotools_ap_for_boxes_and_masks(val_split):
    fast, fast_results = _evaluate(val_split, use_faster_coco_eval=True)
    slow, slow_results = _evaluate(val_split, use_faster_coco_eval=False)
    assert fast.cocoeval_impl is faster_coco_eval.COCOeval_faster
    assert slow.cocoeval_impl is COCOeval
    assert set(slow_results) == {"bbox", "segm"}
    for task in ("bbox", "segm"):
        assert 5 < slow_results[task]["AP"] < 95, slow_results[task]  # neither trivial nor empty
        # Every AP, per class included; the two sum the precisions in a different order, so
        # the last bit of a mean may differ (e.g. 50.0 and 49.99999999999999).
        assert set(fast_results[task]) == set(slow_results[task])
        for key, value in slow_results[task].items():
            assert fast_results[task][key] == pytest.approx(value, abs=1e-9, nan_ok=True), key


def test_pycocotools_is_used_when_faster_coco_eval_is_not_installed(val_split, monkeypatch):
    monkeypatch.setitem(sys.modules, "faster_coco_eval", None)  # makes the import fail
    assert cocoeval_class() is COCOeval
    evaluator, results = _evaluate(val_split)
    assert evaluator.cocoeval_impl is COCOeval
    assert 5 < results["segm"]["AP"] < 95
    with pytest.raises(ImportError, match=r"pip install 'centermask\[eval\]'"):
        COCOEvaluator(val_split, distributed=False, use_faster_coco_eval=True)
