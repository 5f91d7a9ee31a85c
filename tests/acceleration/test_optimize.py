"""optimize_for_inference: faster pipeline, same detections as the reference (fp32 parity)."""

import pytest
import torch
from torch import nn

import centermask
from centermask.acceleration import CenterMaskInference
from tests.support.export import (
    RUNS,
    assert_detections_agree,
    compare_to,
    failures,
    parity_inputs,
    pipeline_arrays,
    synthetic_model,
)
from tests.support.helpers import PARITY_DIRS

LITE = "A_centermask_lite_V_19_slim_dw_eSE_FPN_ms_4x"


@pytest.fixture(scope="module")
def optimized_lite():
    return centermask.optimize_for_inference(synthetic_model(LITE))


def test_entry_point_is_exported_and_leaves_the_model_untouched(optimized_lite):
    model = synthetic_model(LITE)
    assert centermask.optimize_for_inference is centermask.acceleration.optimize_for_inference
    assert isinstance(optimized_lite, CenterMaskInference) and not optimized_lite.training
    # the original still has its FrozenBNs and its full mask predictor
    assert any(type(m).__name__ == "FrozenBatchNorm2d" for m in model.modules())
    assert isinstance(model.roi_heads.mask_head.predictor, nn.Conv2d)
    assert not any(type(m).__name__ == "FrozenBatchNorm2d" for m in optimized_lite.modules())


@pytest.mark.slow
def test_lite_detections_match_the_reference(optimized_lite):
    prefixes = list(RUNS)
    report = compare_to(LITE, pipeline_arrays(optimized_lite, LITE, prefixes), prefixes)
    assert not failures(report) and report["all_ok"]


@pytest.mark.slow
@pytest.mark.parametrize("name", [n for n in PARITY_DIRS if n != LITE])
def test_large_models_match_the_reference_on_one_image(name):
    fast = centermask.optimize_for_inference(synthetic_model(name))
    report = compare_to(name, pipeline_arrays(fast, name, ["single__img0"]), ["single__img0"])
    assert not failures(report) and report["all_ok"]


@pytest.mark.slow
def test_batched_call_equals_model_call(optimized_lite):
    model = synthetic_model(LITE)
    inputs = parity_inputs(LITE, [0, 1])
    with torch.no_grad():
        expected = model(inputs)
    actual = optimized_lite(inputs)
    for e, a in zip(expected, actual):
        e, a = e["instances"], a["instances"]
        assert list(a.get_fields()) == list(e.get_fields())
        assert torch.equal(a.pred_classes, e.pred_classes)
        assert torch.allclose(a.scores, e.scores, atol=1e-4)
        # Per instance: boxes matched at IoU >= 0.99, masks agreeing. With synthetic weights 19
        # of the 50 pasted masks of the first image are empty: the masks before pasting are
        # compared too, every probability of every instance.
        assert_detections_agree(e, a, score_atol=1e-4, max_empty_fraction=0.5)
    with torch.no_grad():
        expected = model.inference(inputs, do_postprocess=False)
    actual = optimized_lite.inference(inputs, do_postprocess=False)
    for e, a in zip(expected, actual):
        assert len(a) == len(e) > 0
        assert a.pred_masks.shape == e.pred_masks.shape and e.pred_masks.shape[-1] == 28
        torch.testing.assert_close(a.pred_masks, e.pred_masks, atol=1e-4, rtol=1e-4)
        assert float(e.pred_masks.amax()) > 0.5  # some pixels are on


def test_without_fusions_or_channels_last_the_outputs_are_the_same():
    model = synthetic_model(LITE)
    inputs = parity_inputs(LITE, ["small"])
    reference = centermask.optimize_for_inference(model)(inputs)[0]["instances"]
    plain = centermask.optimize_for_inference(
        model, fuse=False, channels_last=False, fold_frozen_bn=False
    )
    instances = plain(inputs)[0]["instances"]
    assert torch.equal(instances.pred_classes, reference.pred_classes)
    assert torch.allclose(instances.scores, reference.scores, atol=1e-5)


def test_non_centermask_models_are_rejected():
    with pytest.raises(TypeError, match="GeneralizedRCNN"):
        centermask.optimize_for_inference(nn.Linear(2, 2))


def test_unknown_dtype_is_rejected():
    with pytest.raises(ValueError, match="unknown dtype"):
        centermask.optimize_for_inference(synthetic_model(LITE), dtype="int3")
