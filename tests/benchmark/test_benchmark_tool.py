"""centermask benchmark (tools/analysis/benchmark.py): runs every mode and reports stages, ratios,
memory and versions (no timing assertions); the packaged synthetic weights equal the parity
specification."""

import json

import pytest
import torch
from detectron2.modeling import build_model

from centermask.benchmark.inference import parse_modes
from centermask.benchmark.stage_timer import StageTimer
from centermask.cli import benchmark
from centermask.utils.synthetic_weights import synthetic_state_dict
from tests.support.helpers import (
    CONFIGS,
    ROOT,
    build_synthetic_model,
    get_config,
    parity_keys,
    run_cli,
    synth_state_dict,
)
from tests.support.timing import timed_with_a_fake_clock

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
    expected = {"total", "preprocess", "backbone", "fpn", "fcos_head", "fcos_decode_nms"}
    expected |= {"roi_pool_mask_head", "maskiou", "postprocess_paste", "other"}
    assert set(stages) == expected
    # Time spent in the FPN's top block (P6/P7) lands in "fpn" and nowhere else.
    with torch.no_grad():
        stages = timed_with_a_fake_clock(timer, model.backbone.top_block, lambda: model(inputs))
    timer.remove()
    assert stages["fpn"] >= 1000 and stages["total"] >= 1000
    assert all(v < 1000 for k, v in stages.items() if k not in ("fpn", "total")), stages


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
    for batch in ("1", "2"):
        eager_ms = modes["eager"]["batches"][batch]["total"]["median_ms"]
        for entry in modes.values():
            data = entry["batches"][batch]
            ratio = eager_ms / data["total"]["median_ms"]
            assert data["speedup_vs_eager"] == pytest.approx(ratio)


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


@pytest.mark.parametrize(
    "config, fcos_modules",
    [
        ("centermask_pr_fcos_lite_V_19_slim_dw_eSE_synthetic.yaml", ["detector.fcos"]),
        ("centermask_pr_lite_V_19_slim_dw_eSE_synthetic.yaml", []),
    ],
    ids=["fcos-detector", "heatmap-detector"],
)
def test_straightforward_baseline_runs_its_own_targets_for_centermask_pr(
    config, fcos_modules, monkeypatch
):
    """The straightforward mode computes FCOS targets in its Python loop (counted), with the
    losses of the default mode; a model without FCOS trains with the frozen norms unfolded."""
    from centermask.benchmark import training
    from tests.support.centermask_pr import TINY

    calls = []
    original = training._straightforward_targets
    monkeypatch.setattr(
        training,
        "_straightforward_targets",
        lambda *args: calls.append(1) or original(*args),
    )
    cfg = get_config(ROOT / "configs" / "quickstart" / config, *TINY)
    cfg.defrost()
    cfg.INPUT.MIN_SIZE_TRAIN, cfg.INPUT.MAX_SIZE_TRAIN = (96,), 128
    torch.manual_seed(0)
    model = build_model(cfg)
    results = training.benchmark_training(
        model, cfg, batch_size=2, iterations=1, warmup=0, num_objects=3, log=lambda _: None
    )
    assert results["straightforward_fcos_modules"] == fcos_modules
    assert len(calls) == len(fcos_modules)  # one training step per FCOS module
    assert set(results["first_batch_losses"]["straightforward"]) >= {"loss_mask"}
    assert results["first_batch_max_rel_loss_diff"] < 1e-4


def test_tf32_is_on_by_default_on_cuda_and_said_in_the_report(tmp_path, monkeypatch):
    """On this CPU the report says TF32 is unused; the CUDA flags follow --no-tf32 (restored)."""
    from centermask.benchmark import precision

    flags = torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32
    try:
        for extra, expected in (([], True), (["--no-tf32"], False)):
            output = tmp_path / "bench.json"
            args = ["--config-file", LITE_CONFIG, "--threads", "1", "--modes", "eager"]
            args += ["--iterations", "1", "--warmup", "0", "--height", "64", "--width", "80"]
            run_cli(benchmark, args + extra + ["--output", str(output), *SMALL])
            assert json.loads(output.read_text())["environment"]["tf32"] is False
            assert torch.backends.cuda.matmul.allow_tf32 is expected
            assert torch.backends.cudnn.allow_tf32 is expected
        # A GPU with TF32: the report says it is on unless --no-tf32.
        monkeypatch.setattr(precision, "tf32_supported", lambda device: True)
        assert precision.set_tf32(torch.device("cpu"), True) is True
        assert precision.set_tf32(torch.device("cpu"), False) is False
    finally:
        torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = flags
