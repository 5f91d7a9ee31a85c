"""centermask quickstart (tools/quickstart.py) end to end, shortened: data, training, COCO AP,
pictures, summary."""

import json
import os
import re
import subprocess
import sys

import pytest
import torch

from centermask.cli import quickstart
from tests.support.helpers import ROOT, run_cli


@pytest.mark.slow
def test_quickstart_generates_trains_evaluates_and_summarises(tmp_path, capsys):
    threads = torch.get_num_threads()
    out = tmp_path / "out"
    try:
        summary = run_cli(quickstart, 
            ["--data-dir", str(tmp_path / "synthetic"), "--output-dir", str(out),
             "--num-train", "6", "--num-val", "3", "--num-vis", "2", "--threads", "1",
             "SOLVER.MAX_ITER", "3", "SOLVER.IMS_PER_BATCH", "2", "SOLVER.WARMUP_ITERS", "1",
             "MODEL.FCOS.INFERENCE_TH_TEST", "0.0"]
        )  # fmt: skip
    finally:
        torch.set_num_threads(threads)
    assert (tmp_path / "synthetic" / "annotations" / "instances_val.json").is_file()
    assert summary["iterations"] == 3
    assert 0 <= summary["mask_AP"] <= 100 and 0 <= summary["box_AP"] <= 100
    assert json.loads((out / "summary.json").read_text())["mask_AP"] == summary["mask_AP"]
    assert (out / "model_final.pth").is_file() and (out / "loss_curve.png").is_file()
    assert len(list((out / "predictions").glob("*.png"))) == 2
    printed = capsys.readouterr().out
    assert "mask AP" in printed and "box AP" in printed and "iterations" in printed


def test_training_gets_the_budget_left_after_set_up_less_the_end_reserve():
    opts = quickstart.time_budget_opts(15, spent_seconds=42.0, opts=["OUTPUT_DIR", "x"])
    assert opts[0] == "SOLVER.TIME_BUDGET_MINUTES"
    # 900 s less 2% (18 s), 10 s for pictures and summary, 42 s spent: 830 s.
    assert float(opts[1]) * 60 == pytest.approx(830.0)


def test_no_time_budget_when_disabled_or_iterations_are_fixed():
    assert quickstart.time_budget_opts(0, 5.0, []) == []
    assert quickstart.time_budget_opts(15, 5.0, ["SOLVER.MAX_ITER", "3"]) == []
    with pytest.raises(ValueError, match="--budget-minutes 0.1 leaves no time"):
        quickstart.time_budget_opts(0.1, 5.0, [])


@pytest.mark.slow
def test_two_training_processes_share_one_time_budget_and_summarise(tmp_path):
    """Data parallel across two gloo processes under a wall-clock budget: both train, the first
    reports, the summary holds the AP of the trained model."""
    out = tmp_path / "out"
    cmd = [sys.executable, str(ROOT / "tools" / "quickstart.py"), "--processes", "2",
           "--data-dir", str(tmp_path / "synthetic"), "--output-dir", str(out),
           "--num-train", "6", "--num-val", "3", "--num-vis", "1", "--budget-minutes", "0.75",
           "SOLVER.IMS_PER_BATCH", "2", "MODEL.FCOS.INFERENCE_TH_TEST", "0.0"]  # fmt: skip
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    summary = json.loads((out / "summary.json").read_text())
    assert summary["processes"] == 2 and summary["iterations"] >= 1
    assert 0 <= summary["mask_AP"] <= 100 and summary["training_seconds"] > 0
    assert (out / "log.txt.rank1").is_file() and (out / "model_final.pth").is_file()
    assert "2 process(es) x 1" in proc.stdout
    # One budget: both processes log the same minutes, within --budget-minutes, and training
    # (timed by the first) stayed inside them.
    budgets = [
        re.findall(r"([0-9.]+) minutes for training and evaluation", (out / log).read_text())
        for log in ("log.txt", "log.txt.rank1")
    ]
    assert len(budgets[0]) == 1 and budgets[0] == budgets[1], budgets
    minutes = float(budgets[0][0])
    assert 0 < minutes <= 0.75
    assert summary["training_seconds"] <= 60 * minutes
