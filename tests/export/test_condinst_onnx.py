"""CondInst made fast and exported: optimize_for_inference and the ONNX Runtime predictor give
the reference's detections and masks (same thresholds as CenterMask's export tests), on the small
input and on a batch of two differently sized images."""

import pytest
import torch

import centermask
from centermask.export.agreement import detection_agreement
from tests.support.condinst import check_detections
from tests.support.helpers import CONDINST_PARITY_DIRS, build_synthetic_model, parity_inputs

onnx = pytest.importorskip("onnx")
pytest.importorskip("onnxruntime")

from centermask.export.api import export_onnx  # noqa: E402
from centermask.export.condinst_onnx import OnnxCondInstPredictor  # noqa: E402

pytestmark = pytest.mark.slow

NAME = CONDINST_PARITY_DIRS[0]
RUNS = {"small__img0": ["small"]}


@pytest.fixture(scope="module")
def model():
    return build_synthetic_model(NAME)[0]


def test_optimized_condinst_matches_the_reference(model):
    fast = centermask.optimize_for_inference(model)
    assert type(fast).__name__ == "CondInstInference"
    check_detections(fast, NAME, RUNS)


def test_bf16_condinst_keeps_the_detections_and_returns_float32(model):
    """bf16 dense part, float32 decoding and mask head: the synthetic-weight model's 100
    detections (near-ties at the top-k cut) mostly survive with their masks."""
    inputs = parity_inputs(NAME, ["small"])
    with torch.no_grad():
        expected = model(inputs)[0]["instances"]
    got = centermask.optimize_for_inference(model, dtype="bf16")(inputs)[0]["instances"]
    assert got.scores.dtype == got.pred_boxes.tensor.dtype == torch.float32
    assert got.pred_masks.dtype == torch.bool
    agreement = detection_agreement(expected, got, iou_threshold=0.8)
    assert agreement.match_rate >= 0.9 and agreement.mean_mask_iou >= 0.95, agreement
    assert agreement.empty_reference_masks <= 0.1 * agreement.matched, agreement
    # The autocast ran: the scores differ from those of the float32 pipeline (same folding).
    float32 = centermask.optimize_for_inference(model)(inputs)[0]["instances"]
    assert not torch.equal(float32.scores, got.scores)


def test_onnxruntime_condinst_matches_the_reference_and_pytorch(model, tmp_path):
    paths = export_onnx(model, tmp_path, height=128, width=160)
    graph = onnx.load(str(paths["dense"])).graph
    dims = [d.dim_param or d.dim_value for d in graph.input[0].type.tensor_type.shape.dim]
    assert dims == ["batch", 3, "height", "width"]
    assert [o.name for o in graph.output][-1] == "mask_feats"
    predictor = OnnxCondInstPredictor(model, tmp_path, threads=2)
    check_detections(predictor, NAME, RUNS)
    # A batch of two sizes (the graph's sizes are dynamic): same as the PyTorch model.
    inputs = parity_inputs(NAME, ["small", "small"])
    inputs[0]["image"] = inputs[0]["image"][:, :96, :]  # padded batch 96x160, traced 128x160
    inputs[1]["image"] = inputs[1]["image"][:, 32:96, 16:112]
    for x in inputs:
        x["height"], x["width"] = x["image"].shape[1:]
    with torch.no_grad():
        expected = model(inputs)
    for ours, theirs in zip(predictor(inputs), expected):
        ours, theirs = ours["instances"], theirs["instances"]
        assert len(ours) == len(theirs) > 0 and ours.image_size == theirs.image_size
        assert (ours.scores - theirs.scores).abs().max() <= 1e-3
        assert (ours.pred_masks ^ theirs.pred_masks).sum(dim=(1, 2)).max() <= 2


def test_onnx_predictor_rejects_a_centermask_export(model, tmp_path):
    (tmp_path / "centermask_export.json").write_text('{"format": "centermask-onnx-v1"}')
    with pytest.raises(
        ValueError,
        match="describes a .centermask-onnx-v1. export, but this predictor reads .condinst-onnx-v1.",
    ):
        OnnxCondInstPredictor(model, tmp_path)
