"""tools/quickstart.py end to end, shortened: data, training, COCO AP, pictures, summary."""

import json

import pytest
import torch

from helpers import load_tool


@pytest.mark.slow
def test_quickstart_generates_trains_evaluates_and_summarises(tmp_path, capsys):
    threads = torch.get_num_threads()
    out = tmp_path / "out"
    try:
        summary = load_tool("quickstart").main(
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


def test_time_budget_rescales_iterations_steps_and_checkpoints():
    quickstart = load_tool("quickstart")
    cfg = quickstart.build_config(
        quickstart.argparse.Namespace(config_file=str(quickstart.DEFAULT_CONFIG), opts=[])
    )
    max_iter, steps = cfg.SOLVER.MAX_ITER, cfg.SOLVER.STEPS
    quickstart.rescale_schedule(cfg, max_iter // 2)
    assert cfg.SOLVER.MAX_ITER == max_iter // 2
    assert cfg.SOLVER.STEPS == tuple(round(s / 2) for s in steps)
    assert cfg.SOLVER.STEPS[-1] < cfg.SOLVER.MAX_ITER
