"""Evaluators are chosen by the data set's evaluator_type, with CenterMask's mask_scores ones."""

import pytest
from detectron2.data import MetadataCatalog
from detectron2.evaluation import DatasetEvaluators

from centermask import evaluation as cm_evaluation
from centermask.config import get_cfg
from centermask.engine import build_evaluator
from centermask.engine import evaluators as evaluators_module


class _Recorder:
    """Stands for an evaluator class; remembers how it was built."""

    def __init__(self, *args, **kwargs):
        self.args, self.kwargs = args, kwargs


@pytest.fixture
def recorders(monkeypatch):
    names = {}
    for name in (
        "COCOEvaluator",
        "CityscapesInstanceEvaluator",
        "CityscapesSemSegEvaluator",
        "SemSegEvaluator",
    ):
        names[name] = type(name, (_Recorder,), {})
        monkeypatch.setattr(evaluators_module, name, names[name])
    for name in ("COCOPanopticEvaluator", "LVISEvaluator"):
        names[name] = type(name, (_Recorder,), {})
        monkeypatch.setattr(evaluators_module.d2_evaluation, name, names[name])
    return names


def _dataset(name, evaluator_type):
    if name not in MetadataCatalog.list():
        MetadataCatalog.get(name).set(evaluator_type=evaluator_type)
    return name


def test_the_module_uses_centermask_evaluators():
    assert evaluators_module.COCOEvaluator is cm_evaluation.COCOEvaluator
    assert (
        evaluators_module.CityscapesInstanceEvaluator is cm_evaluation.CityscapesInstanceEvaluator
    )
    assert evaluators_module.SemSegEvaluator is cm_evaluation.SemSegEvaluator


def test_coco_gets_the_mask_scores_coco_evaluator_without_compiled_ops(recorders, tmp_path):
    cfg = get_cfg()
    cfg.OUTPUT_DIR = str(tmp_path)
    evaluator = build_evaluator(cfg, _dataset("eval_test_coco", "coco"))
    assert type(evaluator).__name__ == "COCOEvaluator"
    assert evaluator.kwargs == {"output_dir": str(tmp_path / "inference"), "use_fast_impl": False}


def test_panoptic_gets_sem_seg_coco_and_panoptic_evaluators(recorders, tmp_path):
    evaluator = build_evaluator(get_cfg(), _dataset("eval_test_pan", "coco_panoptic_seg"), "o")
    assert isinstance(evaluator, DatasetEvaluators)
    names = [type(e).__name__ for e in evaluator._evaluators]
    assert names == ["SemSegEvaluator", "COCOEvaluator", "COCOPanopticEvaluator"]


@pytest.mark.parametrize(
    "evaluator_type, expected",
    [
        ("cityscapes_instance", "CityscapesInstanceEvaluator"),
        ("cityscapes_sem_seg", "CityscapesSemSegEvaluator"),
        ("lvis", "LVISEvaluator"),
        ("sem_seg", "SemSegEvaluator"),
    ],
)
def test_other_types(recorders, evaluator_type, expected):
    evaluator = build_evaluator(get_cfg(), _dataset(f"eval_test_{evaluator_type}", evaluator_type))
    assert type(evaluator).__name__ == expected


def test_unknown_evaluator_type_names_it_and_the_choices():
    with pytest.raises(NotImplementedError, match="'mystery'.*coco, coco_panoptic_seg"):
        build_evaluator(get_cfg(), _dataset("eval_test_unknown", "mystery"))
