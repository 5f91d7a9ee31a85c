"""ONNX export: onnxruntime gives the detections of the PyTorch model (and of the reference)."""

import numpy as np
import pytest
import torch

from tests.support.export import (
    compare_to,
    failures,
    parity_inputs,
    pipeline_arrays,
    synthetic_model,
)

onnx = pytest.importorskip("onnx")
pytest.importorskip("onnxruntime")

from centermask.acceleration import CenterMaskInference  # noqa: E402
from centermask.export.api import export_onnx  # noqa: E402
from centermask.export.centermask_onnx import (  # noqa: E402
    OnnxCenterMaskPredictor,
    export_torchscript,
)

pytestmark = pytest.mark.slow

LITE = "A_centermask_lite_V_19_slim_dw_eSE_FPN_ms_4x"
PREFIXES = ["single__img0", "single__img1", "small__img0", "given__img0"]


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    folder = tmp_path_factory.mktemp("onnx_lite")
    return export_onnx(synthetic_model(LITE), folder), folder


@pytest.fixture(scope="module")
def pytorch_arrays():
    return pipeline_arrays(synthetic_model(LITE), LITE, PREFIXES)


def test_graphs_have_dynamic_sizes_and_keep_vovnet_names(exported):
    paths, _ = exported
    graph = onnx.load(str(paths["dense"])).graph
    dims = [d.dim_param or d.dim_value for d in graph.input[0].type.tensor_type.shape.dim]
    assert dims == ["batch", 3, "height", "width"]
    assert [o.name for o in graph.output][:3] == ["p3", "p4", "p5"]
    # VoVNet module names contain "/"; they survive as initializer names.
    assert any("/" in init.name for init in graph.initializer)
    heads = onnx.load(str(paths["mask_heads"])).graph
    assert [i.name for i in heads.input] == ["roi_features", "classes"]


@pytest.mark.parametrize("onnx_heads", [True, False])
def test_onnxruntime_matches_pytorch_and_the_reference(exported, pytorch_arrays, onnx_heads):
    _, folder = exported
    predictor = OnnxCenterMaskPredictor(
        synthetic_model(LITE), folder, threads=2, use_onnx_mask_heads=onnx_heads
    )
    outputs = pipeline_arrays(predictor, LITE, PREFIXES)  # image_1 has another padded size
    report = compare_to(pytorch_arrays, outputs, PREFIXES)
    assert not failures(report), failures(report)
    for prefix in PREFIXES:
        final = report["detections"][prefix]["final"]
        assert final["match_rate"] == 1.0 and final["max_score_diff"] <= 1e-3
        assert final["mask_iou_min"] >= 0.98 or final["mask_xor_pixels_max"] <= 2
    report = compare_to(LITE, outputs, PREFIXES)
    assert not failures(report) and report["all_ok"]


def test_predictor_from_config_needs_no_weights(exported, pytorch_arrays):
    from tests.support.helpers import get_config, parity_config_file

    _, folder = exported
    cfg = get_config(parity_config_file(LITE))
    predictor = OnnxCenterMaskPredictor.from_config(cfg, folder, threads=2)
    report = compare_to(
        pytorch_arrays, pipeline_arrays(predictor, LITE, PREFIXES[:1]), PREFIXES[:1]
    )
    assert not failures(report)


def test_batched_inputs_of_different_sizes(exported):
    _, folder = exported
    predictor = OnnxCenterMaskPredictor(synthetic_model(LITE), folder, threads=2)
    inputs = parity_inputs(LITE, [0, 1])
    with torch.no_grad():
        expected = synthetic_model(LITE)(inputs)
    actual = predictor(inputs)
    for e, a in zip(expected, actual):
        e, a = e["instances"], a["instances"]
        assert torch.equal(e.pred_classes, a.pred_classes)
        assert np.abs((e.scores - a.scores).numpy()).max() <= 1e-3


def test_missing_export_is_a_clear_error(tmp_path):
    with pytest.raises(FileNotFoundError, match="export the model first"):
        OnnxCenterMaskPredictor(synthetic_model(LITE), tmp_path)


def test_torchscript_trace_of_the_dense_part(tmp_path, pytorch_arrays):
    model = synthetic_model(LITE)
    path = export_torchscript(model, tmp_path, height=128, width=160)
    pipeline = CenterMaskInference(model, torch.jit.load(str(path)))
    prefixes = ["single__img1", "small__img0"]  # other sizes than the traced one
    report = compare_to(pytorch_arrays, pipeline_arrays(pipeline, LITE, prefixes), prefixes)
    assert not failures(report)
