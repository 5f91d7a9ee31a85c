"""Evaluators: mask AP ranks by mask_scores (MaskIoU), box AP by scores."""

import json
import sys
import types

import numpy as np
import pytest
import torch
from detectron2.data import MetadataCatalog
from detectron2.structures import Boxes, Instances

from centermask.evaluation import CityscapesInstanceEvaluator, COCOEvaluator


def _mask(box, size=(40, 40)):
    x0, y0, x1, y1 = box
    m = torch.zeros(size, dtype=torch.bool)
    m[y0:y1, x0:x1] = True
    return m


@pytest.fixture
def one_object_dataset(tmp_path):
    """One 40x40 image with a single object of COCO category 7 at (5, 5)-(25, 25)."""
    coco = {
        "info": {},
        "licenses": [],
        "images": [{"id": 1, "width": 40, "height": 40, "file_name": "a.png"}],
        "categories": [{"id": 7, "name": "thing"}],
        "annotations": [
            {
                "id": 1,
                "image_id": 1,
                "category_id": 7,
                "bbox": [5, 5, 20, 20],
                "area": 400,
                "iscrowd": 0,
                "segmentation": [[5, 5, 25, 5, 25, 25, 5, 25]],
            }
        ],
    }
    path = tmp_path / "gt.json"
    path.write_text(json.dumps(coco))
    name = f"centermask_test_eval_{tmp_path.name}"
    MetadataCatalog.get(name).set(
        json_file=str(path), thing_classes=["thing"], thing_dataset_id_to_contiguous_id={7: 0}
    )
    yield name
    MetadataCatalog.remove(name)


def _outputs():
    # A correct detection with a low box score but a high mask score, and a wrong one with the
    # opposite: box AP sees the wrong one first, mask AP the right one.
    good, bad = (5, 5, 25, 25), (28, 28, 38, 38)
    instances = Instances(
        (40, 40),
        pred_boxes=Boxes(torch.tensor([good, bad], dtype=torch.float32)),
        scores=torch.tensor([0.5, 0.9]),
        mask_scores=torch.tensor([0.9, 0.1]),
        pred_classes=torch.tensor([0, 0]),
        pred_masks=torch.stack([_mask(good), _mask(bad)]),
    )
    return [{"instances": instances}]


def test_coco_evaluator_uses_mask_scores_for_segm_and_scores_for_bbox(one_object_dataset, tmp_path):
    evaluator = COCOEvaluator(one_object_dataset, distributed=False, output_dir=str(tmp_path))
    assert evaluator._use_fast_impl is False
    evaluator.reset()
    evaluator.process([{"image_id": 1, "height": 40, "width": 40}], _outputs())
    results = evaluator.evaluate()
    assert results["segm"]["AP"] == pytest.approx(100.0)
    assert results["bbox"]["AP"] == pytest.approx(50.0, abs=0.5)
    written = json.loads((tmp_path / "coco_instances_results.json").read_text())
    assert [r["score"] for r in written] == pytest.approx([0.5, 0.9])
    assert [r["mask_score"] for r in written] == pytest.approx([0.9, 0.1])
    assert {r["category_id"] for r in written} == {7}


def test_coco_evaluator_without_mask_scores_behaves_like_detectron2(one_object_dataset):
    outputs = _outputs()
    outputs[0]["instances"].remove("mask_scores")
    evaluator = COCOEvaluator(one_object_dataset, distributed=False)
    evaluator.reset()
    evaluator.process([{"image_id": 1, "height": 40, "width": 40}], outputs)
    results = evaluator.evaluate()
    assert results["segm"]["AP"] == pytest.approx(50.0, abs=0.5)


def test_cityscapes_instance_evaluator_writes_mask_scores(tmp_path, monkeypatch):
    labels = types.ModuleType("cityscapesscripts.helpers.labels")
    labels.name2label = {"thing": types.SimpleNamespace(id=26)}
    for module in ["cityscapesscripts", "cityscapesscripts.helpers"]:
        monkeypatch.setitem(sys.modules, module, types.ModuleType(module))
    monkeypatch.setitem(sys.modules, "cityscapesscripts.helpers.labels", labels)
    MetadataCatalog.get("centermask_test_cityscapes").set(thing_classes=["thing"])
    evaluator = CityscapesInstanceEvaluator("centermask_test_cityscapes")
    evaluator._temp_dir = str(tmp_path)
    outputs = _outputs()
    evaluator.process([{"file_name": "x/frankfurt_000000_000294_leftImg8bit.png"}], outputs)
    lines = (tmp_path / "frankfurt_000000_000294_leftImg8bit_pred.txt").read_text().split("\n")
    scores = [float(line.split()[2]) for line in lines if line]
    assert scores == pytest.approx([0.9, 0.1])
    assert outputs[0]["instances"].scores.tolist() == pytest.approx([0.5, 0.9])  # untouched
    assert np.asarray(outputs[0]["instances"].pred_masks).shape == (2, 40, 40)


def test_nonfinite_detections_are_dropped_with_a_warning_naming_the_image(
    one_object_dataset, tmp_path, caplog
):
    clean = _outputs()[0]["instances"]
    nan_box, inf_score = (clean.pred_boxes.tensor[0].clone(), clean.pred_boxes.tensor[0].clone())
    nan_box[2] = float("nan")
    broken = Instances(
        (40, 40),
        pred_boxes=Boxes(torch.cat([clean.pred_boxes.tensor, nan_box[None], inf_score[None]])),
        scores=torch.cat([clean.scores, torch.tensor([0.99, float("inf")])]),
        mask_scores=torch.cat([clean.mask_scores, torch.tensor([0.99, 0.99])]),
        pred_classes=torch.tensor([0, 0, 0, 0]),
        pred_masks=torch.cat([clean.pred_masks, clean.pred_masks]),
    )
    evaluator = COCOEvaluator(one_object_dataset, distributed=False, output_dir=str(tmp_path))
    evaluator.reset()
    image = {"image_id": 1, "height": 40, "width": 40, "file_name": "images/a.png"}
    evaluator.process([image], [{"instances": broken}])
    results = evaluator.evaluate()
    assert "images/a.png: dropped 2 of 4 detections" in caplog.text
    assert results["segm"]["AP"] == pytest.approx(100.0)
    assert results["bbox"]["AP"] == pytest.approx(50.0, abs=0.5)
    written = json.loads((tmp_path / "coco_instances_results.json").read_text())
    assert [r["score"] for r in written] == pytest.approx([0.5, 0.9])
