"""CenterMask-PR exported to ONNX gives the eager model's detections under ONNX Runtime."""

import pytest
import torch

from centermask.export.centermask_pr_onnx import (
    DenseCenterMaskPR,
    OnnxCenterMaskPRPredictor,
    export_centermask_pr_onnx,
)
from tests.support.centermask_pr import fixed_batch, tiny_model, train_steps
from tests.support.helpers import run_cli

pytestmark = [pytest.mark.slow, pytest.mark.usefixtures("one_thread")]


def test_onnxruntime_predictor_matches_the_eager_model(tmp_path):
    model = tiny_model()
    torch.nn.init.constant_(model.detector.size_head[-1].bias, 4.0)
    train_steps(model, fixed_batch(), 2)  # BN statistics and heads away from their initial values
    model.eval()
    export_centermask_pr_onnx(model, tmp_path, height=64, width=64)
    predictor = OnnxCenterMaskPRPredictor(model, tmp_path, threads=1)
    # Another size and batch than the export sample: the graph has dynamic axes.
    inputs = [
        {"image": torch.rand(3, 64, 96) * 255, "height": 80, "width": 120},
        {"image": torch.rand(3, 60, 64) * 255},
    ]
    with torch.no_grad():
        expected = model(inputs)
        images = model.preprocess_image(inputs).tensor
        reference = DenseCenterMaskPR(model)(images)
    for name, ours, theirs in zip(predictor.output_names, predictor.dense(images), reference):
        torch.testing.assert_close(ours, theirs, atol=1e-4, rtol=1e-4, msg=name)
    got = predictor(inputs)
    for a, b in zip(got, expected):
        a, b = a["instances"], b["instances"]
        # Float rounding may flip a peak scoring at SCORE_THRESH_TEST or a box of zero width, and
        # reorder near-equal scores of this barely trained model: every detection of one must be
        # in the other (same score, box and mask), up to one at the margin.
        assert abs(len(a) - len(b)) <= 1 and len(b) > 10
        score_gap = (a.scores[:, None] - b.scores[None, :]).abs()
        box_gap = (a.pred_boxes.tensor[:, None] - b.pred_boxes.tensor[None, :]).abs().amax(-1)
        gap, match = (score_gap / 1e-4 + box_gap / 1e-3).min(dim=1)
        matched = gap < 2
        assert matched.sum() >= min(len(a), len(b)) - 1
        differing = a.pred_masks[matched] != b.pred_masks[match[matched]]
        assert differing.float().mean() < 1e-3


def test_the_fcos_variant_is_refused_by_name(tmp_path):
    from tests.support.centermask_pr import FCOS

    with pytest.raises(TypeError, match="MODEL.CENTERMASK_PR.DETECTOR 'heatmap'"):
        export_centermask_pr_onnx(tiny_model(*FCOS), tmp_path)


def test_export_model_tool_writes_and_checks_the_centermask_pr_graph(tmp_path, capsys):
    from centermask.cli import export_model
    from tests.support.centermask_pr import SYNTHETIC, TINY

    run_cli(
        export_model,
        ["--config-file", str(SYNTHETIC), "--synthetic-weights", "--output", str(tmp_path)]
        + ["--height", "64", "--width", "64", "--check", *TINY],
    )
    assert (tmp_path / "centermask_pr_dense.onnx").is_file()
    assert "check passed" in capsys.readouterr().out
