"""centermask benchmark (tools/analysis/benchmark.py): runs every mode and reports stages, ratios,
memory and versions (no timing assertions); the packaged synthetic weights equal the parity
specification."""

import json

import pytest
import torch

from centermask.benchmark.inference import parse_modes
from centermask.benchmark.stage_timer import StageTimer
from centermask.cli import benchmark
from centermask.utils.synthetic_weights import synthetic_state_dict
from tests.support.helpers import (
    CONFIGS,
    build_synthetic_model,
    parity_keys,
    run_cli,
    synth_state_dict,
)

LITE_CONFIG = str(CONFIGS / "centermask_lite_V_19_slim_dw_eSE_FPN_ms_4x.yaml")
SMALL = ["INPUT.MIN_SIZE_TEST", "128", "INPUT.MAX_SIZE_TEST", "160"]


@pytest.mark.parametrize("name", ["A_centermask_lite_V_19_slim_dw_eSE_FPN_ms_4x"])
def test_packaged_synthetic_weights_equal_the_parity_specification(name):
    keys = parity_keys(name)
    ours, spec = synthetic_state_dict(keys), synth_state_dict(keys)
    assert all(torch.equal(ours[k], spec[k]) for k in keys)


def test_mode_parsing_and_errors():
    modes = parse_modes(
        "eager,optimized:fuse=false+postprocess_threads=2,onnx:mask_heads=0,onnx-int8:method=entropy"
    )
    assert [m.kind for m in modes] == ["eager", "optimized", "onnx", "onnx-int8"]
    assert modes[3].options == {"method": "entropy"}
    assert modes[1].options == {"fuse": False, "postprocess_threads": 2}
    assert modes[2].options == {"mask_heads": 0}
    with pytest.raises(ValueError, match="unknown mode"):
        parse_modes("eager,fast")
    with pytest.raises(ValueError, match="key=value"):
        parse_modes("optimized:fuse")


def test_stage_timer_covers_the_eager_model():
    model, _ = build_synthetic_model("A_centermask_lite_V_19_slim_dw_eSE_FPN_ms_4x")
    timer = StageTimer(model)
    inputs = [{"image": torch.rand(3, 64, 96) * 255, "height": 64, "width": 96}]
    with torch.no_grad():
        stages = timer.run(lambda: model(inputs))
    timer.remove()
    expected = {"total", "preprocess", "backbone", "fpn", "fcos_head", "fcos_decode_nms"}
    expected |= {"roi_pool_mask_head", "maskiou", "postprocess_paste", "other"}
    assert set(stages) == expected
    assert sum(v for k, v in stages.items() if k != "total") == pytest.approx(stages["total"])


@pytest.mark.slow
def test_inference_benchmark_reports_every_mode_and_batch(tmp_path):
    output = tmp_path / "bench.json"
    mode_list = "eager,optimized,onnx,onnx-int8:calib_images=2,torchscript"
    args = ["--config-file", LITE_CONFIG, "--threads", "2", "--modes", mode_list]
    args += ["--iterations", "1", "--warmup", "0", "--batch-sizes", "1,2", "--height", "64"]
    args += ["--width", "80", "--output", str(output), *SMALL]
    run_cli(benchmark, args)
    report = json.loads(output.read_text())
    assert report["environment"]["torch_threads"] == 2 and report["environment"]["torch"]
    modes = report["inference"]["modes"]
    assert list(modes) == ["eager", "optimized", "onnx", "onnx-int8:calib_images=2", "torchscript"]
    for name, entry in modes.items():
        for batch in ("1", "2"):
            data = entry["batches"][batch]
            assert data["total"]["median_ms"] > 0 and data["images_per_s"] > 0
            assert data["input_hw"] == [[128, 160]]
            assert data["memory"]["peak_rss_mb"] > 0
            assert "postprocess_paste" in data["stages"]
    assert "backbone" in modes["optimized"]["batches"]["1"]["stages"]
    assert "dense" in modes["onnx"]["batches"]["1"]["stages"]
    assert "int8" in modes["onnx-int8:calib_images=2"]["note"]
    assert "dense" in modes["onnx-int8:calib_images=2"]["batches"]["1"]["stages"]
    assert "dense" in modes["torchscript"]["batches"]["1"]["stages"]
    assert modes["eager"]["batches"]["1"]["speedup_vs_eager"] == 1.0


@pytest.mark.slow
def test_training_benchmark_splits_iterations_and_checks_loss_agreement(tmp_path):
    output = tmp_path / "train.json"
    args = ["--config-file", LITE_CONFIG, "--threads", "2", "--train", "--train-batch", "1"]
    args += ["--iterations", "1", "--warmup", "0", "--output", str(output)]
    args += ["INPUT.MIN_SIZE_TRAIN", "(128,)", "INPUT.MAX_SIZE_TRAIN", "160", *SMALL]
    run_cli(benchmark, args)
    training = json.loads(output.read_text())["training"]
    for mode in ("default", "channels-last", "straightforward"):
        parts = training["modes"][mode]
        assert set(parts) == {"data", "forward", "backward", "optimizer", "total"}
        assert parts["total"] >= parts["forward"] > 0
    # the straightforward and channels-last losses are the same losses
    assert training["first_batch_max_rel_loss_diff"] < 1e-4


def test_training_benchmark_records_use_the_configs_classes():
    from centermask.benchmark.training import synthetic_training_record

    record = synthetic_training_record(0, 64, 96, num_objects=20, num_classes=3)
    classes = {a["category_id"] for a in record["annotations"]}
    assert len(record["annotations"]) == 20 and classes <= {0, 1, 2} and len(classes) > 1
