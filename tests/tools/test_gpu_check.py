"""tools/gpu_check.py --device cpu: every part runs, the table and the JSON say what passed and
what was skipped for want of CUDA, and a failing check makes the exit status non-zero."""

import json

import pytest

from centermask.diagnostics import device_checks
from centermask.diagnostics.results import FAIL, PASS, SKIP
from tests.support.helpers import load_tool

pytestmark = pytest.mark.usefixtures("one_thread")

gpu_check = load_tool("gpu_check")

# Tiny counts: the reduced form's code paths, not its statistics.
FAST = ["--device", "cpu", "--train-iterations", "2", "--ddp-iterations", "1"]
FAST += ["--latency-iterations", "1", "--latency-warmup", "0", "--parity-size", "64"]


@pytest.fixture(scope="module")
def report(tmp_path_factory):
    output = tmp_path_factory.mktemp("gpu_check") / "gpu_check.json"
    status = gpu_check.main(FAST + ["--output", str(output)])
    return status, json.loads(output.read_text())


def test_cpu_form_runs_all_five_parts_and_passes(report):
    status, data = report
    assert status == 0 and data["ok"] and data["failed"] == []
    checks = data["checks"]
    assert {c["part"] for c in checks} == {1, 2, 3, 4, 5}
    names = [c["name"] for c in checks]
    for expected in ("deform_conv2d on cpu", "roi_align on cpu", "nms on cpu"):
        assert expected in names
    passed = {c["name"] for c in checks if c["status"] == PASS}
    assert sum(n.startswith("parity cpu vs cpu") for n in passed) == 3  # Lite, both PR detectors
    assert sum(n.startswith("AMP training") for n in passed) == 3
    assert sum(n.startswith("all parameters get gradients") for n in passed) == 3
    assert "DDP: 2 gloo processes on one cpu" in passed
    ddp = next(c for c in checks if c["name"].startswith("DDP"))
    assert [r["rank"] for r in ddp["data"]["ranks"]] == [0, 1]
    latency = [c for c in checks if c["part"] == 5]
    assert latency and all(c["data"]["median_ms"] > 0 for c in latency)


def test_what_needs_cuda_is_skipped_and_said(report):
    _, data = report
    skipped = {c["name"]: c["detail"] for c in data["checks"] if c["status"] == SKIP}
    assert skipped["NCCL all-reduce (1 process)"] == "needs CUDA"
    fp16 = [detail for name, detail in skipped.items() if name.startswith("fp16 vs fp32")]
    assert len(fp16) == 3 and all(d == "fp16 needs CUDA" for d in fp16)
    assert data["environment"]["device"] == "cpu" and data["options"]["train_iterations"] == 2


def test_a_failing_check_fails_the_run(tmp_path, monkeypatch, capsys):
    # nms that keeps one box too many on the device: the ops check must catch it.
    real_nms = device_checks.nms

    def wrong_on_the_device(boxes, scores, threshold):
        kept = real_nms(boxes, scores, threshold)
        return kept[:-1] if boxes.dtype == device_checks.torch.float32 else kept  # not float64

    monkeypatch.setattr(device_checks, "nms", wrong_on_the_device)
    output = tmp_path / "gpu_check.json"
    assert gpu_check.main(FAST + ["--parts", "1", "--output", str(output)]) == 1
    data = json.loads(output.read_text())
    assert data["ok"] is False and data["failed"] == ["nms on cpu"]
    assert next(c for c in data["checks"] if c["name"] == "nms on cpu")["status"] == FAIL
    assert "1 failed" in capsys.readouterr().out
