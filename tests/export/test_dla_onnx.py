"""CenterMask-PR on DLA-34 exports to ONNX with the plain-conv up-path and gives the eager model's
detections under ONNX Runtime; with the deformable up-path the export stops before tracing and
names the key to change."""

import pytest
import torch
from detectron2.modeling import build_model

from centermask.export.centermask_pr_onnx import (
    OnnxCenterMaskPRPredictor,
    export_centermask_pr_onnx,
)
from tests.support.helpers import QUICK_CONFIGS, get_config

CONFIG = QUICK_CONFIGS / "centermask_pr_DLA_34_synthetic_instant_test.yaml"

pytestmark = [pytest.mark.slow, pytest.mark.usefixtures("one_thread")]


def _model(deformable: bool):
    cfg = get_config(CONFIG, "MODEL.DLA.DEFORMABLE_UP", str(deformable),
                     "MODEL.CENTERMASK_PR.SCORE_THRESH_TEST", "0.0")  # fmt: skip
    model = build_model(cfg)
    torch.nn.init.constant_(model.detector.size_head[-1].bias, 4.0)  # boxes of ~4 cells
    with torch.no_grad():  # BN statistics away from the identity
        for m in model.modules():
            if isinstance(m, torch.nn.BatchNorm2d):
                m.running_mean.uniform_(-0.1, 0.1)
                m.running_var.uniform_(0.5, 1.5)
    return model.eval()


def test_plain_up_path_exports_and_onnxruntime_matches_eager(tmp_path):
    model = _model(deformable=False)
    export_centermask_pr_onnx(model, tmp_path, height=64, width=64)
    predictor = OnnxCenterMaskPRPredictor(model, tmp_path, threads=1)
    # Another size than the export sample: the graph has dynamic axes.
    inputs = [{"image": torch.rand(3, 64, 96) * 255, "height": 80, "width": 120}]
    with torch.no_grad():
        expected = model(inputs)[0]["instances"]
    got = predictor(inputs)[0]["instances"]
    assert len(got) == len(expected) > 10
    torch.testing.assert_close(got.scores, expected.scores, atol=1e-4, rtol=1e-4)
    torch.testing.assert_close(
        got.pred_boxes.tensor, expected.pred_boxes.tensor, atol=1e-3, rtol=1e-4
    )


def test_deformable_up_path_is_refused_before_tracing_naming_the_key(tmp_path):
    with pytest.raises(ValueError, match="MODEL.DLA.DEFORMABLE_UP False"):
        export_centermask_pr_onnx(_model(deformable=True), tmp_path / "out", height=64, width=64)
    assert not (tmp_path / "out").exists()
