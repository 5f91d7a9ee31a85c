"""CenterMask-PR exported to ONNX (float32 and int8), with either detector, gives the eager model's
detections under ONNX Runtime."""

import json

import pytest
import torch

from centermask.export.centermask_pr_onnx import (
    DenseCenterMaskPR,
    OnnxCenterMaskPRPredictor,
    export_centermask_pr_onnx,
)
from tests.support.centermask_pr import (
    FCOS,
    FCOS_TEST,
    SYNTHETIC,
    SYNTHETIC_FCOS,
    TINY,
    fixed_batch,
    matched_detections,
    tiny_model,
    train_steps,
    trained_fcos_model,
)
from tests.support.export import check_qdq_int8_graph
from tests.support.helpers import load_tool, run_cli

pytestmark = [pytest.mark.slow, pytest.mark.usefixtures("one_thread")]


def test_onnxruntime_predictor_matches_the_eager_model(tmp_path):
    # Mask threshold 0.2: this barely trained model's mask probabilities stay below 0.4, and
    # empty masks would agree whatever the predictor did to them.
    model = tiny_model("MODEL.CENTERMASK_PR.MASK_THRESHOLD", "0.2")
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
    for got, want in zip(predictor(inputs), expected):
        # Float rounding may flip a peak scoring at SCORE_THRESH_TEST or a box of zero width, and
        # reorder near-equal scores of this barely trained model.
        assert len(want["instances"]) > 10
        non_empty = matched_detections(got["instances"], want["instances"])
        assert non_empty >= 0.9 * len(want["instances"])


def test_export_model_tool_writes_and_checks_the_centermask_pr_graph(tmp_path, capsys):
    from centermask.cli import export_model

    run_cli(
        export_model,
        ["--config-file", str(SYNTHETIC), "--synthetic-weights", "--output", str(tmp_path)]
        + ["--height", "64", "--width", "64", "--check", *TINY],
    )
    assert (tmp_path / "centermask_pr_dense.onnx").is_file()
    assert "check passed" in capsys.readouterr().out


# The FCOS detector.


@pytest.fixture(scope="module")
def fcos_model():
    return trained_fcos_model()


@pytest.fixture(scope="module")
def fcos_export(fcos_model, tmp_path_factory):
    folder = tmp_path_factory.mktemp("centermask_pr_fcos_onnx")
    export_centermask_pr_onnx(fcos_model, folder, height=64, width=64)
    return folder


def fcos_inputs():
    # Another size and batch than the export sample, and the training images.
    inputs = [{"image": torch.rand(3, 64, 96) * 255, "height": 80, "width": 120}]
    return inputs + [{"image": x["image"]} for x in fixed_batch()]


def test_fcos_detector_onnxruntime_predictor_matches_the_eager_model(fcos_model, fcos_export):
    predictor = OnnxCenterMaskPRPredictor(fcos_model, fcos_export, threads=1)
    assert predictor.metadata["detector"] == "fcos"
    inputs = fcos_inputs()
    with torch.no_grad():
        expected = fcos_model(inputs)
        images = fcos_model.preprocess_image(inputs).tensor
        reference = DenseCenterMaskPR(fcos_model)(images)
    assert predictor.output_names[-1] == "saliency"
    assert "shape_features_p3" in predictor.output_names
    for name, ours, theirs in zip(predictor.output_names, predictor.dense(images), reference):
        torch.testing.assert_close(ours, theirs, atol=1e-4, rtol=1e-4, msg=name)
    non_empty = 0
    for got, want in zip(predictor(inputs), expected):
        assert len(want["instances"]) > 0
        non_empty += matched_detections(got["instances"], want["instances"])
    assert non_empty > 0


def test_an_export_of_the_other_detector_is_refused_naming_both(fcos_model, fcos_export, tmp_path):
    heatmap_model = tiny_model().eval()
    export_centermask_pr_onnx(heatmap_model, tmp_path, height=64, width=64)
    with pytest.raises(ValueError, match="'heatmap' detector, but this model has the 'fcos'"):
        OnnxCenterMaskPRPredictor(fcos_model, tmp_path)
    with pytest.raises(ValueError, match="'fcos' detector, but this model has the 'heatmap'"):
        OnnxCenterMaskPRPredictor(heatmap_model, fcos_export)


def test_metadata_without_a_detector_describes_a_heatmap_export(fcos_model, tmp_path):
    heatmap_model = tiny_model().eval()
    paths = export_centermask_pr_onnx(heatmap_model, tmp_path, height=64, width=64)
    metadata = json.loads(paths["metadata"].read_text())
    del metadata["detector"]
    paths["metadata"].write_text(json.dumps(metadata))
    assert OnnxCenterMaskPRPredictor(heatmap_model, tmp_path).metadata == metadata
    with pytest.raises(ValueError, match="'heatmap' detector, but this model has the 'fcos'"):
        OnnxCenterMaskPRPredictor(fcos_model, tmp_path)


def test_fcos_detector_int8_export_is_quantized_and_runs_in_the_predictor(fcos_model, tmp_path):
    from centermask.export.api import build_onnx_predictor
    from centermask.export.int8 import Int8Settings, export_int8_onnx

    calibration = [[{"image": x["image"]}] for x in fixed_batch()]
    paths = export_int8_onnx(
        fcos_model, tmp_path, calibration, Int8Settings(), height=64, width=64, num_batches=3
    )
    check_qdq_int8_graph(paths["centermask_pr_dense.onnx"])
    predictor = build_onnx_predictor(fcos_model, tmp_path)
    assert isinstance(predictor, OnnxCenterMaskPRPredictor)
    instances = predictor([{"image": torch.rand(3, 64, 96) * 255, "height": 80, "width": 120}])
    instances = instances[0]["instances"]
    assert instances.image_size == (80, 120) and len(instances) > 0
    assert instances.pred_masks.shape == (len(instances), 80, 120)
    assert instances.pred_masks.dtype == torch.bool
    assert int(instances.pred_classes.max()) < fcos_model.detector.fcos.num_classes


def test_evaluate_int8_tool_runs_on_the_fcos_detector(fcos_model, synthetic_datasets, tmp_path):
    weights = tmp_path / "model.pth"
    torch.save({"model": fcos_model.state_dict()}, weights)
    report = run_cli(
        load_tool("deploy/evaluate_int8"),
        ["--config-file", str(SYNTHETIC_FCOS), "--weights", str(weights),
         "--eval-dataset", "synthetic_val", "--calib-dataset", "synthetic_train",
         "--calib-images", "2", "--output-dir", str(tmp_path / "eval"),
         *TINY, *FCOS, *FCOS_TEST]
    )  # fmt: skip
    ap = report["ap"]
    assert list(ap) == ["PyTorch float32", "onnxruntime float32", "onnxruntime int8"]
    assert all(v == v for row in ap.values() for v in row.values())  # no NaN: there were detections
    for key in ("bbox/AP", "segm/AP"):
        assert ap["onnxruntime float32"][key] == pytest.approx(ap["PyTorch float32"][key], abs=0.5)
