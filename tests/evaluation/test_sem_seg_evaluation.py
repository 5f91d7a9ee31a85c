"""The semantic-segmentation evaluator (panoptic configs) runs on detectron2 v0.6 with NumPy 2."""

import numpy as np
import pytest
import torch
from detectron2.data import DatasetCatalog, MetadataCatalog
from PIL import Image

from centermask.evaluation import SemSegEvaluator
from centermask.evaluation.sem_seg_evaluation import removed_numpy_aliases

IGNORE = 255


@pytest.fixture
def sem_seg_dataset(tmp_path):
    rng = np.random.default_rng(0)
    records, gts = [], []
    for i in range(2):
        gt = rng.integers(0, 3, size=(12, 16)).astype(np.uint8)
        gt[:2] = IGNORE
        Image.fromarray(gt).save(tmp_path / f"gt{i}.png")
        records.append(
            {"file_name": f"img{i}.jpg", "sem_seg_file_name": str(tmp_path / f"gt{i}.png")}
        )
        gts.append(gt)
    name = f"sem_seg_eval_test_{tmp_path.name}"
    DatasetCatalog.register(name, lambda: records)
    MetadataCatalog.get(name).set(stuff_classes=["a", "b", "c"], ignore_label=IGNORE)
    yield name, records, gts
    DatasetCatalog.remove(name)
    MetadataCatalog.remove(name)


def _expected_miou(gts, preds):
    ious = []
    for c in range(3):
        inter = union = 0
        for gt, pred in zip(gts, preds):
            valid = gt != IGNORE
            inter += np.sum((gt == c) & (pred == c) & valid)
            union += np.sum(((gt == c) | (pred == c)) & valid)
        ious.append(inter / union)
    return 100 * np.mean(ious)


def test_miou_matches_a_direct_count_and_leaves_numpy_unchanged(sem_seg_dataset):
    name, records, gts = sem_seg_dataset
    preds = [gts[0].astype(np.int64) % 3, (gts[1].astype(np.int64) + 1) % 3]
    preds[1][:6] = gts[1][:6] % 3  # half of the second image right, half wrong
    had_int = "int" in vars(np)
    evaluator = SemSegEvaluator(name, distributed=False)
    evaluator.reset()
    for record, pred in zip(records, preds):
        logits = torch.nn.functional.one_hot(torch.from_numpy(pred), 3).permute(2, 0, 1).float()
        evaluator.process([record], [{"sem_seg": logits}])
    result = evaluator.evaluate()["sem_seg"]
    assert result["mIoU"] == pytest.approx(_expected_miou(gts, preds))
    assert 0 < result["mIoU"] < 100
    assert ("int" in vars(np)) == had_int


def test_aliases_exist_only_inside_the_block():
    before = {name: name in vars(np) for name in ("int", "float")}
    with removed_numpy_aliases():
        assert np.int is int and np.float is float
    assert {name: name in vars(np) for name in ("int", "float")} == before
